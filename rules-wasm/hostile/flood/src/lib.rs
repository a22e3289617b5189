//! Hostile test rule: returns 100 000 events. The sandbox must contain it.

use monserv_rule_sdk::*;

struct Hostile;

impl Guest for Hostile {
    fn describe() -> RuleInfo {
        RuleInfo { name: "hostile-flood".into(), version: "0.1.0".into(), config: vec![], needs: vec![] }
    }

    fn evaluate(_snapshot: Snapshot, _active_keys: Vec<String>) -> Result<Vec<Event>, String> {
        Ok((0..100_000).map(|i| alert(format!("flood/{i}"), format!("[ALERT] flood {i}"), "x".into())).collect())
    }
}

monserv_rule_sdk::export!(Hostile);
