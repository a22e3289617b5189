//! No single host, rule, rules-directory file or outage can silence alerts for the
//! other hosts or stall the metrics cadence. Each test feeds the real daemon one
//! hostile input and checks that it costs only itself.
//!
//! Tests here that use only `local` (and loopback ports nobody listens on) run
//! without root.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::support::hosts::closed_ports;
use crate::support::{self, fixtures, BusyBoxHost, Sshd, TestDaemon, Ws};

const QUIET: &str = "disk_percent = 100\ncpu_percent = 100\nproc_ram_percent = 100\n";

fn rule<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("{name}: {status:#}"))
}

fn rejected(status: &Value, name: &str) -> Option<String> {
    status["rejected"].as_array().unwrap().iter().find(|r| r["name"] == name).map(|r| r["reason"].to_string())
}

/// Every message for `period`: (alerts, metrics frames as raw text).
async fn read_all(ws: &mut Ws, period: Duration) -> (Vec<Value>, Vec<String>) {
    let end = Instant::now() + period;
    let (mut alerts, mut metrics) = (Vec::new(), Vec::new());
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        let Ok(Some(Ok(msg))) = tokio::time::timeout(left, ws.next()).await else { break };
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["type"] == "alert" {
                alerts.push(v);
            } else {
                metrics.push(t.to_string());
            }
        }
    }
    (alerts, metrics)
}

/// Poll `GET /api/v1/rules` until `pred` holds (or panic after `limit`).
async fn wait_rules(d: &TestDaemon, limit: Duration, pred: impl Fn(&Value) -> bool) -> Value {
    wait_rules_with(d, None, limit, pred).await
}

async fn wait_rules_with(d: &TestDaemon, token: Option<&str>, limit: Duration, pred: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let s = d.rules(token).await;
        if pred(&s) {
            return s;
        }
        assert!(start.elapsed() < limit, "rules never reached the expected state: {s:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn vm_rss() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

fn has_control(text: &str) -> bool {
    text.chars().any(|c| c.is_control())
}

/// A real OpenSSH host that reports 1500 full disks (one at a 600-byte path, one
/// whose device and mount point carry terminal escapes) beside a BusyBox host and the
/// gateway itself: the crowded host's surplus is dropped and counted, its long key and
/// subject are shortened, its escapes never reach clients, and every host's alerts
/// still go out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_crowded_host_cannot_silence_the_others() {
    let sshd = Sshd::start();
    let bb = BusyBoxHost::start("bb-plc-08");
    let crowd = sshd.url_user(fixtures::CROWD_USER);
    let d = TestDaemon::start(
        &[crowd, bb.url(), "local".into()],
        "poll_interval_seconds = 0.5\n[thresholds]\nmemory_percent = 0.5\ndisk_percent = 90\ncpu_percent = 100\nproc_ram_percent = 100",
    )
    .await;
    let mut ws = d.connect().await;
    let crowd_key = format!("ssh://{}:***@127.0.0.1:{}", fixtures::CROWD_USER, sshd.port);
    let host = support::machine_hostname();
    // Read until every host's memory alert and the crowded host's disk alerts are in
    // (or 40 s), then 2 s more: nothing may be repeated in them.
    let (mut alerts, mut frames) = (Vec::new(), Vec::new());
    let start = Instant::now();
    let enough = |alerts: &[Value]| {
        let count =
            |pred: &dyn Fn(&str) -> bool| alerts.iter().filter(|a| pred(a["subject"].as_str().unwrap())).count();
        count(&|s| s.ends_with(" memory high")) >= 3 && count(&|s| s.contains(" disk /mnt/")) >= 990
    };
    while !enough(&alerts) && start.elapsed() < Duration::from_secs(40) {
        let (a, f) = read_all(&mut ws, Duration::from_secs(1)).await;
        alerts.extend(a);
        frames.extend(f);
    }
    let (a, f) = read_all(&mut ws, Duration::from_secs(2)).await;
    alerts.extend(a);
    frames.extend(f);
    let subjects: Vec<&str> = alerts.iter().map(|a| a["subject"].as_str().unwrap()).collect();
    // The other hosts were not silenced: the BusyBox host, and both this machine's
    // targets (local and the crowded host share its hostname).
    assert_eq!(subjects.iter().filter(|s| **s == "[ALERT] bb-plc-08 memory high").count(), 1, "{subjects:#?}");
    assert_eq!(subjects.iter().filter(|s| **s == format!("[ALERT] {host} memory high")).count(), 2);
    // The crowded host's own alerts: as many as its limit allows, once each.
    let full: Vec<&&str> = subjects.iter().filter(|s| s.contains(" disk /mnt/full")).collect();
    assert!(full.len() >= 990 && full.len() <= 1000, "{} full-disk alerts", full.len());
    assert_eq!(full.iter().collect::<HashSet<_>>().len(), full.len(), "an alert was repeated");
    let long = subjects.iter().find(|s| s.contains("/mnt/ppp")).expect("the long mount path alerts too");
    assert!(long.len() <= 512 && long.ends_with("..."), "{long}");
    let esc = subjects.iter().find(|s| s.contains("/mnt/esc")).expect("the escaped mount point alerts too");
    assert_eq!(*esc, format!("[ALERT] {host} disk /mnt/esc\u{fffd}]0;pwned\u{fffd} high"));
    for a in &alerts {
        let text = a["subject"].as_str().unwrap().to_string() + a["message"].as_str().unwrap();
        assert!(!has_control(&text), "control characters reached a client: {a}");
    }
    // The host's text is clean in the metrics too.
    let last: Value = serde_json::from_str(frames.last().unwrap()).unwrap();
    let disks = last["data"][&crowd_key]["disks"].as_array().unwrap();
    assert!(disks.len() >= 2 + fixtures::CROWD_DISKS, "{} disks", disks.len());
    let esc_disk = disks.iter().find(|d| d["mountpoint"].as_str().unwrap().starts_with("/mnt/esc")).unwrap();
    assert_eq!(esc_disk["device"], "/dev/esc\u{fffd}[2J");
    assert!(frames.iter().all(|f| !f.contains("\\u001b") && !f.contains("\\u0007")), "an escape reached /ws");
    // The rule is healthy, and says what it dropped and shortened.
    let status = d.rules(None).await;
    let t = rule(&status, "threshold");
    assert_eq!((t["status"].as_str(), t["failures"].as_u64()), (Some("ok"), Some(0)), "{t:#}");
    let rounds = t["evaluations"].as_u64().unwrap();
    assert!(t["events_dropped"].as_u64().unwrap() >= 500 * rounds, "{t:#}");
    assert!(t["events_truncated"].as_u64().unwrap() >= rounds, "{t:#}");
    // Nothing repeats while the conditions hold.
    let (again, _) = read_all(&mut ws, Duration::from_secs(2)).await;
    assert!(again.is_empty(), "{again:#?}");
    assert!(d.shutdown().await);
}

/// 1010 targets unreachable at once (more than a rule's old whole-output limit of
/// 1000 events): every one of them is reported unreachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plant_wide_outage_yields_every_unreachable_alert() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    // A round opens a socket per target.
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard.min(65_536), hard).unwrap();
    let ports = closed_ports(1010);
    assert_eq!(ports.len(), 1010);
    let targets: Vec<String> = ports.iter().map(|p| format!("ssh://plc:pw@127.0.0.1:{p}")).collect();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("threshold.toml"), format!("unreachable_polls = 2\nmemory_percent = 100\n{QUIET}"))
        .unwrap();
    let extra = format!(
        "poll_interval_seconds = 1\nreconnect_max_seconds = 1\nhost_timeout_seconds = 1\n[rules]\ntimeout_ms = 2000\ndir = {:?}",
        dir.path().display().to_string()
    );
    let d = TestDaemon::start(&targets, &extra).await;
    let mut ws = d.connect().await;
    let mut keys = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while keys.len() < targets.len() && Instant::now() < deadline {
        let (alerts, _) = read_all(&mut ws, Duration::from_secs(1)).await;
        for a in alerts {
            assert_eq!(a["subject"], "[ALERT] 127.0.0.1 unreachable");
            let key = a["message"].as_str().unwrap().split(' ').next().unwrap().to_string();
            assert!(keys.insert(key.clone()), "{key} alerted twice");
        }
    }
    assert_eq!(keys.len(), targets.len(), "every unreachable target is reported");
    let t = rule(&d.rules(None).await, "threshold").clone();
    assert_eq!(
        (t["status"].as_str(), t["failures"].as_u64(), t["events_dropped"].as_u64()),
        (Some("ok"), Some(0), Some(0)),
        "{t:#}"
    );
    assert_eq!(t["firing"].as_u64(), Some(targets.len() as u64));
    assert!(d.shutdown().await);
}

/// A rule that reports 1000 new keys every round fills its own `max_firing` and no
/// more: the status says so, and memory stays flat while it keeps trying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_inventing_rule_is_capped_and_memory_stays_flat() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("inventor.wasm"), support::dist("test/inventor.wasm")).unwrap();
    let extra = format!(
        "poll_interval_seconds = 0.1\n[rules]\nbuiltin = false\nmax_firing = 3000\ntimeout_ms = 2000\ndir = {:?}",
        dir.path().display().to_string()
    );
    let d = TestDaemon::start(&["local".into()], &extra).await;
    let capped =
        wait_rules(&d, Duration::from_secs(20), |s| rule(s, "inventor")["evaluations"].as_u64() >= Some(10)).await;
    let r = rule(&capped, "inventor");
    assert_eq!((r["status"].as_str(), r["firing"].as_u64()), (Some("firing_limit"), Some(3000)), "{r:#}");
    let rss_at_cap = vm_rss();
    let over_at_cap = r["over_firing_limit"].as_u64().unwrap();
    let later = wait_rules(&d, Duration::from_secs(60), |s| {
        rule(s, "inventor")["evaluations"].as_u64().unwrap() >= capped["rules"][0]["evaluations"].as_u64().unwrap() + 60
    })
    .await;
    let r = rule(&later, "inventor");
    assert_eq!((r["status"].as_str(), r["firing"].as_u64()), (Some("firing_limit"), Some(3000)), "{r:#}");
    assert!(r["over_firing_limit"].as_u64().unwrap() >= over_at_cap + 60_000, "{r:#}");
    let grown = vm_rss().saturating_sub(rss_at_cap);
    assert!(grown < 16 << 20, "RSS grew {} MiB over 60 capped rounds", grown >> 20);
    assert!(d.shutdown().await);
}

/// 30 rules that spin to their deadline every round: metrics_update keeps its
/// cadence, the built-in rule still alerts, and the rules over budget are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spinning_rules_never_delay_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let spin = support::dist("test/spin.wasm");
    for i in 0..30 {
        std::fs::write(dir.path().join(format!("spin-{i:02}.wasm")), &spin).unwrap();
    }
    std::fs::write(dir.path().join("threshold.toml"), format!("memory_percent = 0.5\n{QUIET}")).unwrap();
    let extra = format!(
        "poll_interval_seconds = 0.25\n[rules]\ntimeout_ms = 100\ndir = {:?}",
        dir.path().display().to_string()
    );
    let d = TestDaemon::start(&["local".into()], &extra).await;
    let mut ws = d.connect().await;
    let host = support::machine_hostname();
    let start = Instant::now();
    let (mut last, mut worst, mut frames, mut alerted) = (None::<Instant>, Duration::ZERO, 0, false);
    while start.elapsed() < Duration::from_secs(8) {
        let msg = support::next_json(&mut ws, Duration::from_secs(5)).await;
        match msg["type"].as_str() {
            Some("metrics_update") => {
                let now = Instant::now();
                if let Some(prev) = last {
                    worst = worst.max(now - prev);
                }
                last = Some(now);
                frames += 1;
            }
            Some("alert") => alerted |= msg["subject"] == format!("[ALERT] {host} memory high"),
            _ => {}
        }
    }
    // 0.25 s rounds; 30 rules x 100 ms held every round for 3 s or more before. The
    // margin is for a loaded CI machine.
    assert!(worst < Duration::from_millis(2500), "a metrics_update gap of {worst:?}");
    assert!(frames >= 16, "only {frames} metrics_update in 8 s at 0.25 s rounds");
    assert!(alerted, "the built-in rule still alerts");
    let status = d.rules(None).await;
    let skipped: u64 =
        status["rules"].as_array().unwrap().iter().map(|r| r["skipped_over_budget"].as_u64().unwrap()).sum();
    assert!(skipped > 0, "rules over the round budget are skipped and counted: {status:#}");
    assert_eq!(status["engine"]["round_budget_ms"], 250);
    assert!(d.shutdown().await);
}

/// FIFOs and device links in the rules directory, at start and at runtime: refused
/// with a reason, never waited on or read; metrics and shutdown carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_directory_fifos_and_devices_cannot_freeze_or_bloat() {
    use nix::sys::stat::Mode;
    let dir = tempfile::tempdir().unwrap();
    let fifo = |name: &str| nix::unistd::mkfifo(&dir.path().join(name), Mode::from_bits_truncate(0o644)).unwrap();
    fifo("x.wasm");
    fifo("threshold.toml");
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero.wasm")).unwrap();
    std::os::unix::fs::symlink("/dev/urandom", dir.path().join("rand.wasm")).unwrap();
    std::fs::write(dir.path().join("reboot.wasm"), support::dist("examples/reboot.wasm")).unwrap();
    let rss_before = vm_rss();
    let extra = format!("poll_interval_seconds = 0.2\n[rules]\ndir = {:?}", dir.path().display().to_string());
    let d = tokio::time::timeout(Duration::from_secs(20), TestDaemon::start(&["local".into()], &extra))
        .await
        .expect("the daemon froze on the rules directory at start");
    let mut ws = d.connect().await;
    support::wait_metrics(&mut ws, Duration::from_secs(10), |m| m["local"]["status"] == "online").await;
    let status = wait_rules(&d, Duration::from_secs(10), |s| rejected(s, "rand").is_some()).await;
    for (name, kind) in [("x", "FIFO"), ("zero", "character device"), ("rand", "character device")] {
        let reason = rejected(&status, name).unwrap_or_else(|| panic!("{name} not refused: {status:#}"));
        assert!(reason.contains(&format!("not a regular file (a {kind})")), "{name}: {reason}");
    }
    let reason = rejected(&status, "threshold").expect("threshold.toml refused");
    assert!(reason.contains("threshold.toml: not a regular file (a FIFO)"), "{reason}");
    // Other rules are unaffected.
    assert_eq!(rule(&status, "reboot")["status"], "ok");
    // At runtime too.
    fifo("y.wasm");
    wait_rules(&d, Duration::from_secs(10), |s| rejected(s, "y").is_some_and(|r| r.contains("FIFO"))).await;
    let before = support::wait_metrics(&mut ws, Duration::from_secs(5), |_| true).await;
    let after = support::wait_metrics(&mut ws, Duration::from_secs(5), |m| m["local"] != before["local"]).await;
    assert_eq!(after["local"]["status"], "online");
    let grown = vm_rss().saturating_sub(rss_before);
    assert!(grown < 64 << 20, "RSS grew {} MiB", grown >> 20);
    let started = Instant::now();
    assert!(d.shutdown().await, "shutdown did not finish");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// A core module whose one function nests `loops` loops around 1999 locals.
fn loop_bomb(loops: usize) -> Vec<u8> {
    let code: Vec<u8> = [[0x03u8, 0x40].repeat(loops), vec![0x0b; loops]].concat();
    monserv::rules::validate::craft::module_with_code(1999, &code)
}

/// Candidates built to make the compiler eat memory are refused before compiling,
/// over REST and from the directory, within a small memory cost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compile_bombs_are_refused_before_compiling() {
    let d = TestDaemon::start(&["local".into()], "poll_interval_seconds = 0.3\nauth_token = \"bomb-token-1\"").await;
    let auth = [("Authorization", "Bearer bomb-token-1")];
    let rss_before = vm_rss();
    // 15000 nested loops around 1999 locals: 45 KB, about 1.9 GB to compile.
    let bomb = monserv::rules::validate::craft::component_of(&loop_bomb(15_000));
    assert!(bomb.len() < 64 << 10);
    let started = Instant::now();
    let (status, body) = support::http_send(d.addr, "PUT", "/api/v1/rules/bomb", &auth, &bomb).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body.contains(
            "refused before compiling: one function's control constructs times its locals and params is 30000000"
        ),
        "{body}"
    );
    // Compiling it would take over a minute (BENCHMARKS.md); the walk takes milliseconds.
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    // Over the file limit: refused while reading the upload.
    let (status, body) = support::http_send(d.addr, "PUT", "/api/v1/rules/big", &auth, &vec![0u8; 1_400_000]).await;
    assert_eq!(status, 413, "{body}");
    // Dropped into the directory: refused the same way, with its reason listed.
    support::write_atomically(&d.rules_dir().join("dropped-bomb.wasm"), &bomb);
    let token = Some("bomb-token-1");
    let s = wait_rules_with(&d, token, Duration::from_secs(10), |s| rejected(s, "dropped-bomb").is_some()).await;
    assert!(rejected(&s, "dropped-bomb").unwrap().contains("refused before compiling"), "{s:#}");
    let grown = vm_rss().saturating_sub(rss_before);
    assert!(grown < 64 << 20, "RSS grew {} MiB", grown >> 20);
    assert_eq!(rule(&d.rules(token).await, "threshold")["status"], "ok");
    assert!(d.shutdown().await);
}
