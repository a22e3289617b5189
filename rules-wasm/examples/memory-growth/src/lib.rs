//! Example rule: "memory grew 20% in an hour" (a leak, before it becomes an
//! out-of-memory kill).
//!
//! Memory used over the last `window_minutes` is averaged into 12 points; the
//! growth is the last point against the first. It alerts when memory grew by at
//! least `percent` and the history covers at least 80% of the window (no verdict on
//! a host just added), and recovers when the growth is below half of that.

use monserv_rule_sdk::*;

struct MemoryGrowth;

impl Guest for MemoryGrowth {
    fn describe() -> RuleInfo {
        RuleInfo {
            name: "memory-growth".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            config: vec![
                number("percent", 20.0, "alert when memory used grew by this percentage over the window").min(0.1),
                integer("window_minutes", 60, "compare the start and the end of this many minutes").range(1.0, 1440.0),
            ],
            needs: vec![],
        }
    }

    fn evaluate(snapshot: Snapshot, active_keys: Vec<String>) -> Result<Vec<Event>, String> {
        let percent = config_f64("percent", 20.0)?;
        let window = config_i64("window_minutes", 60)? as u32 * 60;
        let active = Active::new(active_keys);
        let mut events = Vec::new();
        for t in snapshot.targets.iter().filter(|t| t.status == Reachability::Online) {
            let Some(m) = &t.metrics else { continue };
            let key = format!("{}/mem-growth", t.key);
            let points = history_points(&t.key, &Series::MemoryUsed, window, 12);
            let (Some(first), Some(last)) = (points.first(), points.last()) else { continue };
            let oldest = history_points(&t.key, &Series::MemoryUsed, window, 1000).first().map(|p| p.unix_time);
            let covered = oldest.map_or(0, |o| snapshot.unix_time.saturating_sub(o));
            if first.value <= 0.0 || (covered as f64) < 0.8 * f64::from(window) {
                continue;
            }
            let growth = (last.value - first.value) / first.value * 100.0;
            if growth >= percent {
                events.push(alert(
                    key,
                    format!("[ALERT] {} memory grew {}%", m.hostname, pct(growth)),
                    format!(
                        "Memory used grew {}% in {} min, from {} to {} (alert at {}%)",
                        pct(growth),
                        window / 60,
                        bytes(first.value),
                        bytes(last.value),
                        pct(percent)
                    ),
                ));
            } else if active.contains(&key) && growth < percent / 2.0 {
                events.push(recovery(
                    key,
                    format!("[RECOVERED] {} memory growth", m.hostname),
                    format!("Memory used changed {}% over {} min", pct(growth), window / 60),
                ));
            }
        }
        Ok(events)
    }
}

monserv_rule_sdk::export!(MemoryGrowth);
