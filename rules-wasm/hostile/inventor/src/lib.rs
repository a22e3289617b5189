//! Hostile test rule: reports 1000 new alert keys per target every round, so its
//! firing state would grow without bound. The host must cap it.

use monserv_rule_sdk::*;

struct Hostile;

impl Guest for Hostile {
    fn describe() -> RuleInfo {
        RuleInfo { name: "hostile-inventor".into(), version: "0.1.0".into(), config: vec![], needs: vec![] }
    }

    fn evaluate(snapshot: Snapshot, _active_keys: Vec<String>) -> Result<Vec<Event>, String> {
        let round = snapshot.round;
        Ok(snapshot
            .targets
            .iter()
            .flat_map(|t| {
                (0..1000).map(move |i| {
                    alert(
                        format!("{}/invented/{round}/{i}", t.key),
                        format!("[ALERT] invented {round}/{i}"),
                        "x".repeat(200),
                    )
                })
            })
            .collect())
    }
}

monserv_rule_sdk::export!(Hostile);
