//! Example rule: "the disk will be full within 4 hours" (Prometheus's
//! `predict_linear`, Netdata's disk-fill alarms), on the device.
//!
//! For every filesystem, the least-squares slope of its used bytes over the last
//! `window_minutes` gives the growth rate; free bytes divided by it give the hours
//! left. It alerts when that is below `hours` (with at least `min_samples` samples
//! in the window, so a fresh start does not extrapolate from two points) and
//! recovers when the forecast is above `hours` x `recover_factor` or use stops
//! growing.

use monserv_rule_sdk::*;

struct DiskFill;

/// Hours as people read them: `3.2 h`, or `12.5 min` under an hour.
fn when(hours: f64) -> String {
    if hours >= 1.0 {
        format!("{hours:.1} h")
    } else {
        format!("{:.1} min", hours * 60.0)
    }
}

impl Guest for DiskFill {
    fn describe() -> RuleInfo {
        RuleInfo {
            name: "disk-fill".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            config: vec![
                number("hours", 4.0, "alert when a filesystem will be full in fewer hours than this")
                    .range(0.01, 8760.0),
                integer("window_minutes", 30, "fit the growth over this many minutes of history").range(1.0, 1440.0),
                integer("min_samples", 10, "samples the window must hold before forecasting").range(2.0, 1000.0),
                number("recover_factor", 1.5, "recover once the forecast is above hours x this").range(1.0, 100.0),
                list("ignore", &[], "mountpoints to leave out"),
            ],
            needs: vec![],
        }
    }

    fn evaluate(snapshot: Snapshot, active_keys: Vec<String>) -> Result<Vec<Event>, String> {
        let hours = config_f64("hours", 4.0)?;
        let window = config_i64("window_minutes", 30)? as u32 * 60;
        let min_samples = config_i64("min_samples", 10)? as f64;
        let recover = hours * config_f64("recover_factor", 1.5)?;
        let ignore = config_list("ignore", &[]);
        let active = Active::new(active_keys);
        let mut events = Vec::new();
        for t in snapshot.targets.iter().filter(|t| t.status == Reachability::Online) {
            let Some(m) = &t.metrics else { continue };
            for d in m.disks.iter().filter(|d| !ignore.contains(&d.mountpoint)) {
                let key = format!("{}/fill/{}", t.key, d.mountpoint);
                let series = Series::DiskUsed(d.mountpoint.clone());
                let samples = history(&t.key, &series, window, Aggregate::Count).unwrap_or(0.0);
                let Some(slope) = history(&t.key, &series, window, Aggregate::Slope) else { continue };
                if samples < min_samples {
                    continue;
                }
                let left = if slope > 0.0 { d.free as f64 / slope / 3600.0 } else { f64::INFINITY };
                if left < hours {
                    events.push(alert(
                        key,
                        format!("[ALERT] {} {} full in {}", m.hostname, d.mountpoint, when(left)),
                        format!(
                            "{} on {} will be full in about {}: {} free, growing {}/h over the last {} min",
                            d.mountpoint,
                            m.hostname,
                            when(left),
                            bytes(d.free as f64),
                            bytes(slope * 3600.0),
                            window / 60
                        ),
                    ));
                } else if active.contains(&key) && left > recover {
                    let why =
                        if left.is_finite() { format!("full in {}", when(left)) } else { "not growing".to_string() };
                    events.push(recovery(
                        key,
                        format!("[RECOVERED] {} {} fill", m.hostname, d.mountpoint),
                        format!("{} on {}: {why}, {} free", d.mountpoint, m.hostname, bytes(d.free as f64)),
                    ));
                }
            }
        }
        Ok(events)
    }
}

monserv_rule_sdk::export!(DiskFill);
