//! The Go MonServ agent's answer (`GET /metrics`: one ServerMetrics JSON object),
//! checked like any host's output: a pure function over untrusted bytes.
//!
//! Required fields and types are those of PROTOCOL.md; numbers must be finite and
//! are clamped where they are percentages; lists are cut (disks to
//! [`MAX_AGENT_DISKS`], processes to `top_n`, largest first). Text is cleaned with the
//! rest of the metrics in `sample::build_metrics`.

use serde::Deserialize;

use super::parse::ParseError;
use crate::model::{self, Cpu, Disk, HostStatus, Memory, Process, ServerMetrics};

/// Most disks kept from one agent answer.
pub const MAX_AGENT_DISKS: usize = 4096;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    hostname: String,
    uptime_seconds: u64,
    memory: Memory,
    #[serde(default)]
    disks: Vec<Disk>,
    #[serde(default)]
    top_procs_by_mem: Vec<Process>,
    #[serde(default)]
    cpu: Option<Cpu>,
}

fn malformed(detail: String) -> ParseError {
    let mut detail = detail;
    super::parse::clean_field(&mut detail, 200);
    ParseError::Malformed { what: "agent answer", detail }
}

fn percent(v: f64) -> f64 {
    if v.is_finite() {
        v.clamp(0.0, 100.0)
    } else {
        0.0
    }
}

/// Metrics from an agent's JSON; `generated_at_utc` is set by the caller (monserv's
/// clock, not the agent's).
pub fn agent_metrics(bytes: &[u8], top_n: usize) -> Result<ServerMetrics, ParseError> {
    let a: Answer = serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
    if a.hostname.trim().is_empty() {
        return Err(ParseError::Missing("hostname in the agent answer"));
    }
    if a.memory.total == 0 {
        return Err(malformed("memory.total is 0".into()));
    }
    let memory = Memory {
        total: a.memory.total,
        used: a.memory.used.min(a.memory.total),
        free: a.memory.free.min(a.memory.total),
        used_percent: model::round1(percent(a.memory.used_percent)),
    };
    let mut disks = a.disks;
    disks.truncate(MAX_AGENT_DISKS);
    for d in &mut disks {
        d.used_percent = model::round1(percent(d.used_percent));
    }
    let mut procs = a.top_procs_by_mem;
    procs.sort_by(|x, y| y.rss_bytes.cmp(&x.rss_bytes).then(x.pid.cmp(&y.pid)));
    procs.truncate(top_n);
    for p in &mut procs {
        p.percent_ram = model::round2(percent(p.percent_ram));
    }
    let cpu = a.cpu.map(|c| Cpu { used_percent: model::round1(percent(c.used_percent)), ..c }).unwrap_or_default();
    Ok(ServerMetrics {
        hostname: a.hostname.trim().to_string(),
        uptime_seconds: a.uptime_seconds,
        memory,
        disks,
        top_procs_by_mem: procs,
        generated_at_utc: String::new(),
        cpu,
        status: HostStatus::Online,
        error: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const ANSWER: &str = r#"{"hostname":"plc-gw-7","uptimeSeconds":86400,
        "memory":{"total":1000,"used":950,"free":50,"usedPercent":95.0},
        "disks":[{"device":"/dev/sda1","mountpoint":"/","fstype":"ext4","total":100,"used":40,"free":60,"usedPercent":40.0}],
        "topProcsByMem":[{"pid":7,"name":"small","username":"u","rssBytes":1,"percentRAM":0.1,"cmdline":"s"},
                         {"pid":9,"name":"historian","username":"scada","rssBytes":500,"percentRAM":50.0,"cmdline":"h --db"}],
        "generatedAtUtc":"2026-01-01T00:00:00Z"}"#;

    #[test]
    fn a_go_agent_answer() {
        let m = agent_metrics(ANSWER.as_bytes(), 5).unwrap();
        assert_eq!((m.hostname.as_str(), m.uptime_seconds, m.memory.used_percent), ("plc-gw-7", 86400, 95.0));
        assert_eq!(m.disks[0].mountpoint, "/");
        assert_eq!(m.top_procs_by_mem[0].name, "historian", "sorted by RSS");
        assert_eq!(agent_metrics(ANSWER.as_bytes(), 1).unwrap().top_procs_by_mem.len(), 1);
        assert_eq!(m.cpu, Cpu::default(), "the Go agent sends no cpu");
    }

    #[test]
    fn hostile_answers_are_errors_or_bounded() {
        for bad in [
            "",
            "not json",
            "{}",
            r#"{"hostname":"","uptimeSeconds":1,"memory":{"total":1,"used":0,"free":1,"usedPercent":0}}"#,
            r#"{"hostname":"h","uptimeSeconds":-5,"memory":{"total":1,"used":0,"free":1,"usedPercent":0}}"#,
            r#"{"hostname":"h","uptimeSeconds":1,"memory":{"total":0,"used":0,"free":0,"usedPercent":0}}"#,
        ] {
            assert!(agent_metrics(bad.as_bytes(), 5).is_err(), "{bad}");
        }
        let wild = r#"{"hostname":"h","uptimeSeconds":1,"memory":{"total":10,"used":99,"free":99,"usedPercent":1e308},
            "disks":[{"device":"d","mountpoint":"/","fstype":"x","total":1,"used":1,"free":0,"usedPercent":-5}]}"#;
        let m = agent_metrics(wild.as_bytes(), 5).unwrap();
        assert_eq!(
            (m.memory.used, m.memory.free, m.memory.used_percent, m.disks[0].used_percent),
            (10, 10, 100.0, 0.0)
        );
        let e = agent_metrics(b"\x1b[2J{", 5).unwrap_err().to_string();
        assert!(!e.contains('\x1b'), "{e}");
    }
}
