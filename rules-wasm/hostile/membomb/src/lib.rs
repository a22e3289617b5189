//! Hostile test rule: allocates until it gets 1 GiB. The sandbox must contain it.

use monserv_rule_sdk::*;

struct Hostile;

impl Guest for Hostile {
    fn describe() -> RuleInfo {
        RuleInfo { name: "hostile-membomb".into(), version: "0.1.0".into(), config: vec![], needs: vec![] }
    }

    fn evaluate(_snapshot: Snapshot, _active_keys: Vec<String>) -> Result<Vec<Event>, String> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        for _ in 0..1024 {
            hoard.push(std::hint::black_box(vec![7u8; 1 << 20]));
        }
        Ok(vec![alert("k".into(), format!("held {} MiB", hoard.len()), String::new())])
    }
}

monserv_rule_sdk::export!(Hostile);
