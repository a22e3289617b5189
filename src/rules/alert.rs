//! Host-owned alert state: which keys are firing, per rule.
//!
//! Rules are stateless and level-triggered: they report a condition every round it
//! holds. This module turns that into what users want, one `alert` when a condition
//! starts and one `recovery` when it ends, never repeated per poll. It also applies a
//! rule's `for` duration: a condition must be reported continuously that long before
//! it fires. State is keyed by rule name, so it survives a hot swap of the rule.
//!
//! The state is bounded: a rule has at most `max_firing` keys firing or pending. A
//! rule that invents new keys every round fills its own allowance and no more; the
//! conditions it reports past that are counted, not tracked, and its status says so.
//! Keys, subjects and messages arrive already cut to their limits (`output`).
//!
//! Every transition is also returned as a [`Changes`] for the durable store, and the
//! state is restored from it at start, so a restart neither re-fires an active alert
//! nor forgets one (a condition that ended while monserv was down recovers).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use super::sandbox::wit;
use crate::model::{AlertKind, AlertMessage};
use crate::store::alerts::{unix_now, Changes, Firing};

#[derive(Debug, Default)]
pub struct AlertState {
    rules: HashMap<String, RuleAlerts>,
}

/// What one evaluation changed.
#[derive(Debug, Default)]
pub struct Applied {
    pub messages: Vec<AlertMessage>,
    /// New conditions not tracked because the rule was at `max_firing`.
    pub over_cap: u64,
    /// The transitions, for the durable store.
    pub changes: Changes,
}

/// What is kept of a firing alert.
#[derive(Debug, Clone)]
struct Fired {
    subject: String,
    message: String,
    /// Unix seconds.
    since: u64,
}

#[derive(Debug, Default)]
struct RuleAlerts {
    /// Firing keys, with what they fired with.
    firing: BTreeMap<String, Fired>,
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

    /// Apply one evaluation's events; returns the protocol messages to send and how
    /// many new conditions were over the rule's `max_firing`.
    pub fn apply(
        &mut self,
        rule: &str,
        events: Vec<wit::Event>,
        hold_for: Duration,
        now: Instant,
        max_firing: usize,
    ) -> Applied {
        let state = self.rules.entry(rule.to_string()).or_default();
        let mut out = Applied::default();
        let mut reported = std::collections::HashSet::new();
        for e in events {
            match e.kind {
                wit::EventKind::Alert => {
                    if state.firing.contains_key(&e.key) {
                        continue;
                    }
                    if !state.pending.contains_key(&e.key) && state.firing.len() + state.pending.len() >= max_firing {
                        out.over_cap += 1;
                        continue;
                    }
                    reported.insert(e.key.clone());
                    let since = *state.pending.entry(e.key.clone()).or_insert(now);
                    if now.duration_since(since) >= hold_for {
                        state.pending.remove(&e.key);
                        let fired = Fired { subject: e.subject.clone(), message: e.message.clone(), since: unix_now() };
                        out.changes.fired.push(Firing {
                            rule: rule.to_string(),
                            key: e.key.clone(),
                            subject: fired.subject.clone(),
                            message: fired.message.clone(),
                            since: fired.since,
                        });
                        state.firing.insert(e.key, fired);
                        out.messages.push(AlertMessage::new(AlertKind::Alert, e.subject, e.message));
                    }
                }
                wit::EventKind::Recovery => {
                    state.pending.remove(&e.key);
                    if state.firing.remove(&e.key).is_some() {
                        out.changes.recovered.push((rule.to_string(), e.key, e.subject.clone(), e.message.clone()));
                        out.messages.push(AlertMessage::new(AlertKind::Recovery, e.subject, e.message));
                    }
                }
            }
        }
        // A pending condition that was not reported again did not hold for `for`.
        state.pending.retain(|k, _| reported.contains(k));
        out
    }

    /// Keys firing or pending for `rule` (what counts against `max_firing`).
    pub fn tracked_count(&self, rule: &str) -> usize {
        self.rules.get(rule).map_or(0, |r| r.firing.len() + r.pending.len())
    }

    /// Drop a removed rule's state.
    ///
    /// Returns the (key, subject) of each alert it had firing, which the caller closes.
    pub fn forget(&mut self, rule: &str) -> Vec<(String, String)> {
        self.rules.remove(rule).map(|r| r.firing.into_iter().map(|(k, f)| (k, f.subject)).collect()).unwrap_or_default()
    }

    /// Rules with any state.
    pub fn rule_names(&self) -> Vec<String> {
        self.rules.keys().cloned().collect()
    }

    /// Put back an alert that was firing when monserv stopped.
    pub fn restore(&mut self, f: Firing) {
        let fired = Fired { subject: f.subject, message: f.message, since: f.since };
        self.rules.entry(f.rule).or_default().firing.insert(f.key, fired);
    }

    /// Every firing alert, oldest first.
    pub fn active(&self) -> Vec<Firing> {
        let mut out: Vec<Firing> = self
            .rules
            .iter()
            .flat_map(|(rule, r)| {
                r.firing.iter().map(move |(key, f)| Firing {
                    rule: rule.clone(),
                    key: key.clone(),
                    subject: f.subject.clone(),
                    message: f.message.clone(),
                    since: f.since,
                })
            })
            .collect();
        out.sort_by(|a, b| a.since.cmp(&b.since).then_with(|| a.rule.cmp(&b.rule)).then_with(|| a.key.cmp(&b.key)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: wit::EventKind, key: &str) -> wit::Event {
        wit::Event { kind, key: key.into(), subject: format!("{kind:?} {key}"), message: "m".into() }
    }
    use wit::EventKind::{Alert, Recovery};
    const CAP: usize = 10_000;

    #[test]
    fn a_key_inventing_rule_stays_within_its_allowance() {
        let mut s = AlertState::default();
        let t = Instant::now();
        for round in 0..50 {
            let events = (0..1000).map(|i| ev(Alert, &format!("k{round}-{i}"))).collect();
            let applied = s.apply("inventor", events, Duration::ZERO, t, 5000);
            let expected_over = if round < 5 { 0 } else { 1000 };
            assert_eq!(applied.over_cap, expected_over, "round {round}");
        }
        assert_eq!((s.firing_count("inventor"), s.tracked_count("inventor")), (5000, 5000));
        // Pending keys (with a `for`) count too, and a recovery makes room again.
        let held =
            s.apply("held", (0..20).map(|i| ev(Alert, &format!("p{i}"))).collect(), Duration::from_secs(9), t, 10);
        assert_eq!((held.over_cap, s.tracked_count("held")), (10, 10));
        s.apply("inventor", vec![ev(Recovery, "k0-0")], Duration::ZERO, t, 5000);
        let again = s.apply("inventor", vec![ev(Alert, "new"), ev(Alert, "newer")], Duration::ZERO, t, 5000);
        assert_eq!((again.messages.len(), again.over_cap), (1, 1));
        // Other rules are unaffected by one rule's cap.
        assert_eq!(s.apply("other", vec![ev(Alert, "x")], Duration::ZERO, t, 5000).messages.len(), 1);
    }

    #[test]
    fn alert_once_recover_once() {
        let mut s = AlertState::default();
        let t = Instant::now();
        let m = s.apply("r", vec![ev(Alert, "h/mem")], Duration::ZERO, t, CAP).messages;
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].alert_type, AlertKind::Alert);
        assert!(
            s.apply("r", vec![ev(Alert, "h/mem")], Duration::ZERO, t, CAP).messages.is_empty(),
            "no repeat while firing"
        );
        assert_eq!(s.active_keys("r"), vec!["h/mem".to_string()]);
        // A recovery for a key that is not firing is dropped.
        assert!(s.apply("r", vec![ev(Recovery, "h/cpu")], Duration::ZERO, t, CAP).messages.is_empty());
        let m = s.apply("r", vec![ev(Recovery, "h/mem")], Duration::ZERO, t, CAP).messages;
        assert_eq!((m.len(), m[0].alert_type), (1, AlertKind::Recovery));
        assert!(s.apply("r", vec![ev(Recovery, "h/mem")], Duration::ZERO, t, CAP).messages.is_empty(), "no repeat");
        // Rules do not share keys.
        s.apply("r", vec![ev(Alert, "k")], Duration::ZERO, t, CAP);
        assert!(s.active_keys("other").is_empty());
    }

    #[test]
    fn restored_alerts_are_not_fired_again_and_can_recover() {
        let mut s = AlertState::default();
        let t = Instant::now();
        s.restore(Firing { rule: "r".into(), key: "h/mem".into(), subject: "S".into(), message: "M".into(), since: 7 });
        assert_eq!(s.active_keys("r"), vec!["h/mem".to_string()]);
        let still = s.apply("r", vec![ev(Alert, "h/mem")], Duration::ZERO, t, CAP);
        assert!(still.messages.is_empty() && still.changes.is_empty(), "re-fired after a restart");
        assert_eq!(s.active()[0].since, 7);
        let ended = s.apply("r", vec![ev(Recovery, "h/mem")], Duration::ZERO, t, CAP);
        assert_eq!(ended.messages.len(), 1);
        assert_eq!(ended.changes.recovered[0].1, "h/mem");
        assert!(s.active().is_empty());
    }

    #[test]
    fn for_duration_needs_a_continuous_condition() {
        let mut s = AlertState::default();
        let t0 = Instant::now();
        let hold = Duration::from_secs(30);
        assert!(s.apply("r", vec![ev(Alert, "k")], hold, t0, CAP).messages.is_empty());
        assert!(s.apply("r", vec![ev(Alert, "k")], hold, t0 + Duration::from_secs(20), CAP).messages.is_empty());
        // The condition lapses for one round: the clock starts again.
        assert!(s.apply("r", vec![], hold, t0 + Duration::from_secs(25), CAP).messages.is_empty());
        assert!(s.apply("r", vec![ev(Alert, "k")], hold, t0 + Duration::from_secs(40), CAP).messages.is_empty());
        assert!(s.apply("r", vec![ev(Alert, "k")], hold, t0 + Duration::from_secs(60), CAP).messages.is_empty());
        assert_eq!(s.apply("r", vec![ev(Alert, "k")], hold, t0 + Duration::from_secs(70), CAP).messages.len(), 1);
        assert_eq!(s.firing_count("r"), 1);
        s.forget("r");
        assert_eq!(s.firing_count("r"), 0);
    }
}
