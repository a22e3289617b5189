//! `monserv rule check` and `monserv rule test --snapshot`: the authoring loop.
//!
//! Both run the rule in the same sandbox, with the same settings checks, as the
//! daemon. `test` takes a snapshot as JSON: `monserv rule snapshot`'s output, a
//! captured `GET /api/state` (or a whole `metrics_update` message, or the Go
//! MonServ's), and prints the events the rule returns for it. Test files with steps
//! and expected alerts are `cases`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::engine::{check_settings, trial_error, RuleSettings};
use super::loader::{read_settings, MAX_SETTINGS_BYTES};
use super::sandbox::{wit, Compiled, Limits, RuleCtx, Sandbox};
use crate::model::{HostStatus, ServerMetrics};

/// A rule as the CLI runs it: the component, its settings and the sandbox.
pub struct Loaded {
    pub sandbox: Sandbox,
    pub compiled: Compiled,
    pub name: String,
    pub settings: RuleSettings,
    pub expression: bool,
}

/// Load RULE (a component, or an expression rule's `.toml`) with its settings
/// (`--settings`, then `--set`), and check them the way the daemon does before a rule
/// goes live: declared keys only; for an expression rule also a trial evaluation on
/// an empty snapshot, which reports condition errors with their line and column (a
/// component's trial is `rule test` on real data, as the daemon waits for a round).
pub fn load(rule: &Path, settings_file: Option<&Path>, set: &[(String, String)]) -> Result<Loaded, String> {
    let shown = rule.display();
    let name = rule.file_stem().and_then(|s| s.to_str()).unwrap_or("rule").to_string();
    let read_settings = |path: &Path| read_settings(path, HashMap::new()).map_err(|e| e.to_string());
    let expression = rule.extension().is_some_and(|e| e == "toml")
        && crate::store::read_regular(rule, MAX_SETTINGS_BYTES)
            .is_ok_and(|b| super::expression::mentions_condition(&String::from_utf8_lossy(&b)));
    let (bytes, mut settings) = if expression {
        if settings_file.is_some() {
            return Err(format!("{shown}: an expression rule is its own settings file; drop --settings"));
        }
        let settings = read_settings(rule)?;
        if !super::expression::has_condition(&settings.values) {
            return Err(format!(
                "{shown}: no `when` condition, so not an expression rule (a rule's settings go with --settings)"
            ));
        }
        (super::expression::component().to_vec(), settings)
    } else {
        let bytes =
            crate::store::read_regular(rule, super::validate::MAX.file_bytes).map_err(|e| format!("{shown}: {e}"))?;
        (bytes, settings_file.map(read_settings).transpose()?.unwrap_or_default())
    };
    for (k, v) in set {
        if k == "for" || k == "for_seconds" {
            settings.hold_for = super::loader::parse_duration(v).map_err(|why| format!("--set {k}={v}: {why}"))?;
            continue;
        }
        // `--set 'names=["a", "b"]'` is a list, as in the settings file.
        let array = format!("v = {v}").parse::<toml::Table>().ok().and_then(|mut t| match t.remove("v") {
            Some(toml::Value::Array(items)) => Some(items),
            _ => None,
        });
        match array {
            Some(items) => {
                let text = super::settings::to_list_text(&items).map_err(|why| format!("--set {k}: {why}"))?;
                settings.values.insert(k.clone(), text);
                settings.lists.insert(k.clone());
            }
            None => {
                settings.values.insert(k.clone(), v.clone());
                settings.lists.remove(k);
            }
        }
    }
    let sandbox = Sandbox::new(Limits::default())?;
    let mut compiled = sandbox.compile(&bytes).map_err(|e| format!("{shown}: {e}"))?;
    check_settings(&name, &compiled.info, &settings).map_err(|e| e.to_string())?;
    // What it needs may depend on its settings, as in the daemon.
    compiled.info = sandbox
        .describe_with(&compiled, &RuleCtx::new(&name, Arc::new(settings.values.clone())))
        .map_err(|e| format!("{shown}: {e}"))?;
    if !expression {
        return Ok(Loaded { sandbox, compiled, name, settings, expression });
    }
    let ctx = RuleCtx::new(&name, Arc::new(settings.values.clone()));
    let empty = wit::Snapshot { round: 0, unix_time: 0, targets: vec![] };
    sandbox.evaluate(&compiled, &ctx, &empty, &[]).map_err(|e| match trial_error(e, settings.file.as_ref()) {
        // Already names the settings file, line and column.
        super::engine::InstallError::Settings(located) => located,
        other => format!("{shown}: {other}"),
    })?;
    Ok(Loaded { sandbox, compiled, name, settings, expression })
}

impl Loaded {
    /// The context the daemon would give it: name, settings, declared facts.
    pub fn ctx(&self) -> RuleCtx {
        RuleCtx {
            needs: self.compiled.info.needs.clone().into(),
            ..RuleCtx::new(&self.name, Arc::new(self.settings.values.clone()))
        }
    }
}

/// `rule test RULE --history FILE`: every alert and recovery the rule would have
/// produced on a recorded history (`GET /api/v1/history`).
pub fn backtest(
    rule: &Path,
    settings_file: Option<&Path>,
    history: &Path,
    set: &[(String, String)],
) -> Result<String, String> {
    let bytes =
        crate::store::read_regular(history, MAX_HISTORY_BYTES).map_err(|e| format!("{}: {e}", history.display()))?;
    let export = crate::history::Export::parse(&bytes).map_err(|e| format!("{}: {e}", history.display()))?;
    let l = load(rule, settings_file, set)?;
    let window = std::time::Duration::from_secs(export.window_seconds.max(60));
    let outcome = super::backtest::run(&l.sandbox, &l.compiled, &l.ctx(), l.settings.hold_for, &export, window);
    Ok(super::backtest::render(&outcome))
}

/// Largest history file read (an hour of 1000 hosts is about 150 MB).
const MAX_HISTORY_BYTES: usize = 512 << 20;

/// Validate the contract and the settings; describe the rule and its settings.
pub fn check(rule: &Path, settings_file: Option<&Path>, set: &[(String, String)]) -> Result<String, String> {
    let l = load(rule, settings_file, set)?;
    let info = &l.compiled.info;
    let what = if l.expression { " (an expression rule)" } else { "" };
    let mut out = format!(
        "{}: OK, rule {} (component {:?} version {}, contract {}){what}\n",
        rule.display(),
        l.name,
        info.name,
        info.version,
        info.contract.as_str()
    );
    let mut rows: Vec<[String; 4]> = info
        .config
        .iter()
        .map(|k| [k.name.clone(), k.kind.to_string(), k.default_value.clone(), k.help.clone()])
        .collect();
    rows.push([
        "for".into(),
        "a duration".into(),
        "0s".into(),
        "host: report a condition this long before it fires (90s, 2m, 1h)".into(),
    ]);
    out.push_str(&table(["setting", "accepts", "default", "meaning"], &rows));
    if !info.needs.is_empty() {
        let needs: Vec<String> = info.needs.iter().map(ToString::to_string).collect();
        out.push_str(&format!("needs (fetched from every host while loaded): {}\n", needs.join(", ")));
    }
    if !l.settings.values.is_empty() || !l.settings.hold_for.is_zero() {
        out.push_str("in use:\n");
        let mut values: Vec<_> = l.settings.values.iter().collect();
        values.sort();
        for (k, v) in values {
            if l.settings.lists.contains(k) {
                out.push_str(&format!("  {k} = {:?}\n", super::settings::list_items(v)));
            } else {
                out.push_str(&format!("  {k} = {v:?}\n"));
            }
        }
        if !l.settings.hold_for.is_zero() {
            out.push_str(&format!("  for = {:?}\n", l.settings.hold_for));
        }
    }
    Ok(out)
}

/// Left-aligned columns (each at most 40 wide unless longer), the last one free.
fn table<const N: usize>(head: [&str; N], rows: &[[String; N]]) -> String {
    let width =
        |col: usize| rows.iter().map(|r| r[col].chars().count()).chain([head[col].len()]).max().unwrap_or(0).min(40);
    let widths: Vec<usize> = (0..N).map(width).collect();
    let mut out = String::new();
    let head = head.map(str::to_string);
    for r in std::iter::once(&head).chain(rows) {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Largest snapshot or test file read (a 1000-host snapshot is about 2 MB).
const MAX_INPUT_BYTES: usize = 64 << 20;

/// An input file as text: regular files only (a FIFO is refused, never waited on), capped.
pub(crate) fn read_text(path: &Path) -> Result<String, String> {
    let bytes = crate::store::read_regular(path, MAX_INPUT_BYTES).map_err(|e| format!("{}: {e}", path.display()))?;
    String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8", path.display()))
}

/// A snapshot file: `{key: ServerMetrics}` or `{"type":"metrics_update","data":{...}}`.
pub fn parse_snapshot(text: &str) -> Result<wit::Snapshot, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("snapshot is not JSON: {e}"))?;
    let data = match value.get("type").and_then(|t| t.as_str()) {
        Some("metrics_update") => value.get("data").cloned().ok_or("metrics_update without data")?,
        _ => value,
    };
    let map: serde_json::Map<String, serde_json::Value> = match data {
        serde_json::Value::Object(m) => m,
        _ => return Err("snapshot must be an object of target -> metrics".into()),
    };
    let mut targets = Vec::new();
    for (key, v) in map {
        let m: ServerMetrics = serde_json::from_value(v).map_err(|e| format!("target {key:?}: {e}"))?;
        let offline = m.status == HostStatus::Offline;
        targets.push(wit::Target {
            key,
            hostname: m.hostname.clone(),
            status: if offline { wit::Reachability::Offline } else { wit::Reachability::Online },
            consecutive_failures: u32::from(offline),
            last_error_kind: None,
            metrics: Some(super::convert::metrics(&m)),
        });
    }
    Ok(wit::Snapshot { round: 1, unix_time: 0, targets })
}

/// Run the rule once on a snapshot file; returns the printed events.
pub fn test(
    rule: &Path,
    settings_file: Option<&Path>,
    snapshot: &Path,
    active: &[String],
    set: &[(String, String)],
) -> Result<String, String> {
    let text = read_text(snapshot)?;
    let snap = parse_snapshot(&text).map_err(|e| format!("{}: {e}", snapshot.display()))?;
    let loaded = load(rule, settings_file, set)?;
    let ctx = loaded.ctx();
    let Loaded { sandbox, compiled: c, name, .. } = loaded;
    let events = sandbox.evaluate(&c, &ctx, &snap, active).map_err(|e| format!("rule {name}: {e}"))?;
    // The same per-event and per-target limits the daemon applies.
    let targets = snap.targets.iter().map(|t| t.key.as_str()).collect();
    let (events, trimmed) = super::output::sanitize(events, &targets, &sandbox.limits);
    let mut out = String::new();
    for e in &events {
        let kind = match e.kind {
            wit::EventKind::Alert => "alert",
            wit::EventKind::Recovery => "recovery",
        };
        out.push_str(&format!("{kind:<8} {}  {}  {}\n", e.key, e.subject, e.message));
    }
    out.push_str(&format!("{} events from {} targets\n", events.len(), snap.targets.len()));
    if trimmed.dropped + trimmed.truncated > 0 {
        out.push_str(&format!(
            "limits: {} events dropped, {} shortened (at most {} events per target)\n",
            trimmed.dropped, trimmed.truncated, sandbox.limits.max_events_per_target
        ));
    }
    Ok(out)
}
