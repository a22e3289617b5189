//! Example rule: a host rebooted.
//!
//! A host's boot time (round time minus uptime) is remembered in the rule's state,
//! which the host keeps across rounds, monserv restarts and new versions of this
//! rule. When it moves forward by more than two minutes the host rebooted: the rule
//! alerts for `hold_minutes`, then recovers. A monserv restart changes nothing (the
//! boot time is remembered), so it raises no false alarm; a reboot while monserv
//! was down is still reported. The state is written only when a boot time changes,
//! not every round.

use monserv_rule_sdk::*;

struct Reboot;

/// Boot times jitter by a second or two between rounds; a reboot moves it by more.
const SLACK: u64 = 120;

impl Guest for Reboot {
    fn describe() -> RuleInfo {
        RuleInfo {
            name: "reboot".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            config: vec![integer("hold_minutes", 10, "keep the alert this long after a reboot").range(1.0, 10080.0)],
            needs: vec![],
        }
    }

    fn evaluate(snapshot: Snapshot, active_keys: Vec<String>) -> Result<Vec<Event>, String> {
        let hold = config_i64("hold_minutes", 10)? as u64 * 60;
        let active = Active::new(active_keys);
        let now = snapshot.unix_time;
        let mut events = Vec::new();
        // Hosts whose boot time could not be kept (the state is full): never a guess.
        let mut untracked = 0;
        for t in snapshot.targets.iter().filter(|t| t.status == Reachability::Online) {
            let Some(m) = &t.metrics else { continue };
            let key = format!("{}/reboot", t.key);
            let boot = now.saturating_sub(m.uptime_seconds);
            let (boot_key, seen_key) = (format!("boot:{}", t.key), format!("rebooted:{}", t.key));
            match state::get_u64(&boot_key) {
                // First sight: remember, do not guess.
                None => {
                    if state::set(&boot_key, &boot.to_string()).is_err() {
                        untracked += 1;
                        continue;
                    }
                }
                Some(known) if boot > known + SLACK => {
                    state::set(&boot_key, &boot.to_string())?;
                    if state::set(&seen_key, &boot.to_string()).is_err() {
                        // Reported now, if not held for hold_minutes.
                        events.push(alert(
                            key,
                            format!("[ALERT] {} rebooted", m.hostname),
                            format!("{} booted {} s ago", m.hostname, m.uptime_seconds),
                        ));
                        continue;
                    }
                }
                Some(_) => {}
            }
            match state::get_u64(&seen_key) {
                Some(at) if now < at + hold => events.push(alert(
                    key,
                    format!("[ALERT] {} rebooted", m.hostname),
                    format!("{} booted {} s ago", m.hostname, m.uptime_seconds),
                )),
                Some(_) => {
                    state::delete(&seen_key);
                    if active.contains(&key) {
                        events.push(recovery(
                            key,
                            format!("[RECOVERED] {} rebooted", m.hostname),
                            format!("Up for {} s", m.uptime_seconds),
                        ));
                    }
                }
                None if active.contains(&key) => events.push(recovery(
                    key,
                    format!("[RECOVERED] {} rebooted", m.hostname),
                    format!("Up for {} s", m.uptime_seconds),
                )),
                None => {}
            }
        }
        if untracked > 0 {
            host::log(
                Level::Warn,
                &format!("rule state full: {untracked} hosts' boot times not kept, their reboots not reported"),
            );
        }
        Ok(events)
    }
}

monserv_rule_sdk::export!(Reboot);
