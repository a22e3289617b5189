//! Hostile test rule: tries to hoard state and history. The host's caps must hold:
//! it reports what it got, as one event per target, and the test checks the caps.

use monserv_rule_sdk::*;

struct Hostile;

impl Guest for Hostile {
    fn describe() -> RuleInfo {
        RuleInfo { name: "hostile-hoarder".into(), version: "0.1.0".into(), config: vec![], needs: vec![] }
    }

    fn evaluate(snapshot: Snapshot, _active_keys: Vec<String>) -> Result<Vec<Event>, String> {
        // 10,000 keys of 1 KiB: the caps allow 256 keys and 64 KiB.
        let value = "x".repeat(1024);
        let mut stored = 0;
        let mut refusal = String::new();
        for i in 0..10_000 {
            match state::set(&format!("k{i}"), &value) {
                Ok(()) => stored += 1,
                Err(e) => refusal = e,
            }
        }
        let mut events = Vec::new();
        for t in &snapshot.targets {
            // Ask for far more points than the host gives.
            let points = history_points(&t.key, &Series::CpuPercent, u32::MAX, u32::MAX).len();
            events.push(Event {
                kind: EventKind::Alert,
                key: format!("{}/hoard", t.key),
                subject: format!("stored {stored}"),
                message: format!("points {points}; refusal: {refusal}"),
            });
        }
        Ok(events)
    }
}

monserv_rule_sdk::export!(Hostile);
