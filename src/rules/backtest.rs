//! Backtesting: a rule tried on a recorded history before it goes live.
//!
//! The history export is replayed round by round through the same path a live
//! round takes: the round is recorded into a fresh history (so the rule's history
//! queries see exactly what they saw live at that moment), converted once, evaluated
//! in the sandbox with the rule's state carried from round to round, trimmed by the
//! output limits, and applied to an `AlertState` on a clock driven by the recorded
//! times, so `for`, alert-once and recover-once behave as in the daemon. What comes
//! out is every alert and recovery the rule would have produced, with its time.
//! Used by `monserv rule test RULE --history FILE` and by
//! `POST /api/v1/rules/NAME/backtest` (on the daemon's own history).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::alert::AlertState;
use super::memory::{RoundData, RuleState};
use super::sandbox::{Compiled, RuleCtx, Sandbox};
use crate::history::{Export, History, Sizing};

/// One transition the rule would have produced.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Transition {
    /// The round's time, seconds since the epoch, and as RFC 3339.
    pub unix_time: u64,
    pub time: String,
    /// `alert` or `recovery`.
    pub kind: &'static str,
    pub key: String,
    pub subject: String,
    pub message: String,
}

/// What a backtest found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub rule: String,
    pub rounds: usize,
    pub from: Option<String>,
    pub to: Option<String>,
    pub alerts: usize,
    pub recoveries: usize,
    /// Still firing at the end of the history.
    pub firing_at_end: usize,
    pub transitions: Vec<Transition>,
    /// Rounds the rule failed on (time, reason), at most 20 listed.
    pub failures: usize,
    pub failure_samples: Vec<(String, String)>,
}

fn rfc3339(t: u64) -> String {
    crate::model::rfc3339_utc(std::time::UNIX_EPOCH + Duration::from_secs(t))
}

/// Replay `export` through the rule. CPU-bound: call from a blocking thread.
/// `window` is the history window the rule's queries had live.
pub fn run(
    sandbox: &Sandbox,
    compiled: &Compiled,
    ctx: &RuleCtx,
    hold_for: Duration,
    export: &Export,
    window: Duration,
) -> Outcome {
    let rounds = export.replay();
    let history = Arc::new(History::new(Sizing { window, interval: Duration::from_millis(export.step_ms.max(1)) }));
    let mut alerts = AlertState::default();
    let mut state = RuleState::default();
    let start = Instant::now();
    let t0 = rounds.first().map_or(0, |r| r.unix_ms);
    let mut out = Outcome {
        rule: ctx.name.to_string(),
        rounds: rounds.len(),
        from: rounds.first().map(|r| rfc3339(r.unix_ms / 1000)),
        to: rounds.last().map(|r| rfc3339(r.unix_ms / 1000)),
        alerts: 0,
        recoveries: 0,
        firing_at_end: 0,
        transitions: Vec::new(),
        failures: 0,
        failure_samples: Vec::new(),
    };
    for snapshot in &rounds {
        history.record(snapshot);
        let snap = super::convert::snapshot(snapshot);
        let round = Arc::new(RoundData::of(snapshot, Some(history.clone())));
        let active = alerts.active_keys(&ctx.name);
        let (result, after) = sandbox.evaluate_with(compiled, ctx, &snap, &active, round, state.clone());
        let events = match result {
            Ok(events) => {
                state = after;
                events
            }
            Err(e) => {
                out.failures += 1;
                if out.failure_samples.len() < 20 {
                    out.failure_samples.push((rfc3339(snapshot.unix_ms / 1000), e.to_string()));
                }
                continue;
            }
        };
        let targets = snap.targets.iter().map(|t| t.key.as_str()).collect();
        let (events, _) = super::output::sanitize(events, &targets, &sandbox.limits);
        let now = start + Duration::from_millis(snapshot.unix_ms.saturating_sub(t0));
        let applied = alerts.apply(&ctx.name, events, hold_for, now, sandbox.limits.max_firing);
        let at = |kind, key: String, subject: String, message: String| Transition {
            unix_time: snapshot.unix_ms / 1000,
            time: rfc3339(snapshot.unix_ms / 1000),
            kind,
            key,
            subject,
            message,
        };
        for f in applied.changes.fired {
            out.alerts += 1;
            out.transitions.push(at("alert", f.key, f.subject, f.message));
        }
        for (_, key, subject, message) in applied.changes.recovered {
            out.recoveries += 1;
            out.transitions.push(at("recovery", key, subject, message));
        }
    }
    out.firing_at_end = alerts.firing_count(&ctx.name);
    out
}

/// The outcome as `rule test --history` prints it.
pub fn render(o: &Outcome) -> String {
    let mut s = String::new();
    for t in &o.transitions {
        s.push_str(&format!("{}  {:<8}  {}  {}  {}\n", t.time, t.kind, t.key, t.subject, t.message));
    }
    for (time, why) in &o.failure_samples {
        s.push_str(&format!("{time}  failed    {why}\n"));
    }
    let span = match (&o.from, &o.to) {
        (Some(from), Some(to)) => format!(" from {from} to {to}"),
        _ => String::new(),
    };
    s.push_str(&format!(
        "{} alerts, {} recoveries over {} rounds{span}; {} firing at the end; {} failed rounds\n",
        o.alerts, o.recoveries, o.rounds, o.firing_at_end, o.failures
    ));
    s
}

#[cfg(test)]
#[path = "backtest_tests.rs"]
mod tests;
