//! Example rule: a host that rebooted is worth knowing about on a plant network.
//! Alerts while a host's uptime is below `min_uptime_seconds`, recovers after.

use monserv_rule_sdk::*;

struct Reboot;

impl Guest for Reboot {
    fn describe() -> RuleInfo {
        RuleInfo {
            name: "reboot".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            config: vec![
                integer("min_uptime_seconds", 600, "alert while uptime is below this").range(1.0, 31_536_000.0)
            ],
        }
    }

    fn evaluate(snapshot: Snapshot, active_keys: Vec<String>) -> Result<Vec<Event>, String> {
        let limit = config_i64("min_uptime_seconds", 600)? as f64;
        let active = Active::new(active_keys);
        let mut events = Vec::new();
        for t in snapshot.targets.iter().filter(|t| t.status == Reachability::Online) {
            let Some(m) = &t.metrics else { continue };
            let key = format!("{}/reboot", t.key);
            if (m.uptime_seconds as f64) < limit {
                events.push(alert(
                    key,
                    format!("[ALERT] {} rebooted", m.hostname),
                    format!("Up for only {} s (booted recently)", m.uptime_seconds),
                ));
            } else if active.contains(&key) {
                events.push(recovery(
                    key,
                    format!("[RECOVERED] {} rebooted", m.hostname),
                    format!("Up for {} s", m.uptime_seconds),
                ));
            }
        }
        Ok(events)
    }
}

monserv_rule_sdk::export!(Reboot);
