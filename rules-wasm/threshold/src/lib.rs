//! The built-in rule: MonServ's thresholds with PROTOCOL.md's exact wording, plus
//! what MonServ lacked: an unreachable-host alert and hysteresis. It runs through the
//! same engine and sandbox as any custom rule.

use monserv_rule_sdk::*;

struct Threshold;

struct Settings {
    memory: f64,
    disk: f64,
    cpu: f64,
    proc_ram: f64,
    margin: f64,
    unreachable_polls: u32,
}

fn settings() -> Result<Settings, String> {
    let s = Settings {
        memory: config_f64("memory_percent", 90.0)?,
        disk: config_f64("disk_percent", 90.0)?,
        cpu: config_f64("cpu_percent", 80.0)?,
        proc_ram: config_f64("proc_ram_percent", 90.0)?,
        margin: config_f64("hysteresis_percent", 0.0)?,
        unreachable_polls: config_i64("unreachable_polls", 3)?.clamp(0, u32::MAX as i64) as u32,
    };
    if s.margin < 0.0 || s.unreachable_polls == 0 {
        return Err("hysteresis_percent must be >= 0 and unreachable_polls >= 1".into());
    }
    Ok(s)
}

impl Guest for Threshold {
    fn describe() -> RuleInfo {
        RuleInfo {
            name: String::from("threshold"),
            version: String::from(env!("CARGO_PKG_VERSION")),
            config: vec![
                percent(
                    "memory_percent",
                    90.0,
                    "alert when memory used exceeds this percentage (MEM_THRESHOLD_PERCENT)",
                ),
                percent(
                    "disk_percent",
                    90.0,
                    "alert when a disk is fuller than this percentage (DISK_THRESHOLD_PERCENT)",
                ),
                percent("cpu_percent", 80.0, "alert when CPU use exceeds this percentage (CPU_THRESHOLD_PERCENT)"),
                percent(
                    "proc_ram_percent",
                    90.0,
                    "alert when one process uses more RAM than this percentage (PROC_RAM_THRESHOLD_PERCENT)",
                ),
                percent("hysteresis_percent", 0.0, "recover only below threshold minus this margin"),
                integer("unreachable_polls", 3, "alert when a host failed this many polls in a row").range(1.0, 1e6),
            ],
            needs: vec![],
        }
    }

    fn evaluate(snapshot: Snapshot, active_keys: Vec<String>) -> Result<Vec<Event>, String> {
        let s = settings()?;
        let active = Active::new(active_keys);
        let mut events = Vec::new();
        for t in &snapshot.targets {
            check_reachability(&s, &active, t, &mut events);
            // Stale metrics of an offline host neither raise nor clear alerts.
            if t.status == Reachability::Offline {
                continue;
            }
            if let Some(m) = &t.metrics {
                check_metrics(&s, &active, &t.key, m, &mut events);
            }
        }
        Ok(events)
    }
}

fn check_reachability(s: &Settings, active: &Active, t: &Target, events: &mut Vec<Event>) {
    let key = format!("{}/unreachable", t.key);
    if t.consecutive_failures >= s.unreachable_polls {
        let why = t.last_error_kind.as_deref().unwrap_or("unknown");
        events.push(alert(
            key,
            format!("[ALERT] {} unreachable", t.hostname),
            format!("{} failed {} polls in a row ({})", t.key, t.consecutive_failures, why),
        ));
    } else if t.status == Reachability::Online && active.contains(&key) {
        events.push(recovery(key, format!("[RECOVERED] {} reachable", t.hostname), format!("{} answers again", t.key)));
    }
}

fn check_metrics(s: &Settings, active: &Active, target: &str, m: &Metrics, events: &mut Vec<Event>) {
    let host = &m.hostname;
    let mem = m.memory.used_percent;
    events.extend(level_check(
        active,
        format!("{target}/mem"),
        mem,
        s.memory,
        s.margin,
        || (format!("[ALERT] {host} memory high"), format!("Memory used {}% (threshold {}%)", pct(mem), pct(s.memory))),
        || (format!("[RECOVERED] {host} memory"), format!("Memory back to {}%", pct(mem))),
    ));
    let cpu = m.cpu.used_percent;
    events.extend(level_check(
        active,
        format!("{target}/cpu"),
        cpu,
        s.cpu,
        s.margin,
        || (format!("[ALERT] {host} CPU high"), format!("CPU used {}% (threshold {}%)", pct(cpu), pct(s.cpu))),
        || (format!("[RECOVERED] {host} CPU"), format!("CPU back to {}%", pct(cpu))),
    ));
    for d in &m.disks {
        let (mount, v) = (&d.mountpoint, d.used_percent);
        events.extend(level_check(
            active,
            format!("{target}/disk/{mount}"),
            v,
            s.disk,
            s.margin,
            || {
                (
                    format!("[ALERT] {host} disk {mount} high"),
                    format!("Disk {mount} used {}% (threshold {}%)", pct(v), pct(s.disk)),
                )
            },
            || (format!("[RECOVERED] {host} disk {mount}"), format!("Disk {mount} back to {}%", pct(v))),
        ));
    }
    // Processes are keyed by name, so a restart (new PID) is not a new alert. With
    // several processes of one name, the largest speaks for them.
    let mut seen: Vec<&str> = Vec::new();
    for p in &m.top_procs_by_mem {
        if seen.contains(&p.name.as_str()) {
            continue;
        }
        seen.push(&p.name);
        let (name, pid, v) = (&p.name, p.pid, p.percent_ram);
        events.extend(level_check(
            active,
            format!("{target}/proc/{name}"),
            v,
            s.proc_ram,
            s.margin,
            || {
                (
                    format!("[ALERT] {host} proc {name}({pid}) RAM high"),
                    format!("Process {name}({pid}) uses {}% RAM (th {}%)", pct(v), pct(s.proc_ram)),
                )
            },
            || {
                (
                    format!("[RECOVERED] {host} proc {name}({pid}) RAM"),
                    format!("Process {name}({pid}) back to {}% RAM", pct(v)),
                )
            },
        ));
    }
    // A firing process that left the top list (exited, or shrank below the others).
    let prefix = format!("{target}/proc/");
    for key in active.with_prefix(&prefix) {
        let name = &key[prefix.len()..];
        if !seen.contains(&name) {
            events.push(recovery(
                key.clone(),
                format!("[RECOVERED] {host} proc {name} RAM"),
                format!("Process {name} no longer among the top processes by memory"),
            ));
        }
    }
}

monserv_rule_sdk::export!(Threshold);
