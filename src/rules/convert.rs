//! Poll snapshot -> WIT snapshot, once per round for all rules.

use std::time::{SystemTime, UNIX_EPOCH};

use super::sandbox::wit;
use crate::model::Snapshot;
use crate::model::{HostStatus, ServerMetrics};

pub fn snapshot(s: &Snapshot) -> wit::Snapshot {
    wit::Snapshot {
        round: s.round,
        unix_time: if s.unix_ms > 0 {
            s.unix_ms / 1000
        } else {
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
        },
        targets: s
            .targets
            .iter()
            .map(|t| wit::Target {
                key: t.url.clone(),
                hostname: t.metrics.hostname.clone(),
                status: match t.status {
                    HostStatus::Online => wit::Reachability::Online,
                    HostStatus::Offline => wit::Reachability::Offline,
                },
                consecutive_failures: t.consecutive_failures,
                last_error_kind: t.last_error_kind.map(str::to_string),
                metrics: t.collected.then(|| metrics(&t.metrics)),
            })
            .collect(),
    }
}

pub fn metrics(m: &ServerMetrics) -> wit::Metrics {
    wit::Metrics {
        hostname: m.hostname.clone(),
        uptime_seconds: m.uptime_seconds,
        memory: wit::Memory {
            total: m.memory.total,
            used: m.memory.used,
            free: m.memory.free,
            used_percent: m.memory.used_percent,
        },
        disks: m
            .disks
            .iter()
            .map(|d| wit::Disk {
                device: d.device.clone(),
                mountpoint: d.mountpoint.clone(),
                fstype: d.fstype.clone(),
                total: d.total,
                used: d.used,
                free: d.free,
                used_percent: d.used_percent,
            })
            .collect(),
        top_procs_by_mem: m
            .top_procs_by_mem
            .iter()
            .map(|p| wit::Process {
                pid: p.pid,
                name: p.name.clone(),
                username: p.username.clone(),
                rss_bytes: p.rss_bytes,
                percent_ram: p.percent_ram,
                cmdline: p.cmdline.clone(),
            })
            .collect(),
        cpu: wit::Cpu { cores: m.cpu.cores, used_percent: m.cpu.used_percent, model_name: m.cpu.model_name.clone() },
        generated_at_utc: m.generated_at_utc.clone(),
    }
}
