//! Example rule: percentages mislead on large disks (10 % of 4 TB is plenty) and on
//! small ones (10 % of 8 GB is not). Alerts when a filesystem has less than
//! `min_free_mib` MiB free, recovers when it has `recover_free_mib` again. Mounts
//! listed in `ignore` (removable media, a read-only image) are left out.

use monserv_rule_sdk::*;

struct LowDiskSpace;

const MIB: f64 = 1024.0 * 1024.0;

impl Guest for LowDiskSpace {
    fn describe() -> RuleInfo {
        RuleInfo {
            name: "low-disk-space".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            config: vec![
                number("min_free_mib", 1024.0, "alert when a filesystem has less free space than this").min(0.0),
                number("recover_free_mib", 1536.0, "recover when it has at least this much again").min(0.0),
                list("ignore", &[], "mountpoints to leave out, e.g. [\"/boot\", \"/media/usb\"]"),
            ],
            needs: vec![],
        }
    }

    fn evaluate(snapshot: Snapshot, active_keys: Vec<String>) -> Result<Vec<Event>, String> {
        let min = config_f64("min_free_mib", 1024.0)?;
        let recover = config_f64("recover_free_mib", 1536.0)?.max(min);
        let ignore = config_list("ignore", &[]);
        let active = Active::new(active_keys);
        let mut events = Vec::new();
        for t in snapshot.targets.iter().filter(|t| t.status == Reachability::Online) {
            let Some(m) = &t.metrics else { continue };
            for d in m.disks.iter().filter(|d| !ignore.contains(&d.mountpoint)) {
                let key = format!("{}/free/{}", t.key, d.mountpoint);
                let free = d.free as f64 / MIB;
                if free < min {
                    events.push(alert(
                        key,
                        format!("[ALERT] {} disk {} low on space", m.hostname, d.mountpoint),
                        format!("Disk {} has {free:.0} MiB free (minimum {min:.0} MiB)", d.mountpoint),
                    ));
                } else if active.contains(&key) && free >= recover {
                    events.push(recovery(
                        key,
                        format!("[RECOVERED] {} disk {} space", m.hostname, d.mountpoint),
                        format!("Disk {} has {free:.0} MiB free", d.mountpoint),
                    ));
                }
            }
        }
        Ok(events)
    }
}

monserv_rule_sdk::export!(LowDiskSpace);
