//! Example rule: "CPU above 90% for 8 of the last 10 minutes".
//!
//! The history's CPU samples of the last `minutes` are averaged per minute; the
//! rule alerts when at least `at_least` of those minutes were above `cpu_percent`,
//! and recovers when fewer than `at_least` are. A short spike fills one minute, not
//! eight; a host that is busy most of the time is caught even when it dips.

use monserv_rule_sdk::*;

struct SustainedCpu;

impl Guest for SustainedCpu {
    fn describe() -> RuleInfo {
        RuleInfo {
            name: "sustained-cpu".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            config: vec![
                percent("cpu_percent", 90.0, "a minute counts when its average CPU use is above this"),
                integer("minutes", 10, "look at this many recent minutes (n)").range(1.0, 1440.0),
                integer("at_least", 8, "alert when this many of them count (k)").range(1.0, 1440.0),
            ],
            needs: vec![],
        }
    }

    fn evaluate(snapshot: Snapshot, active_keys: Vec<String>) -> Result<Vec<Event>, String> {
        let threshold = config_f64("cpu_percent", 90.0)?;
        let n = config_i64("minutes", 10)? as u64;
        let k = config_i64("at_least", 8)? as usize;
        if k as u64 > n {
            return Err(format!("config at_least = {k} is more than minutes = {n}"));
        }
        let active = Active::new(active_keys);
        let now = snapshot.unix_time;
        let mut events = Vec::new();
        for t in snapshot.targets.iter().filter(|t| t.status == Reachability::Online) {
            let Some(m) = &t.metrics else { continue };
            let key = format!("{}/cpu-sustained", t.key);
            // Minute i holds the samples of (now - 60(i+1), now - 60i].
            let mut sums = vec![(0.0f64, 0u32); n as usize];
            for p in history_points(&t.key, &Series::CpuPercent, (n * 60) as u32, 1000) {
                let i = (now.saturating_sub(p.unix_time) / 60) as usize;
                if let Some(b) = sums.get_mut(i) {
                    *b = (b.0 + p.value, b.1 + 1);
                }
            }
            let busy = sums.iter().filter(|(sum, count)| *count > 0 && sum / f64::from(*count) > threshold).count();
            if busy >= k {
                events.push(alert(
                    key,
                    format!("[ALERT] {} CPU busy {busy} of {n} min", m.hostname),
                    format!(
                        "CPU above {}% in {busy} of the last {n} minutes (now {}%)",
                        pct(threshold),
                        pct(m.cpu.used_percent)
                    ),
                ));
            } else if active.contains(&key) {
                events.push(recovery(
                    key,
                    format!("[RECOVERED] {} CPU", m.hostname),
                    format!("CPU above {}% in {busy} of the last {n} minutes", pct(threshold)),
                ));
            }
        }
        Ok(events)
    }
}

monserv_rule_sdk::export!(SustainedCpu);
