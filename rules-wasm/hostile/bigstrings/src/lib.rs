//! Hostile test rule: returns a 4 MB message. The sandbox must contain it.

use monserv_rule_sdk::*;

struct Hostile;

impl Guest for Hostile {
    fn describe() -> RuleInfo {
        RuleInfo { name: "hostile-bigstrings".into(), version: "0.1.0".into(), config: vec![], needs: vec![] }
    }

    fn evaluate(_snapshot: Snapshot, _active_keys: Vec<String>) -> Result<Vec<Event>, String> {
        Ok(vec![alert("big".into(), "[ALERT] big".into(), "x".repeat(4 << 20))])
    }
}

monserv_rule_sdk::export!(Hostile);
