//! `monserv rule test RULE --cases TESTS.toml`: a rule's unit tests, in the spirit
//! of `promtool test rules`. A test file is a sequence of steps, each a snapshot
//! (hosts in a short form, or a captured snapshot file) and the alerts and
//! recoveries users should get after it. The steps run through the rule in the
//! sandbox and through the daemon's own alert state (alert once, recover once, the
//! `for` hold), on a simulated clock, so what passes here is what the daemon sends.
//! A 0.3.0 rule's state is carried from step to step; its history queries and facts
//! find nothing here (replay a recorded history with `rule test --history`).
//!
//! ```toml
//! interval = "1m"                       # time between steps (default 4s)
//! [settings]                            # optional, over the rule's own
//! memory_percent = 80
//!
//! [[step]]
//! hosts.web1 = { memory = 95, disk = { "/" = 85 } }
//! expect = []                           # nothing yet: `for = "2m"` holds it
//!
//! [[step]]
//! repeat = 2                            # the same inputs two more rounds
//! expect = ["alert web1/when"]
//!
//! [[step]]
//! hosts.web1 = { memory = 40, disk = { "/" = 85 } }
//! expect = [{ recovery = "web1/when", subject = "[RECOVERED] web1: ..." }]
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::alert::AlertState;
use super::cli::{load, parse_snapshot, read_text};
use super::loader::parse_duration;
use super::sandbox::wit;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    interval: Option<toml::Value>,
    #[serde(default)]
    settings: toml::Table,
    #[serde(default)]
    step: Vec<Step>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    hosts: Option<BTreeMap<String, Host>>,
    snapshot: Option<String>,
    #[serde(default)]
    repeat: u32,
    #[serde(default)]
    expect: Vec<Expect>,
}

/// A host in short form: what a rule usually looks at, the rest defaulted.
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Host {
    hostname: Option<String>,
    #[serde(default = "yes")]
    online: bool,
    /// Memory used, percent of `memory_total` (default 8 GiB).
    memory: Option<f64>,
    memory_total: Option<u64>,
    cpu: Option<f64>,
    cores: Option<u32>,
    uptime: Option<u64>,
    /// Mountpoint -> used percent (of 100 GiB).
    #[serde(default)]
    disk: BTreeMap<String, f64>,
    /// Process name -> percent of RAM.
    #[serde(default)]
    processes: BTreeMap<String, f64>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Expect {
    /// `"alert KEY"` or `"recovery KEY"`.
    Short(String),
    Full {
        alert: Option<String>,
        recovery: Option<String>,
        subject: Option<String>,
        message: Option<String>,
    },
}

/// A transition as users get it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Seen {
    kind: &'static str,
    key: String,
    subject: String,
    message: String,
}

const GIB: u64 = 1 << 30;
/// Most rounds one step may repeat (a day of 4 s rounds).
const MAX_REPEAT: u32 = 21_600;

fn metrics(h: &Host, key: &str) -> wit::Metrics {
    let total = h.memory_total.unwrap_or(8 * GIB);
    let mem = h.memory.unwrap_or(0.0).clamp(0.0, 100.0);
    let used = (total as f64 * mem / 100.0) as u64;
    wit::Metrics {
        hostname: h.hostname.clone().unwrap_or_else(|| key.to_string()),
        uptime_seconds: h.uptime.unwrap_or(86_400),
        memory: wit::Memory { total, used, free: total - used, used_percent: mem },
        disks: h
            .disk
            .iter()
            .map(|(mount, pct)| {
                let (total, pct) = (100 * GIB, pct.clamp(0.0, 100.0));
                let used = (total as f64 * pct / 100.0) as u64;
                wit::Disk {
                    device: format!("/dev/test{}", mount.replace('/', "_")),
                    mountpoint: mount.clone(),
                    fstype: "ext4".into(),
                    total,
                    used,
                    free: total - used,
                    used_percent: pct,
                }
            })
            .collect(),
        top_procs_by_mem: by_memory(&h.processes)
            .into_iter()
            .enumerate()
            .map(|(i, (name, pct))| wit::Process {
                pid: 1000 + i as u32,
                name: name.clone(),
                username: "root".into(),
                rss_bytes: (total as f64 * pct / 100.0) as u64,
                percent_ram: *pct,
                cmdline: name.clone(),
            })
            .collect(),
        cpu: wit::Cpu { cores: h.cores.unwrap_or(4), used_percent: h.cpu.unwrap_or(0.0), model_name: "test".into() },
        generated_at_utc: String::new(),
    }
}

/// Processes largest first, as the collectors list them (rules may rely on it).
fn by_memory(processes: &BTreeMap<String, f64>) -> Vec<(&String, &f64)> {
    let mut list: Vec<_> = processes.iter().collect();
    list.sort_by(|a, b| b.1.total_cmp(a.1));
    list
}

/// Run the test file; returns the report, and whether every step passed.
pub fn run(rule: &Path, settings_file: Option<&Path>, cases: &Path) -> Result<(String, bool), String> {
    let shown = cases.display().to_string();
    let text = read_text(cases)?;
    let file: TestFile = toml::from_str(&text).map_err(|e| format!("{shown}: {}", e.to_string().trim()))?;
    let interval = match &file.interval {
        None => Duration::from_secs(4),
        Some(toml::Value::String(s)) => parse_duration(s).map_err(|e| format!("{shown}: interval: {e}"))?,
        Some(toml::Value::Integer(i)) => Duration::from_secs((*i).clamp(0, 86_400) as u64),
        Some(other) => return Err(format!("{shown}: interval = {other}: write \"1m\" or seconds")),
    };
    if file.step.is_empty() {
        return Err(format!("{shown}: no [[step]]"));
    }
    let set: Vec<(String, String)> = file
        .settings
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string)))
        .collect();
    let loaded = load(rule, settings_file, &set)?;
    let ctx = loaded.ctx();
    let hold_for = loaded.settings.hold_for;
    let dir = cases.parent().unwrap_or(Path::new("."));

    let mut alerts = AlertState::default();
    let mut state = super::memory::RuleState::default();
    let start = Instant::now();
    let (mut round, mut elapsed) = (0u64, Duration::ZERO);
    let mut failures_in_a_row: HashMap<String, u32> = HashMap::new();
    let mut inputs: Option<Inputs> = None;
    let mut out = String::new();
    let mut passed = true;
    for (n, step) in file.step.iter().enumerate() {
        let n = n + 1;
        inputs = match (&step.hosts, &step.snapshot) {
            (Some(_), Some(_)) => return Err(format!("{shown}: step {n}: hosts or snapshot, not both")),
            (Some(hosts), None) => Some(Inputs::Hosts(hosts.clone())),
            (None, Some(file)) => {
                let path = dir.join(file);
                let text = read_text(&path)?;
                Some(Inputs::Snapshot(parse_snapshot(&text).map_err(|e| format!("{}: {e}", path.display()))?))
            }
            (None, None) => inputs,
        };
        if step.repeat > MAX_REPEAT {
            return Err(format!("{shown}: step {n}: repeat = {} (at most {MAX_REPEAT})", step.repeat));
        }
        let Some(current) = &inputs else {
            return Err(format!("{shown}: step {n}: no hosts (or snapshot) yet"));
        };
        let mut seen = BTreeSet::new();
        for _ in 0..=step.repeat {
            round += 1;
            let snap = current.snapshot(round, elapsed, &mut failures_in_a_row);
            let active = alerts.active_keys(&loaded.name);
            // The rule's state is carried from step to step, as the daemon does.
            let (result, after) =
                loaded.sandbox.evaluate_with(&loaded.compiled, &ctx, &snap, &active, Default::default(), state.clone());
            let events = result.map_err(|e| format!("step {n}: rule {}: {e}", loaded.name))?;
            state = after;
            let targets = snap.targets.iter().map(|t| t.key.as_str()).collect();
            let (events, _) = super::output::sanitize(events, &targets, &loaded.sandbox.limits);
            let applied = alerts.apply(&loaded.name, events, hold_for, start + elapsed, usize::MAX);
            for f in applied.changes.fired {
                seen.insert(Seen { kind: "alert", key: f.key, subject: f.subject, message: f.message });
            }
            for (_, key, subject, message) in applied.changes.recovered {
                seen.insert(Seen { kind: "recovery", key, subject, message });
            }
            elapsed += interval;
        }
        let at = elapsed - interval;
        match compare(&step.expect, &seen) {
            Ok(()) => out.push_str(&format!("step {n} (t={}): ok{}\n", secs(at), list(&seen, "  "))),
            Err(why) => {
                passed = false;
                out.push_str(&format!("step {n} (t={}): FAILED: {why}\n  got:{}\n", secs(at), list(&seen, "    ")));
            }
        }
    }
    out.push_str(if passed { "PASS\n" } else { "FAIL\n" });
    Ok((out, passed))
}

fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

fn list(seen: &BTreeSet<Seen>, indent: &str) -> String {
    if seen.is_empty() {
        return " (nothing)".into();
    }
    seen.iter().map(|s| format!("\n{indent}{} {}  {}  {}", s.kind, s.key, s.subject, s.message)).collect()
}

/// Every expectation met by a distinct transition, and no transition unexpected.
fn compare(expect: &[Expect], seen: &BTreeSet<Seen>) -> Result<(), String> {
    let mut left: Vec<&Seen> = seen.iter().collect();
    for e in expect {
        let (kind, key, subject, message) = match e {
            Expect::Short(s) => match s.split_once(' ') {
                Some(("alert", key)) => ("alert", key.trim(), None, None),
                Some(("recovery", key)) => ("recovery", key.trim(), None, None),
                _ => return Err(format!("expectation {s:?}: write \"alert KEY\" or \"recovery KEY\"")),
            },
            Expect::Full { alert: Some(k), recovery: None, subject, message } => {
                ("alert", k.as_str(), subject.as_ref(), message.as_ref())
            }
            Expect::Full { alert: None, recovery: Some(k), subject, message } => {
                ("recovery", k.as_str(), subject.as_ref(), message.as_ref())
            }
            Expect::Full { .. } => return Err("an expectation has one of alert = KEY or recovery = KEY".into()),
        };
        let found = left.iter().position(|s| {
            s.kind == kind
                && s.key == key
                && subject.is_none_or(|x| *x == s.subject)
                && message.is_none_or(|x| *x == s.message)
        });
        match found {
            Some(i) => {
                left.remove(i);
            }
            None => {
                let with = [subject.map(|s| format!("subject {s:?}")), message.map(|m| format!("message {m:?}"))]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(format!("expected {kind} {key}{}{with}", if with.is_empty() { "" } else { " with " }));
            }
        }
    }
    match left.first() {
        None => Ok(()),
        Some(s) => Err(format!("unexpected {} {} ({} not listed in expect)", s.kind, s.key, left.len())),
    }
}

enum Inputs {
    Hosts(BTreeMap<String, Host>),
    Snapshot(wit::Snapshot),
}

impl Inputs {
    fn snapshot(&self, round: u64, elapsed: Duration, failures: &mut HashMap<String, u32>) -> wit::Snapshot {
        let unix_time = 1_700_000_000 + elapsed.as_secs();
        let targets = match self {
            Inputs::Snapshot(s) => s.targets.clone(),
            Inputs::Hosts(hosts) => hosts
                .iter()
                .map(|(key, h)| {
                    // An offline host's failures count up round by round, as in the daemon.
                    let streak = failures.entry(key.clone()).or_default();
                    *streak = if h.online { 0 } else { *streak + 1 };
                    wit::Target {
                        key: key.clone(),
                        hostname: h.hostname.clone().unwrap_or_else(|| key.clone()),
                        status: if h.online { wit::Reachability::Online } else { wit::Reachability::Offline },
                        consecutive_failures: *streak,
                        last_error_kind: (!h.online).then(|| "connect".to_string()),
                        metrics: Some(metrics(h, key)),
                    }
                })
                .collect(),
        };
        wit::Snapshot { round, unix_time, targets }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_hosts_become_metrics_as_collectors_report_them() {
        let h: Host = toml::from_str(
            "memory = 25\ndisk = { \"/\" = 50 }\nprocesses = { aaa = 1.5, zzz = 30, mmm = 7 }\nuptime = 60\n",
        )
        .unwrap();
        let m = metrics(&h, "web1");
        assert_eq!((m.hostname.as_str(), m.uptime_seconds), ("web1", 60));
        assert_eq!((m.memory.total, m.memory.used, m.memory.used_percent), (8 * GIB, 2 * GIB, 25.0));
        assert_eq!((m.disks[0].mountpoint.as_str(), m.disks[0].free), ("/", 50 * GIB));
        let names: Vec<&str> = m.top_procs_by_mem.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["zzz", "mmm", "aaa"], "largest first");
        // Out-of-range input is clamped, never a panic or an underflow.
        let h: Host = toml::from_str("memory = 250.0\ndisk = { \"/\" = -5 }\nmemory_total = 0\n").unwrap();
        let m = metrics(&h, "x");
        assert_eq!((m.memory.used_percent, m.memory.free, m.disks[0].used), (100.0, 0, 0));
        assert!(toml::from_str::<Host>("memroy = 5").is_err(), "unknown fields are refused");
    }
}
