//! Hostile test rule: panics (a trap). The sandbox must contain it.

use monserv_rule_sdk::*;

struct Hostile;

impl Guest for Hostile {
    fn describe() -> RuleInfo {
        RuleInfo { name: "hostile-panic".into(), version: "0.1.0".into(), config: vec![], needs: vec![] }
    }

    fn evaluate(_snapshot: Snapshot, _active_keys: Vec<String>) -> Result<Vec<Event>, String> {
        let v: Vec<u32> = std::hint::black_box(Vec::new());
        Ok(vec![alert(format!("{}", v[3]), String::new(), String::new())])
    }
}

monserv_rule_sdk::export!(Hostile);
