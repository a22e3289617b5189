//! `[export]`: feeding the fleet's engines. `external_labels` (e.g. `site`,
//! `gateway`) go on every pushed series; each `[[export.remote_write]]` is a
//! Prometheus remote_write 1.0 receiver (Prometheus, VictoriaMetrics, Mimir, ...).
//!
//! ```toml
//! [export]
//! external_labels = { site = "north-plant", gateway = "gw-07" }
//! [[export.remote_write]]
//! url = "https://vm.plant.example/api/v1/write"
//! bearer_token = "..."            # or headers = { Authorization = "Basic ..." }
//! queue_max_bytes = 67108864      # on-disk backlog while the receiver is away
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::url::{parse_http_url, HttpUrl};
use super::Secret;
use crate::tls::TlsOptions;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ExportFile {
    #[serde(default)]
    external_labels: BTreeMap<String, String>,
    #[serde(default)]
    remote_write: Vec<RemoteWriteFile>,
    sparkplug: Option<SparkplugFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SparkplugFile {
    broker: String,
    group_id: String,
    edge_node_id: Option<String>,
    username: Option<String>,
    password: Option<String>,
    ca_file: Option<PathBuf>,
    #[serde(default)]
    danger_accept_invalid_certs: bool,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    primary_host_id: Option<String>,
    keep_alive_seconds: Option<u16>,
    history_max_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoteWriteFile {
    url: String,
    bearer_token: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    ca_file: Option<PathBuf>,
    #[serde(default)]
    danger_accept_invalid_certs: bool,
    queue_max_bytes: Option<u64>,
    flush_interval_seconds: Option<f64>,
    max_samples_per_send: Option<usize>,
    max_sends_per_second: Option<f64>,
}

#[derive(Debug, Clone, Default)]
pub struct ExportConfig {
    /// Sorted by name; validated as Prometheus label names.
    pub external_labels: Vec<(String, String)>,
    pub remote_write: Vec<RemoteWrite>,
    pub sparkplug: Option<Sparkplug>,
}

/// `[export.sparkplug]`: monserv as a Sparkplug B edge node on an MQTT broker.
#[derive(Debug, Clone)]
pub struct Sparkplug {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub group_id: String,
    pub edge_node_id: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub tls_options: TlsOptions,
    /// PEM files of a client certificate and its key (mutual TLS).
    pub client_identity: Option<(PathBuf, PathBuf)>,
    pub primary_host_id: Option<String>,
    pub keep_alive: Duration,
    /// Rounds kept (estimated bytes) while they cannot be published.
    pub history_max_bytes: u64,
}

/// A Sparkplug id (group, edge node, host): a topic level, so no `/`, `+` or `#`.
fn valid_sparkplug_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && !id.chars().any(|c| matches!(c, '/' | '+' | '#') || c.is_control())
}

fn parse_broker(url: &str) -> Result<(bool, String, u16), String> {
    let (tls, rest) = match url.split_once("://") {
        Some(("mqtt" | "tcp", rest)) => (false, rest),
        Some(("mqtts" | "ssl", rest)) => (true, rest),
        _ => return Err(format!("{url:?}: use mqtt://host[:port] or mqtts://host[:port]")),
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains('@') || rest.contains('/') {
        return Err(format!("{url:?}: no credentials or path in the broker URL (username, password are settings)"));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') && p.chars().all(|c| c.is_ascii_digit()) => {
            (h, p.parse::<u16>().map_err(|_| format!("{url:?}: bad port"))?)
        }
        _ => (rest, if tls { 8883 } else { 1883 }),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{url:?}: no host"));
    }
    Ok((tls, host.to_string(), port))
}

impl Sparkplug {
    fn resolve(f: SparkplugFile) -> Result<Sparkplug, String> {
        let at = "export.sparkplug";
        let (tls, host, port) = parse_broker(&f.broker).map_err(|e| format!("{at}.broker: {e}"))?;
        if !valid_sparkplug_id(&f.group_id) {
            return Err(format!("{at}.group_id: {:?} must be non-empty, without /, + or #", f.group_id));
        }
        let edge_node_id = match f.edge_node_id {
            Some(id) => id,
            None => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "monserv".into()),
        };
        if !valid_sparkplug_id(&edge_node_id) {
            return Err(format!("{at}.edge_node_id: {edge_node_id:?} must be non-empty, without /, + or #"));
        }
        if let Some(id) = &f.primary_host_id {
            if !valid_sparkplug_id(id) {
                return Err(format!("{at}.primary_host_id: {id:?} must be non-empty, without /, + or #"));
            }
        }
        let client_identity = match (f.client_cert, f.client_key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => return Err(format!("{at}: client_cert and client_key go together")),
        };
        if client_identity.is_some() && !tls {
            return Err(format!("{at}: a client certificate needs an mqtts:// broker"));
        }
        let keep_alive = f.keep_alive_seconds.unwrap_or(30);
        if !(5..=3600).contains(&keep_alive) {
            return Err(format!("{at}.keep_alive_seconds: between 5 and 3600"));
        }
        let history_max_bytes = f.history_max_bytes.unwrap_or(16 << 20);
        if !(64 << 10..=1 << 30).contains(&history_max_bytes) {
            return Err(format!("{at}.history_max_bytes: between 64 KiB and 1 GiB"));
        }
        Ok(Sparkplug {
            tls,
            host,
            port,
            group_id: f.group_id,
            edge_node_id,
            username: f.username,
            password: f.password.map(Secret::new),
            tls_options: TlsOptions { ca_file: f.ca_file, danger_accept_invalid_certs: f.danger_accept_invalid_certs },
            client_identity,
            primary_host_id: f.primary_host_id,
            keep_alive: Duration::from_secs(u64::from(keep_alive)),
            history_max_bytes,
        })
    }
}

#[derive(Debug, Clone)]
pub struct RemoteWrite {
    pub url: HttpUrl,
    pub headers: Vec<(String, Secret)>,
    pub tls: TlsOptions,
    /// The on-disk backlog's cap; the oldest rounds go first (counted).
    pub queue_max_bytes: u64,
    /// How often a backlog held in memory is written to flash (one transaction).
    pub flush_interval: Duration,
    pub max_samples_per_send: usize,
    /// While a backlog is replayed.
    pub max_sends_per_second: f64,
}

impl ExportConfig {
    /// `[export]` as `--print-config` shows it: loads again, secrets masked.
    pub(super) fn printable(&self) -> toml::Table {
        let mut t = toml::Table::new();
        let masked = || toml::Value::String("***".into());
        if !self.external_labels.is_empty() {
            let labels: toml::Table =
                self.external_labels.iter().map(|(k, v)| (k.clone(), toml::Value::String(v.clone()))).collect();
            t.insert("external_labels".into(), labels.into());
        }
        let writers: Vec<toml::Value> = self
            .remote_write
            .iter()
            .map(|rw| {
                let mut w = toml::Table::new();
                w.insert("url".into(), rw.url.to_string().into());
                if !rw.headers.is_empty() {
                    // The bearer token travels as an Authorization header: shown masked.
                    let headers: toml::Table = rw.headers.iter().map(|(k, _)| (k.clone(), masked())).collect();
                    w.insert("headers".into(), headers.into());
                }
                if let Some(ca) = &rw.tls.ca_file {
                    w.insert("ca_file".into(), ca.display().to_string().into());
                }
                if rw.tls.danger_accept_invalid_certs {
                    w.insert("danger_accept_invalid_certs".into(), true.into());
                }
                w.insert("queue_max_bytes".into(), (rw.queue_max_bytes.min(i64::MAX as u64) as i64).into());
                w.insert("flush_interval_seconds".into(), rw.flush_interval.as_secs_f64().into());
                w.insert("max_samples_per_send".into(), (rw.max_samples_per_send as i64).into());
                w.insert("max_sends_per_second".into(), rw.max_sends_per_second.into());
                w.into()
            })
            .collect();
        if !writers.is_empty() {
            t.insert("remote_write".into(), writers.into());
        }
        if let Some(sp) = &self.sparkplug {
            let mut s = toml::Table::new();
            let host = if sp.host.contains(':') { format!("[{}]", sp.host) } else { sp.host.clone() };
            s.insert("broker".into(), format!("{}://{host}:{}", if sp.tls { "mqtts" } else { "mqtt" }, sp.port).into());
            s.insert("group_id".into(), sp.group_id.clone().into());
            s.insert("edge_node_id".into(), sp.edge_node_id.clone().into());
            if let Some(u) = &sp.username {
                s.insert("username".into(), u.clone().into());
            }
            if sp.password.is_some() {
                s.insert("password".into(), masked());
            }
            if let Some(ca) = &sp.tls_options.ca_file {
                s.insert("ca_file".into(), ca.display().to_string().into());
            }
            if sp.tls_options.danger_accept_invalid_certs {
                s.insert("danger_accept_invalid_certs".into(), true.into());
            }
            if let Some((cert, key)) = &sp.client_identity {
                s.insert("client_cert".into(), cert.display().to_string().into());
                s.insert("client_key".into(), key.display().to_string().into());
            }
            if let Some(id) = &sp.primary_host_id {
                s.insert("primary_host_id".into(), id.clone().into());
            }
            s.insert("keep_alive_seconds".into(), (sp.keep_alive.as_secs() as i64).into());
            s.insert("history_max_bytes".into(), (sp.history_max_bytes as i64).into());
            t.insert("sparkplug".into(), s.into());
        }
        t
    }
}

/// A Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`, not reserved (`__` prefix).
pub fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

impl ExportConfig {
    pub(super) fn resolve(f: ExportFile) -> Result<ExportConfig, String> {
        let ours = ["target", "hostname", "mountpoint", "device", "fstype", "rule", "sink", "version"];
        for (name, value) in &f.external_labels {
            if !valid_label_name(name) || ours.contains(&name.as_str()) {
                return Err(format!(
                    "export.external_labels: {name:?} is not a usable label name (letters, digits, _; not __*; not one of monserv's own: {})",
                    ours.join(", ")
                ));
            }
            if value.is_empty() || value.chars().any(char::is_control) {
                return Err(format!("export.external_labels.{name}: the value must be non-empty text"));
            }
        }
        let mut remote_write = Vec::new();
        for (i, rw) in f.remote_write.into_iter().enumerate() {
            let at = format!("export.remote_write[{i}]");
            let url = parse_http_url(&rw.url).map_err(|e| format!("{at}.url: {e}"))?;
            let mut headers = super::notify::secret_header_list(&at, rw.headers)?;
            if let Some(token) = rw.bearer_token {
                if token.is_empty() || token.chars().any(|c| c.is_control() || c.is_whitespace()) {
                    return Err(format!("{at}.bearer_token: must be one word of printable text"));
                }
                headers.push(("Authorization".into(), Secret::new(format!("Bearer {token}"))));
            }
            let queue_max_bytes = rw.queue_max_bytes.unwrap_or(64 << 20);
            if !(1 << 20..=16 << 30).contains(&queue_max_bytes) {
                return Err(format!("{at}.queue_max_bytes: between 1 MiB and 16 GiB"));
            }
            let flush = rw.flush_interval_seconds.unwrap_or(30.0);
            if !(0.1..=3600.0).contains(&flush) {
                return Err(format!("{at}.flush_interval_seconds: between 0.1 and 3600"));
            }
            let max_samples_per_send = rw.max_samples_per_send.unwrap_or(5000);
            if !(100..=100_000).contains(&max_samples_per_send) {
                return Err(format!("{at}.max_samples_per_send: between 100 and 100000"));
            }
            let max_sends_per_second = rw.max_sends_per_second.unwrap_or(10.0);
            if !(0.1..=1000.0).contains(&max_sends_per_second) {
                return Err(format!("{at}.max_sends_per_second: between 0.1 and 1000"));
            }
            remote_write.push(RemoteWrite {
                url,
                headers,
                tls: TlsOptions { ca_file: rw.ca_file, danger_accept_invalid_certs: rw.danger_accept_invalid_certs },
                queue_max_bytes,
                flush_interval: Duration::from_secs_f64(flush),
                max_samples_per_send,
                max_sends_per_second,
            });
        }
        let sparkplug = f.sparkplug.map(Sparkplug::resolve).transpose()?;
        Ok(ExportConfig { external_labels: f.external_labels.into_iter().collect(), remote_write, sparkplug })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(text: &str) -> Result<ExportConfig, String> {
        ExportConfig::resolve(toml::from_str(text).map_err(|e| e.to_string())?)
    }

    #[test]
    fn remote_write_settings_are_checked() {
        let c = resolve(
            "external_labels = { site = \"north\", gateway = \"gw-07\" }\n[[remote_write]]\nurl = \"http://127.0.0.1:8428/api/v1/write\"\nbearer_token = \"t0k\"\n",
        )
        .unwrap();
        assert_eq!(c.external_labels, [("gateway".into(), "gw-07".into()), ("site".into(), "north".into())]);
        let rw = &c.remote_write[0];
        assert_eq!((rw.url.port, rw.url.path.as_str()), (8428, "/api/v1/write"));
        assert_eq!(rw.headers[0].1.expose(), "Bearer t0k");
        assert_eq!((rw.queue_max_bytes, rw.max_samples_per_send), (64 << 20, 5000));
        let e = resolve("external_labels = { \"__x\" = \"a\" }").unwrap_err();
        assert!(e.starts_with("export.external_labels: \"__x\" is not a usable label name"), "{e}");
        let e = resolve("external_labels = { hostname = \"a\" }").unwrap_err();
        assert!(e.contains("monserv's own"), "{e}");
        let e = resolve("[[remote_write]]\nurl = \"ftp://x\"\n").unwrap_err();
        assert!(e.starts_with("export.remote_write[0].url: "), "{e}");
        let e = resolve("[[remote_write]]\nurl = \"http://x/\"\nqueue_max_bytes = 5\n").unwrap_err();
        assert_eq!(e, "export.remote_write[0].queue_max_bytes: between 1 MiB and 16 GiB");
        assert!(resolve("[[remote_write]]\nurl = \"http://x/\"\nqueue = 5\n").is_err(), "unknown keys refused");
    }

    #[test]
    fn printed_export_settings_load_again_with_secrets_masked() {
        let text = "external_labels = { site = \"north\" }\n[[remote_write]]\nurl = \"https://vm.plant:8428/api/v1/write\"\nbearer_token = \"t0k\"\n\
                    [sparkplug]\nbroker = \"mqtts://[::1]:8884\"\ngroup_id = \"g\"\nedge_node_id = \"n\"\nusername = \"u\"\npassword = \"p4ss\"\n";
        let printed = toml::to_string(&resolve(text).unwrap().printable()).unwrap();
        assert!(!printed.contains("t0k") && !printed.contains("p4ss"), "{printed}");
        let again = resolve(&printed.replace("Authorization = \"***\"", "Authorization = \"Bearer t0k\"")).unwrap();
        assert_eq!(again.remote_write[0].url.to_string(), "https://vm.plant:8428/api/v1/write");
        let sp = again.sparkplug.unwrap();
        assert_eq!((sp.host.as_str(), sp.port, sp.tls, sp.username.as_deref()), ("::1", 8884, true, Some("u")));
    }

    #[test]
    fn sparkplug_settings_are_checked() {
        let c = resolve(
            "[sparkplug]\nbroker = \"mqtts://broker.plant:8884\"\ngroup_id = \"north\"\nedge_node_id = \"gw-7\"\n",
        )
        .unwrap();
        let s = c.sparkplug.unwrap();
        assert_eq!((s.tls, s.host.as_str(), s.port, s.edge_node_id.as_str()), (true, "broker.plant", 8884, "gw-7"));
        let s = resolve("[sparkplug]\nbroker = \"mqtt://[::1]\"\ngroup_id = \"g\"\n").unwrap().sparkplug.unwrap();
        assert_eq!((s.tls, s.host.as_str(), s.port), (false, "::1", 1883));
        let e = resolve("[sparkplug]\nbroker = \"mqtt://b\"\ngroup_id = \"a/b\"\n").unwrap_err();
        assert_eq!(e, "export.sparkplug.group_id: \"a/b\" must be non-empty, without /, + or #");
        let e = resolve("[sparkplug]\nbroker = \"http://b\"\ngroup_id = \"g\"\n").unwrap_err();
        assert!(e.starts_with("export.sparkplug.broker: "), "{e}");
        let e = resolve("[sparkplug]\nbroker = \"mqtt://u:p@b\"\ngroup_id = \"g\"\n").unwrap_err();
        assert!(e.contains("no credentials"), "{e}");
        let e = resolve("[sparkplug]\nbroker = \"mqtt://b\"\ngroup_id = \"g\"\nclient_cert = \"/c\"\n").unwrap_err();
        assert_eq!(e, "export.sparkplug: client_cert and client_key go together");
    }
}
