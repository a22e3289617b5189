//! `monserv rule check` and `monserv rule test`: the authoring loop.
//!
//! Both run the rule in the same sandbox the daemon uses. `test` takes a snapshot as
//! JSON: a captured `GET /api/state` (or a whole `metrics_update` message, or the Go
//! MonServ's), and prints the events the rule returns for it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::sandbox::{wit, Compiled, Limits, RuleCtx, Sandbox};
use crate::model::{HostStatus, ServerMetrics};

fn load(path: &Path, limits: Limits) -> Result<(Sandbox, Compiled), String> {
    let bytes = crate::store::read_regular(path, super::validate::MAX.file_bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let sandbox = Sandbox::new(limits)?;
    let compiled = sandbox.compile(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((sandbox, compiled))
}

/// Validate the contract; returns a description of the rule.
pub fn check(path: &Path) -> Result<String, String> {
    let (_, c) = load(path, Limits::default())?;
    let mut out = format!("{}: OK, rule {:?} version {}\n", path.display(), c.info.name, c.info.version);
    for k in &c.info.config {
        out.push_str(&format!("  {} (default {}): {}\n", k.name, k.default_value, k.help));
    }
    Ok(out)
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
pub fn test(path: &Path, snapshot: &Path, active: &[String], settings: &[(String, String)]) -> Result<String, String> {
    let text = std::fs::read_to_string(snapshot).map_err(|e| format!("{}: {e}", snapshot.display()))?;
    let snap = parse_snapshot(&text).map_err(|e| format!("{}: {e}", snapshot.display()))?;
    let (sandbox, c) = load(path, Limits::default())?;
    let config: HashMap<String, String> = settings.iter().cloned().collect();
    let ctx = RuleCtx::new(&c.info.name, Arc::new(config));
    let events = sandbox.evaluate(&c, &ctx, &snap, active).map_err(|e| format!("rule {}: {e}", c.info.name))?;
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
