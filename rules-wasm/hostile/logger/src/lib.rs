//! Hostile test rule: logs 100 lines per evaluation, each trying to forge a line of
//! monserv's own log (a newline, a timestamp, a level) and to drive a terminal (ESC).

use monserv_rule_sdk::*;

struct Hostile;

impl Guest for Hostile {
    fn describe() -> RuleInfo {
        RuleInfo { name: "hostile-logger".into(), version: "0.1.0".into(), config: vec![], needs: vec![] }
    }

    fn evaluate(snapshot: Snapshot, _active_keys: Vec<String>) -> Result<Vec<Event>, String> {
        for i in 0..100 {
            host::log(
                Level::Warn,
                &format!(
                    "round {} line {i}\n2026-01-01T00:00:00.000000Z  INFO monserv: FORGED-LINE\x1b[2J",
                    snapshot.round
                ),
            );
        }
        Ok(Vec::new())
    }
}

monserv_rule_sdk::export!(Hostile);
