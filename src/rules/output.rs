//! What a rule's events may look like before they reach the alert state.
//!
//! Limits bind per event and per target, never per evaluation: one host with 1500
//! full disks, a 600-byte mount path or a plant-wide outage must not reject the
//! events of every other host (the built-in rule sees all targets in one
//! evaluation). So an oversized event is shortened, not refused; an empty key is
//! dropped; and past `max_events_per_target` only that target's surplus is dropped,
//! recoveries first kept so firing alerts can still close. Everything changed is
//! counted, for `GET /api/v1/rules` and a rate-limited log line.
//!
//! Text is also made safe here: control characters in keys and subjects (and in
//! messages, but for newlines and tabs) are escaped, so a rule cannot inject
//! terminal escapes into console clients or forge header lines in notifiers.

use std::collections::{HashMap, HashSet};

use super::sandbox::wit::{Event, EventKind};
use crate::config::RuleLimits;

/// What sanitizing changed in one evaluation's output.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OutputStats {
    /// Events dropped: empty key, or over a target's event limit.
    pub dropped: u64,
    /// Events kept with a shortened key, subject or message.
    pub truncated: u64,
}

/// Apply the per-event and per-target limits. `targets` are the snapshot's target
/// keys; an event belongs to the target whose key, followed by `/`, starts its key.
pub fn sanitize(events: Vec<Event>, targets: &HashSet<&str>, limits: &RuleLimits) -> (Vec<Event>, OutputStats) {
    let mut stats = OutputStats::default();
    // Per target: recoveries and alerts in the rule's order, recoveries first kept.
    let mut buckets: HashMap<Option<&str>, (usize, usize)> = HashMap::new();
    let mut kept: Vec<(Option<&str>, Event)> = Vec::with_capacity(events.len().min(4096));
    for e in events {
        if e.key.is_empty() {
            stats.dropped += 1;
            continue;
        }
        let target = owner(&e.key, targets);
        let (recoveries, alerts) = buckets.entry(target).or_default();
        match e.kind {
            EventKind::Recovery => *recoveries += 1,
            EventKind::Alert => *alerts += 1,
        }
        kept.push((target, e));
    }
    // Alerts allowed per target once its recoveries are counted.
    let mut alert_room: HashMap<Option<&str>, usize> =
        buckets.iter().map(|(t, (rec, _))| (*t, limits.max_events_per_target.saturating_sub(*rec))).collect();
    let mut recovery_room: HashMap<Option<&str>, usize> =
        buckets.keys().map(|t| (*t, limits.max_events_per_target)).collect();
    let mut out = Vec::with_capacity(kept.len());
    for (target, mut e) in kept {
        let room = match e.kind {
            EventKind::Recovery => recovery_room.get_mut(&target),
            EventKind::Alert => alert_room.get_mut(&target),
        };
        match room {
            Some(n) if *n > 0 => *n -= 1,
            _ => {
                stats.dropped += 1;
                continue;
            }
        }
        let mut changed = false;
        e.key = fit_key(e.key, limits.max_key_bytes, &mut changed);
        e.subject = fit_text(e.subject, limits.max_subject_bytes, false, &mut changed);
        e.message = fit_text(e.message, limits.max_message_bytes, true, &mut changed);
        stats.truncated += u64::from(changed);
        out.push(e);
    }
    (out, stats)
}

/// The target an event key belongs to: the longest target key that, followed by a
/// `/`, starts the event key.
fn owner<'a>(key: &str, targets: &HashSet<&'a str>) -> Option<&'a str> {
    let mut found = None;
    for (i, b) in key.bytes().enumerate() {
        if b == b'/' {
            if let Some(t) = targets.get(&key[..i]) {
                found = Some(*t);
            }
        }
    }
    found
}

/// A key made printable and at most `max` bytes. A long key keeps its start (so it
/// still names its target) and ends in a hash of the whole key, so it stays stable
/// across rounds and distinct from other long keys.
fn fit_key(key: String, max: usize, changed: &mut bool) -> String {
    let key = escape_controls(key, false, changed);
    if key.len() <= max {
        return key;
    }
    *changed = true;
    let hash = format!("#{:016x}", crate::model::fnv1a(key.as_bytes()));
    let keep = floor_char_boundary(&key, max.saturating_sub(hash.len()));
    format!("{}{hash}", &key[..keep])
}

/// Text made printable and cut to `max` bytes (ending in `...`). Shared by events,
/// rule log lines and rule error messages.
pub fn fit_text(text: String, max: usize, multiline: bool, changed: &mut bool) -> String {
    let mut text = escape_controls(text, multiline, changed);
    if text.len() > max {
        *changed = true;
        let cut = floor_char_boundary(&text, max.saturating_sub(3));
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

/// Control characters (C0, DEL, C1) and bidirectional overrides written as `\u{..}`;
/// with `multiline`, `\n` and `\t` are kept.
pub fn escape_controls(text: String, multiline: bool, changed: &mut bool) -> String {
    let unsafe_char = |c: char| is_unsafe(c) && !(multiline && (c == '\n' || c == '\t'));
    if !text.chars().any(unsafe_char) {
        return text;
    }
    *changed = true;
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

use crate::model::is_unsafe_char as is_unsafe;

fn floor_char_boundary(s: &str, mut at: usize) -> usize {
    at = at.min(s.len());
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: EventKind, key: &str) -> Event {
        Event { kind, key: key.into(), subject: format!("s {key}"), message: "m".into() }
    }

    fn limits(per_target: usize) -> RuleLimits {
        RuleLimits { max_events_per_target: per_target, ..RuleLimits::default() }
    }

    #[test]
    fn one_targets_flood_costs_only_that_target() {
        let targets: HashSet<&str> = ["ssh://u@a:22", "ssh://u@b:22", "local"].into();
        let mut events: Vec<Event> =
            (0..1500).map(|i| ev(EventKind::Alert, &format!("ssh://u@a:22/disk/d{i}"))).collect();
        events.push(ev(EventKind::Recovery, "ssh://u@a:22/mem"));
        events.push(ev(EventKind::Alert, "ssh://u@b:22/mem"));
        events.push(ev(EventKind::Alert, "local/cpu"));
        let (out, stats) = sanitize(events, &targets, &limits(1000));
        assert_eq!(stats, OutputStats { dropped: 501, truncated: 0 });
        assert_eq!(out.len(), 1002);
        // a's recovery survives although it came last; b and local are untouched.
        assert!(out.iter().any(|e| e.key == "ssh://u@a:22/mem" && e.kind == EventKind::Recovery));
        assert!(out.iter().any(|e| e.key == "ssh://u@b:22/mem"));
        assert!(out.iter().any(|e| e.key == "local/cpu"));
        assert_eq!(out.iter().filter(|e| e.key.starts_with("ssh://u@a:22/disk/")).count(), 999);
    }

    #[test]
    fn a_mass_outage_is_not_one_targets_flood() {
        let keys: Vec<String> = (0..1500).map(|i| format!("ssh://u@127.0.0.1:{}", 20000 + i)).collect();
        let targets: HashSet<&str> = keys.iter().map(String::as_str).collect();
        let events = keys.iter().map(|k| ev(EventKind::Alert, &format!("{k}/unreachable"))).collect();
        let (out, stats) = sanitize(events, &targets, &limits(1000));
        assert_eq!((out.len(), stats.dropped), (1500, 0));
    }

    #[test]
    fn long_keys_stay_stable_distinct_and_attributed() {
        let targets: HashSet<&str> = ["local"].into();
        let long = |tail: &str| format!("local/disk/{}{tail}", "x".repeat(600));
        let events = vec![ev(EventKind::Alert, &long("a")), ev(EventKind::Alert, &long("b")), ev(EventKind::Alert, "")];
        let (out, stats) = sanitize(events.clone(), &targets, &limits(10));
        assert_eq!(stats, OutputStats { dropped: 1, truncated: 2 });
        assert!(out.iter().all(|e| e.key.len() <= 512 && e.key.starts_with("local/disk/xxx")));
        assert_ne!(out[0].key, out[1].key);
        let (again, _) = sanitize(events, &targets, &limits(10));
        assert_eq!(out[0].key, again[0].key, "a shortened key is the same every round");
    }

    #[test]
    fn text_is_escaped_and_cut() {
        let mut changed = false;
        let s = fit_text("disk \x1b[31m/x\x07 \u{202e}gnp".into(), 512, false, &mut changed);
        assert_eq!(s, "disk \\u{1b}[31m/x\\u{7} \\u{202e}gnp");
        assert!(changed);
        let mut changed = false;
        assert_eq!(fit_text("a\nb\tc".into(), 512, true, &mut changed), "a\nb\tc");
        assert!(!changed);
        assert_eq!(fit_text("a\nb".into(), 512, false, &mut changed), "a\\u{a}b");
        let cut = fit_text("é".repeat(300), 100, false, &mut changed);
        assert!(cut.len() <= 100 && cut.ends_with("..."), "{cut}");
    }
}
