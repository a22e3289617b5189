//! Example rule: "process `scada-histori` is not running".
//!
//! The rule declares one `process-count` fact per name in `processes`, so the
//! collectors count those names (and only while this rule is loaded) on every
//! host, BusyBox ones included. It alerts when fewer than `min_count` run and
//! recovers when enough run again. An offline host, or one that could not be
//! asked, changes nothing: unknown is neither missing nor back.

use monserv_rule_sdk::*;

struct ProcessMissing;

fn names() -> Vec<String> {
    config_list("processes", &["sshd"])
}

impl Guest for ProcessMissing {
    fn describe() -> RuleInfo {
        RuleInfo {
            name: "process-missing".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            config: vec![
                list(
                    "processes",
                    &["sshd"],
                    "process names (as in /proc/PID/comm, at most 15 characters) that must run on every host",
                ),
                integer("min_count", 1, "alert when fewer than this many of a name run").range(1.0, 10000.0),
            ],
            // What the collectors fetch follows the settings.
            needs: names().into_iter().map(Fact::ProcessCount).collect(),
        }
    }

    fn evaluate(snapshot: Snapshot, active_keys: Vec<String>) -> Result<Vec<Event>, String> {
        let min = config_i64("min_count", 1)? as u32;
        let active = Active::new(active_keys);
        let mut events = Vec::new();
        for t in snapshot.targets.iter().filter(|t| t.status == Reachability::Online) {
            for name in names() {
                let key = format!("{}/process/{name}", t.key);
                let Some(FactValue::Count(n)) = fact(&t.key, &Fact::ProcessCount(name.clone())) else { continue };
                if n < min {
                    events.push(alert(
                        key,
                        format!("[ALERT] {} process {name} not running", t.hostname),
                        format!("{n} process(es) named {name} on {}; at least {min} required", t.hostname),
                    ));
                } else if active.contains(&key) {
                    events.push(recovery(
                        key,
                        format!("[RECOVERED] {} process {name}", t.hostname),
                        format!("{n} process(es) named {name} running again"),
                    ));
                }
            }
        }
        Ok(events)
    }
}

monserv_rule_sdk::export!(ProcessMissing);
