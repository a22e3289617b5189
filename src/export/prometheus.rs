//! `GET /metrics`: the latest snapshot and monserv's own counters in the Prometheus
//! text exposition format 0.0.4.
//!
//! A pure renderer: the HTTP handler gathers the numbers, this writes them. Names and
//! units follow Prometheus conventions (base units: bytes, seconds, ratios 0..1;
//! counters end in `_total`), every family is written whole with its HELP and TYPE,
//! and label values (host-controlled: hostnames, mountpoints) are escaped. An offline
//! target exports `monserv_up 0` and its failure count, not its last good values:
//! those would be stale numbers presented as current, so its series end instead.

use std::fmt::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::model::{HostStatus, Snapshot, TargetReport};

/// The content type of the text format this writes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What monserv knows about itself, gathered by the caller.
#[derive(Debug, Default, Clone)]
pub struct SelfStats {
    pub version: &'static str,
    pub started_at: Option<SystemTime>,
    pub poll_interval: Duration,
    pub ws_clients: usize,
    pub rules: Vec<RuleCounters>,
    pub sinks: Vec<SinkCounters>,
    pub receivers: Vec<ReceiverCounters>,
}

#[derive(Debug, Default, Clone)]
pub struct RuleCounters {
    pub name: String,
    pub evaluations: u64,
    pub failures: u64,
    /// Events the output limits dropped.
    pub events_dropped: u64,
    /// Keys firing now.
    pub firing: u64,
    pub last_eval: Duration,
}

/// A remote_write receiver's counters.
#[derive(Debug, Default, Clone)]
pub struct ReceiverCounters {
    pub url: String,
    pub samples_sent: u64,
    pub samples_dropped: u64,
    pub rounds_dropped: u64,
    pub failed_sends: u64,
    pub backlog_bytes: u64,
}

#[derive(Debug, Default, Clone)]
pub struct SinkCounters {
    pub name: String,
    pub queued: u64,
    pub delivered: u64,
    pub failed: u64,
}

/// Where the families go: the text exposition, or remote_write's series.
pub trait Out {
    /// A family starts: every sample of it follows before the next one starts.
    fn family(&mut self, name: &'static str, kind: &'static str, help: &'static str);
    fn sample(&mut self, name: &'static str, labels: &[(&'static str, &str)], value: f64);
}

/// The whole exposition as text.
pub fn render(snapshot: Option<&Snapshot>, stats: &SelfStats) -> String {
    let targets: &[TargetReport] = snapshot.map_or(&[], |s| &s.targets);
    let mut out = Text(String::with_capacity(512 + targets.len() * 1536));
    render_self(&mut out, snapshot.map_or(0, |s| s.round), stats);
    render_targets(&mut out, targets);
    out.0
}

/// The per-target families (and the round counter) of one snapshot, for remote_write.
pub fn snapshot_families(snapshot: &Snapshot, out: &mut impl Out) {
    out.family("monserv_poll_rounds_total", "counter", "Poll rounds completed since monserv started.");
    out.sample("monserv_poll_rounds_total", &[], snapshot.round as f64);
    render_targets(out, &snapshot.targets);
}

struct Text(String);

impl Out for Text {
    fn family(&mut self, name: &'static str, kind: &'static str, help: &'static str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &'static str, labels: &[(&'static str, &str)], value: f64) {
        let out = &mut self.0;
        out.push_str(name);
        if !labels.is_empty() {
            out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(k);
                out.push_str("=\"");
                escape_label(out, v);
                out.push('"');
            }
            out.push('}');
        }
        out.push(' ');
        write_value(out, value);
        out.push('\n');
    }
}

/// A metric family over items of type `T`: name, type, help, and the item's value
/// (none: no sample for that item).
type Family<T> = (&'static str, &'static str, &'static str, fn(&T) -> Option<f64>);

fn render_self(out: &mut impl Out, rounds: u64, s: &SelfStats) {
    out.family("monserv_build_info", "gauge", "monserv's version (always 1).");
    out.sample("monserv_build_info", &[("version", s.version)], 1.0);
    if let Some(t) = s.started_at {
        out.family("monserv_start_time_seconds", "gauge", "When monserv started, in seconds since the Unix epoch.");
        out.sample("monserv_start_time_seconds", &[], unix(t));
    }
    out.family("monserv_poll_rounds_total", "counter", "Poll rounds completed since monserv started.");
    out.sample("monserv_poll_rounds_total", &[], rounds as f64);
    out.family("monserv_poll_interval_seconds", "gauge", "Configured time between poll rounds.");
    out.sample("monserv_poll_interval_seconds", &[], s.poll_interval.as_secs_f64());
    out.family("monserv_websocket_clients", "gauge", "WebSocket clients connected to /ws.");
    out.sample("monserv_websocket_clients", &[], s.ws_clients as f64);

    let rules: [Family<RuleCounters>; 5] = [
        ("monserv_rule_evaluations_total", "counter", "Evaluations of the rule.", |r| Some(r.evaluations as f64)),
        ("monserv_rule_failures_total", "counter", "Evaluations that failed (trap, timeout or error).", |r| {
            Some(r.failures as f64)
        }),
        ("monserv_rule_events_dropped_total", "counter", "Events of the rule dropped by the output limits.", |r| {
            Some(r.events_dropped as f64)
        }),
        ("monserv_rule_firing", "gauge", "Alert keys of the rule firing now.", |r| Some(r.firing as f64)),
        ("monserv_rule_last_evaluation_seconds", "gauge", "How long the rule's latest evaluation took.", |r| {
            Some(r.last_eval.as_secs_f64())
        }),
    ];
    write_families(out, &rules, &s.rules, |r| vec![("rule", r.name.as_str())]);
    let sinks: [Family<SinkCounters>; 3] = [
        ("monserv_notifier_queue_length", "gauge", "Deliveries waiting for the sink (kept on disk).", |s| {
            Some(s.queued as f64)
        }),
        ("monserv_notifier_delivered_total", "counter", "Deliveries the sink accepted.", |s| Some(s.delivered as f64)),
        ("monserv_notifier_failed_total", "counter", "Deliveries the sink refused for good (not retried).", |s| {
            Some(s.failed as f64)
        }),
    ];
    write_families(out, &sinks, &s.sinks, |s| vec![("sink", s.name.as_str())]);
    let receivers: [Family<ReceiverCounters>; 5] = [
        ("monserv_remote_write_samples_sent_total", "counter", "Samples the receiver accepted.", |r| {
            Some(r.samples_sent as f64)
        }),
        (
            "monserv_remote_write_samples_dropped_total",
            "counter",
            "Samples dropped: refused for good (4xx) or over the backlog's cap.",
            |r| Some(r.samples_dropped as f64),
        ),
        ("monserv_remote_write_rounds_dropped_total", "counter", "Rounds not queued: the encoder was behind.", |r| {
            Some(r.rounds_dropped as f64)
        }),
        ("monserv_remote_write_failed_sends_total", "counter", "Sends that will be retried.", |r| {
            Some(r.failed_sends as f64)
        }),
        ("monserv_remote_write_backlog_bytes", "gauge", "Bytes queued on flash for the receiver.", |r| {
            Some(r.backlog_bytes as f64)
        }),
    ];
    write_families(out, &receivers, &s.receivers, |r| vec![("url", r.url.as_str())]);
}

/// Each family whole: HELP, TYPE, then one sample per item that has a value.
fn write_families<'a, T>(
    out: &mut impl Out,
    families: &[Family<T>],
    items: impl IntoIterator<Item = &'a T> + Clone,
    labels: impl Fn(&'a T) -> Vec<(&'static str, &'a str)>,
) where
    T: 'a,
{
    for (name, kind, help, value) in families {
        out.family(name, kind, help);
        for item in items.clone() {
            if let Some(v) = value(item) {
                out.sample(name, &labels(item), v);
            }
        }
    }
}

fn render_targets(out: &mut impl Out, targets: &[TargetReport]) {
    // Values that exist for every target, online or not.
    let always: [Family<TargetReport>; 4] = [
        ("monserv_up", "gauge", "Whether the target's last poll succeeded (1) or not (0).", |t| {
            Some(if t.status == HostStatus::Online { 1.0 } else { 0.0 })
        }),
        ("monserv_target_consecutive_failures", "gauge", "Polls of the target in a row that failed.", |t| {
            Some(t.consecutive_failures as f64)
        }),
        ("monserv_poll_duration_seconds", "gauge", "How long the target's last poll took.", |t| {
            t.poll_duration.map(|d| d.as_secs_f64())
        }),
        (
            "monserv_last_success_timestamp_seconds",
            "gauge",
            "When the target last answered a poll, in seconds since the Unix epoch.",
            |t| t.last_success.map(unix),
        ),
    ];
    write_families(out, &always, targets, |t| target_labels(t).to_vec());
    // Current values: online targets only.
    let online: Vec<&TargetReport> = targets.iter().filter(|t| t.status == HostStatus::Online && t.collected).collect();
    let current: [Family<TargetReport>; 7] = [
        ("monserv_memory_total_bytes", "gauge", "Memory of the host.", |t| Some(t.metrics.memory.total as f64)),
        ("monserv_memory_used_bytes", "gauge", "Memory in use.", |t| Some(t.metrics.memory.used as f64)),
        ("monserv_memory_free_bytes", "gauge", "Memory available.", |t| Some(t.metrics.memory.free as f64)),
        ("monserv_memory_used_ratio", "gauge", "Memory in use, 0 to 1.", |t| {
            Some(t.metrics.memory.used_percent / 100.0)
        }),
        ("monserv_cpu_used_ratio", "gauge", "CPU busy over the last poll interval, 0 to 1.", |t| {
            Some(t.metrics.cpu.used_percent / 100.0)
        }),
        ("monserv_cpu_cores", "gauge", "CPU cores of the host.", |t| Some(t.metrics.cpu.cores as f64)),
        ("monserv_host_uptime_seconds", "gauge", "Time since the host booted.", |t| {
            Some(t.metrics.uptime_seconds as f64)
        }),
    ];
    write_families(out, &current, online.iter().copied(), |t| target_labels(t).to_vec());
    let disk: [Family<crate::model::Disk>; 4] = [
        ("monserv_disk_total_bytes", "gauge", "Size of the filesystem.", |d| Some(d.total as f64)),
        ("monserv_disk_used_bytes", "gauge", "Space used on the filesystem.", |d| Some(d.used as f64)),
        ("monserv_disk_free_bytes", "gauge", "Space available on the filesystem.", |d| Some(d.free as f64)),
        ("monserv_disk_used_ratio", "gauge", "Space used on the filesystem, 0 to 1.", |d| Some(d.used_percent / 100.0)),
    ];
    for (name, kind, help, value) in disk {
        out.family(name, kind, help);
        for t in &online {
            let [target, hostname] = target_labels(t);
            for d in &t.metrics.disks {
                let labels = [
                    target,
                    hostname,
                    ("mountpoint", d.mountpoint.as_str()),
                    ("device", d.device.as_str()),
                    ("fstype", d.fstype.as_str()),
                ];
                if let Some(v) = value(d) {
                    out.sample(name, &labels, v);
                }
            }
        }
    }
}

fn target_labels(t: &TargetReport) -> [(&'static str, &str); 2] {
    [("target", t.url.as_str()), ("hostname", t.metrics.hostname.as_str())]
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// A label value as the format requires: `\`, `"` and newlines escaped. Other control
/// characters (a hostile host's) become U+FFFD, so no parser is surprised by them.
fn escape_label(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

fn write_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Cpu, Disk, Memory, ServerMetrics};

    fn target(url: &str, hostname: &str, status: HostStatus) -> TargetReport {
        TargetReport {
            url: url.into(),
            status,
            metrics: ServerMetrics {
                hostname: hostname.into(),
                uptime_seconds: 3600,
                memory: Memory { total: 8 << 30, used: 2 << 30, free: 6 << 30, used_percent: 25.0 },
                disks: vec![Disk {
                    device: "/dev/sda1".into(),
                    mountpoint: "/var/\"log\"".into(),
                    fstype: "ext4".into(),
                    total: 1000,
                    used: 125,
                    free: 875,
                    used_percent: 12.5,
                }],
                top_procs_by_mem: vec![],
                generated_at_utc: "2026-12-02T12:00:00Z".into(),
                cpu: Cpu { cores: 4, used_percent: 7.5, model_name: "x".into() },
                status,
                error: None,
            },
            collected: true,
            last_update: None,
            consecutive_failures: if status == HostStatus::Online { 0 } else { 3 },
            last_error_kind: None,
            poll_duration: Some(Duration::from_millis(250)),
            last_success: Some(UNIX_EPOCH + Duration::from_secs(1_764_676_800)),
            facts: Default::default(),
        }
    }

    fn lines_of<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} "))).collect()
    }

    #[test]
    fn targets_in_base_units_with_escaped_labels() {
        let snapshot = Snapshot {
            round: 42,
            unix_ms: 0,
            targets: vec![
                target("local", "gw-01", HostStatus::Online),
                target("ssh://scada:***@10.0.0.5:22", "plc\n\"7\"\\\u{7}", HostStatus::Offline),
            ],
        };
        let stats = SelfStats { version: "9.9.9", ws_clients: 3, ..SelfStats::default() };
        let text = render(Some(&snapshot), &stats);
        assert_eq!(lines_of(&text, "monserv_poll_rounds_total"), ["monserv_poll_rounds_total 42"]);
        assert_eq!(lines_of(&text, "monserv_websocket_clients"), ["monserv_websocket_clients 3"]);
        assert_eq!(
            lines_of(&text, "monserv_up"),
            [
                r#"monserv_up{target="local",hostname="gw-01"} 1"#,
                r#"monserv_up{target="ssh://scada:***@10.0.0.5:22",hostname="plc\n\"7\"\\�"} 0"#,
            ]
        );
        assert_eq!(
            lines_of(&text, "monserv_memory_used_ratio"),
            [r#"monserv_memory_used_ratio{target="local",hostname="gw-01"} 0.25"#],
            "an offline target's last values are not exported as current"
        );
        assert_eq!(
            lines_of(&text, "monserv_memory_total_bytes"),
            [r#"monserv_memory_total_bytes{target="local",hostname="gw-01"} 8589934592"#]
        );
        assert_eq!(
            lines_of(&text, "monserv_disk_used_ratio"),
            [
                r#"monserv_disk_used_ratio{target="local",hostname="gw-01",mountpoint="/var/\"log\"",device="/dev/sda1",fstype="ext4"} 0.125"#
            ]
        );
        assert_eq!(lines_of(&text, "monserv_target_consecutive_failures").len(), 2);
        assert_eq!(
            lines_of(&text, "monserv_last_success_timestamp_seconds")[0],
            r#"monserv_last_success_timestamp_seconds{target="local",hostname="gw-01"} 1764676800"#
        );
        assert_eq!(
            lines_of(&text, "monserv_poll_duration_seconds")[0],
            r#"monserv_poll_duration_seconds{target="local",hostname="gw-01"} 0.25"#
        );
        // Every family is announced once, before its samples, and never split.
        let mut seen = Vec::new();
        let mut current = "";
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(!seen.contains(&name.to_string()), "{name} announced twice");
                seen.push(name.to_string());
                current = name;
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert_eq!(name, current, "{line} outside its family");
            }
        }
    }

    #[test]
    fn values_are_written_as_the_format_reads_them() {
        let mut out = String::new();
        for v in [0.0, 1.0, -2.0, 0.5, 1e20, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            write_value(&mut out, v);
            out.push(' ');
        }
        assert_eq!(out, "0 1 -2 0.5 100000000000000000000 NaN +Inf -Inf ");
        assert_eq!(render(None, &SelfStats::default()).matches("monserv_up{").count(), 0);
    }
}
