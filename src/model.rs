//! Wire types: the JSON that `/ws` clients and the REST API see.
//!
//! Field names and JSON types follow `PROTOCOL.md` exactly; existing MonServ clients
//! parse these with `JSON.parse` and index them by name, so a rename here is a
//! breaking change. Additive fields (`cpu`, `status`, `error`, `lastUpdateUtc`) are
//! documented in the README. [`Snapshot`] and [`TargetReport`] are one round's result as
//! every later stage (rules, hub, REST) sees it, so they live here, downstream of none.

use serde::{Deserialize, Serialize};

/// Metrics of one target at one poll round (`ServerMetrics` in PROTOCOL.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerMetrics {
    pub hostname: String,
    pub uptime_seconds: u64,
    pub memory: Memory,
    pub disks: Vec<Disk>,
    pub top_procs_by_mem: Vec<Process>,
    /// When these metrics were collected (RFC 3339, UTC, `Z`). For an offline host this
    /// is the time of the last successful collection, so clients can see staleness.
    pub generated_at_utc: String,
    /// Additive: CPU usage between this poll and the previous one.
    #[serde(default)]
    pub cpu: Cpu,
    /// Additive: `online` when this round's collection succeeded, else `offline`.
    #[serde(default)]
    pub status: HostStatus,
    /// Additive: why the host is offline (never contains a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HostStatus {
    /// Also what a snapshot without `status` (from the Go MonServ) means.
    #[default]
    Online,
    Offline,
}

impl HostStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HostStatus::Online => "online",
            HostStatus::Offline => "offline",
        }
    }
}

/// Memory in bytes. `free` is MemAvailable (what a new program could get without
/// swapping), not MemFree; `used = total - free`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Memory {
    pub total: u64,
    pub used: u64,
    pub free: u64,
    pub used_percent: f64,
}

/// One real filesystem. `free` is what an unprivileged user may still write
/// (f_bavail), so `usedPercent` matches `df`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Disk {
    pub device: String,
    pub mountpoint: String,
    pub fstype: String,
    pub total: u64,
    pub used: u64,
    pub free: u64,
    pub used_percent: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Process {
    pub pid: u32,
    pub name: String,
    pub username: String,
    #[serde(rename = "rssBytes")]
    pub rss_bytes: u64,
    #[serde(rename = "percentRAM")]
    pub percent_ram: f64,
    pub cmdline: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Cpu {
    pub cores: u32,
    pub used_percent: f64,
    pub model_name: String,
}

/// `alert_type` of an `alert` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertKind {
    Alert,
    Recovery,
}

/// An `alert` message as sent on `/ws`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertMessage {
    /// Always `"alert"`.
    #[serde(rename = "type")]
    pub message_type: AlertTag,
    pub alert_type: AlertKind,
    pub subject: String,
    pub message: String,
}

/// The constant `"type":"alert"` tag, as a type so it cannot be misspelt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertTag {
    Alert,
}

impl AlertMessage {
    pub fn new(kind: AlertKind, subject: impl Into<String>, message: impl Into<String>) -> Self {
        AlertMessage {
            message_type: AlertTag::Alert,
            alert_type: kind,
            subject: subject.into(),
            message: message.into(),
        }
    }
}

// ---- What one poll round produced: shared by the hub, the rules and the API. ----

/// What the rest of monserv knows of one target after a round.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TargetReport {
    pub url: String,
    pub status: HostStatus,
    /// Latest metrics; for an offline host the last good ones with `status` and
    /// `error` set; for a host never reached, zeros (so that clients which index
    /// `memory.usedPercent` keep working) and `collected == false`.
    pub metrics: ServerMetrics,
    #[serde(skip)]
    pub collected: bool,
    pub last_update: Option<String>,
    pub consecutive_failures: u32,
    pub last_error_kind: Option<&'static str>,
    /// How long the last poll took (answered, failed or timed out); none before the first.
    #[serde(skip)]
    pub poll_duration: Option<std::time::Duration>,
    /// When the target last answered a poll.
    #[serde(skip)]
    pub last_success: Option<std::time::SystemTime>,
    /// Answers to the facts rules declared (empty when offline or none asked).
    #[serde(skip)]
    pub facts: std::sync::Arc<crate::facts::Answers>,
}

/// The result of one round, in configuration order.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub round: u64,
    /// When the round ended, milliseconds since the Unix epoch (the history keeps
    /// every round apart even when two end within the same second).
    pub unix_ms: u64,
    pub targets: Vec<TargetReport>,
}

impl Snapshot {
    /// The `data` object of `metrics_update`: `{ key: ServerMetrics, ... }` in
    /// configuration order.
    pub fn data_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1024 * self.targets.len() + 2);
        out.push(b'{');
        for (i, t) in self.targets.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            // Serializing a String and a plain struct cannot fail.
            let _ = serde_json::to_writer(&mut out, &t.url);
            out.push(b':');
            let _ = serde_json::to_writer(&mut out, &t.metrics);
        }
        out.push(b'}');
        out
    }
}

/// Format a wall-clock time the way PROTOCOL.md wants it: RFC 3339, UTC, whole
/// seconds, `Z` suffix.
pub fn rfc3339_utc(time: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

/// Characters that must never reach a terminal, a log line or a mail header raw:
/// C0 and C1 controls, DEL, and the bidirectional overrides that make text read
/// differently from what it is. Host-supplied text is cleaned of them in the parse
/// layer; rule-supplied text is escaped in `rules::output`.
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Round to one decimal, as the protocol shows percentages.
pub fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

/// Round to two decimals (process `percentRAM`, as in the original document).
pub fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// FNV-1a: a stable 64-bit hash (std's hasher is not guaranteed stable across builds,
/// and what it names (a cut key, a webhook fingerprint, a Kafka partition) must not
/// change when monserv is upgraded).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_uses_protocol_field_names() {
        let p = Process {
            pid: 1234,
            name: "postgres".into(),
            username: "postgres".into(),
            rss_bytes: 536_870_912,
            percent_ram: 6.25,
            cmdline: "postgres -D /data".into(),
        };
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["rssBytes"], 536_870_912u64);
        assert_eq!(v["percentRAM"], 6.25);
        assert!(v.get("rss_bytes").is_none());
    }

    #[test]
    fn alert_message_shape() {
        let m = AlertMessage::new(AlertKind::Recovery, "[RECOVERED] h memory", "Memory back to 65.0%");
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"type":"alert","alert_type":"recovery","subject":"[RECOVERED] h memory","message":"Memory back to 65.0%"}"#
        );
    }

    #[test]
    fn timestamps_are_utc_with_z() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_761_739_200);
        assert_eq!(rfc3339_utc(t), "2025-10-29T12:00:00Z");
    }
}
