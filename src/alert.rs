//! Host-owned alert state: which keys are firing, per rule.
//!
//! Rules are stateless and level-triggered: they report a condition every round it
//! holds. This module turns that into what users want, one `alert` when a condition
//! starts and one `recovery` when it ends, never repeated per poll. It also applies a
//! rule's `for` duration: a condition must be reported continuously that long before
//! it fires. State is keyed by rule name, so it survives a hot swap of the rule.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::model::{AlertKind, AlertMessage};
use crate::rules::sandbox::wit;

#[derive(Debug, Default)]
pub struct AlertState {
    rules: HashMap<String, RuleAlerts>,
}

#[derive(Debug, Default)]
struct RuleAlerts {
    /// Firing keys and the subject they fired with.
    firing: BTreeMap<String, String>,
    /// Keys reported but not yet firing because of `for`: first seen at.
    pending: HashMap<String, Instant>,
}

impl AlertState {
    /// Keys firing for `rule`, as passed to its next evaluation.
    pub fn active_keys(&self, rule: &str) -> Vec<String> {
        self.rules.get(rule).map(|r| r.firing.keys().cloned().collect()).unwrap_or_default()
    }

    pub fn firing_count(&self, rule: &str) -> usize {
        self.rules.get(rule).map_or(0, |r| r.firing.len())
    }

    /// Apply one evaluation's events; returns the protocol messages to send.
    pub fn apply(
        &mut self,
        rule: &str,
        events: Vec<wit::Event>,
        hold_for: Duration,
        now: Instant,
    ) -> Vec<AlertMessage> {
        let state = self.rules.entry(rule.to_string()).or_default();
        let mut out = Vec::new();
        let mut reported = std::collections::HashSet::new();
        for e in events {
            match e.kind {
                wit::EventKind::Alert => {
                    reported.insert(e.key.clone());
                    if state.firing.contains_key(&e.key) {
                        continue;
                    }
                    let since = *state.pending.entry(e.key.clone()).or_insert(now);
                    if now.duration_since(since) >= hold_for {
                        state.pending.remove(&e.key);
                        state.firing.insert(e.key, e.subject.clone());
                        out.push(AlertMessage::new(AlertKind::Alert, e.subject, e.message));
                    }
                }
                wit::EventKind::Recovery => {
                    state.pending.remove(&e.key);
                    if state.firing.remove(&e.key).is_some() {
                        out.push(AlertMessage::new(AlertKind::Recovery, e.subject, e.message));
                    }
                }
            }
        }
        // A pending condition that was not reported again did not hold for `for`.
        state.pending.retain(|k, _| reported.contains(k));
        out
    }

    /// Drop a removed rule's state.
    pub fn forget(&mut self, rule: &str) {
        self.rules.remove(rule);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: wit::EventKind, key: &str) -> wit::Event {
        wit::Event { kind, key: key.into(), subject: format!("{kind:?} {key}"), message: "m".into() }
    }
    use wit::EventKind::{Alert, Recovery};

    #[test]
    fn alert_once_recover_once() {
        let mut s = AlertState::default();
        let t = Instant::now();
        let m = s.apply("r", vec![ev(Alert, "h/mem")], Duration::ZERO, t);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].alert_type, AlertKind::Alert);
        assert!(s.apply("r", vec![ev(Alert, "h/mem")], Duration::ZERO, t).is_empty(), "no repeat while firing");
        assert_eq!(s.active_keys("r"), vec!["h/mem".to_string()]);
        // A recovery for a key that is not firing is dropped.
        assert!(s.apply("r", vec![ev(Recovery, "h/cpu")], Duration::ZERO, t).is_empty());
        let m = s.apply("r", vec![ev(Recovery, "h/mem")], Duration::ZERO, t);
        assert_eq!((m.len(), m[0].alert_type), (1, AlertKind::Recovery));
        assert!(s.apply("r", vec![ev(Recovery, "h/mem")], Duration::ZERO, t).is_empty(), "no repeat");
        // Rules do not share keys.
        s.apply("r", vec![ev(Alert, "k")], Duration::ZERO, t);
        assert!(s.active_keys("other").is_empty());
    }

    #[test]
    fn for_duration_needs_a_continuous_condition() {
        let mut s = AlertState::default();
        let t0 = Instant::now();
        let hold = Duration::from_secs(30);
        assert!(s.apply("r", vec![ev(Alert, "k")], hold, t0).is_empty());
        assert!(s.apply("r", vec![ev(Alert, "k")], hold, t0 + Duration::from_secs(20)).is_empty());
        // The condition lapses for one round: the clock starts again.
        assert!(s.apply("r", vec![], hold, t0 + Duration::from_secs(25)).is_empty());
        assert!(s.apply("r", vec![ev(Alert, "k")], hold, t0 + Duration::from_secs(40)).is_empty());
        assert!(s.apply("r", vec![ev(Alert, "k")], hold, t0 + Duration::from_secs(60)).is_empty());
        assert_eq!(s.apply("r", vec![ev(Alert, "k")], hold, t0 + Duration::from_secs(70)).len(), 1);
        assert_eq!(s.firing_count("r"), 1);
        s.forget("r");
        assert_eq!(s.firing_count("r"), 0);
    }
}
