//! Hostile test rule: declares facts outside the menu's rules (a shell injection in
//! a process name). The host must refuse it at load, naming the fact.

use monserv_rule_sdk::*;

struct Hostile;

impl Guest for Hostile {
    fn describe() -> RuleInfo {
        RuleInfo {
            name: "hostile-needy".into(),
            version: "0.1.0".into(),
            config: vec![],
            needs: vec![Fact::ProcessCount("sshd".into()), Fact::ProcessCount("x'; reboot; '".into())],
        }
    }

    fn evaluate(_snapshot: Snapshot, _active_keys: Vec<String>) -> Result<Vec<Event>, String> {
        Ok(vec![])
    }
}

monserv_rule_sdk::export!(Hostile);
