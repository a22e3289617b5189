//! The network perimeter: TLS serving, which browsers and names may talk to us,
//! per-address limits and timeouts (issue #10; SECURITY.md explains each choice).
//!
//! TOML keys beside `max_clients`: `max_clients_per_ip`, `allowed_origins`,
//! `allowed_hosts`, `generate_auth_token`; tables `[tls]` and `[http]`. Environment:
//! `TLS_CERT_FILE`, `TLS_KEY_FILE`, `TLS_CLIENT_CA_FILE`, `ALLOWED_ORIGINS`,
//! `ALLOWED_HOSTS` (comma-separated), `MAX_CLIENTS_PER_IP`. systemd credentials
//! `tls_cert`, `tls_key`, `tls_client_ca` name files read (and watched) in place.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Env;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TlsFile {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpTimings {
    /// Keep-alive idle time, and the time a request's headers may take.
    pub idle_timeout_seconds: f64,
    /// A write that makes no progress for this long ends the connection.
    pub write_timeout_seconds: f64,
    /// Wrong tokens from one address (IPv6: one /64) per minute before it gets 429.
    pub auth_failures_per_minute: u32,
}

impl Default for HttpTimings {
    fn default() -> Self {
        HttpTimings { idle_timeout_seconds: 10.0, write_timeout_seconds: 10.0, auth_failures_per_minute: 10 }
    }
}

impl HttpTimings {
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.idle_timeout_seconds)
    }
    pub fn write_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.write_timeout_seconds)
    }
}

/// Certificate and key (PEM) for `https://` and `wss://`, re-read when they change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// When set, clients must present a certificate signed by one of these CAs (mTLS).
    pub client_ca_file: Option<PathBuf>,
}

/// Which `Origin` headers are accepted besides our own origin.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Origins {
    /// Same origin only (and requests without `Origin`).
    #[default]
    SameOnly,
    /// These too, normalized (`scheme://host[:port]`, default port dropped, or `null`).
    List(Vec<String>),
    /// `*`: any origin (the Go prototype's behaviour; not for production).
    Any,
}

/// Which `Host` names are accepted besides IP literals, localhost and our own names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Hosts {
    #[default]
    Builtin,
    /// Lowercase names; `*.example.com` matches any name under example.com.
    List(Vec<String>),
    /// `*`: any name (no DNS-rebinding defence).
    Any,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Perimeter {
    pub tls: Option<ServeTls>,
    pub allowed_origins: Origins,
    pub allowed_hosts: Hosts,
    pub max_clients_per_ip: usize,
    pub http: HttpTimings,
    /// With no token configured, create one in `<state_dir>/auth_token` (the appliance).
    pub generate_auth_token: bool,
}

pub(super) struct PerimeterFile {
    pub tls: Option<TlsFile>,
    pub allowed_origins: Option<Vec<String>>,
    pub allowed_hosts: Option<Vec<String>>,
    pub max_clients_per_ip: Option<usize>,
    pub http: Option<HttpTimings>,
    pub generate_auth_token: Option<bool>,
}

pub const DEFAULT_MAX_CLIENTS_PER_IP: usize = 64;

fn list(env: &dyn Env, name: &str) -> Option<Vec<String>> {
    env.get(name).map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
}

/// `scheme://host[:port]` with the scheme's default port dropped, lowercase; `null`
/// stays `null`. None when `text` is not an origin.
pub fn normalize_origin(text: &str) -> Option<String> {
    let text = text.trim().to_ascii_lowercase();
    if text == "null" {
        return Some(text);
    }
    let (scheme, rest) = text.split_once("://")?;
    let default_port = match scheme {
        "http" => "80",
        "https" => "443",
        _ => return None,
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    let (host, port) = split_host_port(authority)?;
    match port {
        None => Some(format!("{scheme}://{host}")),
        Some(p) if p == default_port => Some(format!("{scheme}://{host}")),
        Some(p) => Some(format!("{scheme}://{host}:{p}")),
    }
}

/// `host[:port]` or `[v6][:port]` -> (host, port). The host keeps its brackets.
pub fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (h, rest) = authority.split_at(end + 1);
        match rest.strip_prefix(':') {
            Some(p) => (h, Some(p)),
            None if rest.is_empty() => (h, None),
            None => return None,
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() || port.is_some_and(|p| p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    Some((host, port))
}

fn valid_host_pattern(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        && !name.starts_with('.')
}

impl Perimeter {
    pub(super) fn resolve(
        f: PerimeterFile,
        env: &dyn Env,
        max_clients: usize,
        credential_path: &dyn Fn(&str) -> Option<PathBuf>,
    ) -> Result<Perimeter, String> {
        let file_tls = f.tls.unwrap_or_default();
        let pick = |env_name: &str, cred: &str, file: Option<PathBuf>| {
            env.get(env_name).map(PathBuf::from).or_else(|| credential_path(cred)).or(file)
        };
        let cert = pick("TLS_CERT_FILE", "tls_cert", file_tls.cert_file);
        let key = pick("TLS_KEY_FILE", "tls_key", file_tls.key_file);
        let client_ca = pick("TLS_CLIENT_CA_FILE", "tls_client_ca", file_tls.client_ca_file);
        let tls = match (cert, key) {
            (None, None) if client_ca.is_some() => {
                return Err("tls.client_ca_file needs tls.cert_file and tls.key_file".into())
            }
            (None, None) => None,
            (Some(_), None) => return Err("tls.cert_file is set but tls.key_file is not (or TLS_KEY_FILE)".into()),
            (None, Some(_)) => return Err("tls.key_file is set but tls.cert_file is not (or TLS_CERT_FILE)".into()),
            (Some(cert_file), Some(key_file)) => Some(ServeTls { cert_file, key_file, client_ca_file: client_ca }),
        };

        let origins = list(env, "ALLOWED_ORIGINS").or(f.allowed_origins).unwrap_or_default();
        let allowed_origins = if origins.iter().any(|o| o.trim() == "*") {
            Origins::Any
        } else if origins.is_empty() {
            Origins::SameOnly
        } else {
            let mut out = Vec::with_capacity(origins.len());
            for o in &origins {
                let n = normalize_origin(o).ok_or_else(|| {
                    format!("allowed_origins: {o:?} is not an origin (\"https://name[:port]\", \"null\" or \"*\")")
                })?;
                out.push(n);
            }
            Origins::List(out)
        };

        let hosts = list(env, "ALLOWED_HOSTS").or(f.allowed_hosts).unwrap_or_default();
        let allowed_hosts = if hosts.iter().any(|h| h.trim() == "*") {
            Hosts::Any
        } else if hosts.is_empty() {
            Hosts::Builtin
        } else {
            let mut out = Vec::with_capacity(hosts.len());
            for h in &hosts {
                let name = h.trim().trim_end_matches('.').to_ascii_lowercase();
                if !valid_host_pattern(&name) {
                    return Err(format!("allowed_hosts: {h:?} is not a host name (e.g. \"gw1.plant.example\")"));
                }
                out.push(name);
            }
            Hosts::List(out)
        };

        let per_ip = match env.get("MAX_CLIENTS_PER_IP") {
            Some(v) => v
                .trim()
                .parse::<usize>()
                .map_err(|_| format!("environment MAX_CLIENTS_PER_IP={v:?} is not a number"))?,
            None => f.max_clients_per_ip.unwrap_or(DEFAULT_MAX_CLIENTS_PER_IP.min(max_clients)),
        };
        if per_ip == 0 || per_ip > max_clients {
            return Err(format!("max_clients_per_ip = {per_ip}: must be between 1 and max_clients ({max_clients})"));
        }

        let http = f.http.unwrap_or_default();
        for (key, v) in
            [("idle_timeout_seconds", http.idle_timeout_seconds), ("write_timeout_seconds", http.write_timeout_seconds)]
        {
            if !(v.is_finite() && (0.5..=3600.0).contains(&v)) {
                return Err(format!("http.{key} = {v}: must be between 0.5 and 3600"));
            }
        }
        if http.auth_failures_per_minute == 0 {
            return Err("http.auth_failures_per_minute = 0: must be at least 1".into());
        }

        Ok(Perimeter {
            tls,
            allowed_origins,
            allowed_hosts,
            max_clients_per_ip: per_ip,
            http,
            generate_auth_token: f.generate_auth_token.unwrap_or(false),
        })
    }

    /// For `--print-config`: loads again as it is printed.
    pub(super) fn printable(&self) -> (Option<toml::Table>, Vec<String>, Vec<String>) {
        let tls = self.tls.as_ref().map(|t| {
            let mut table = toml::Table::new();
            table.insert("cert_file".into(), t.cert_file.display().to_string().into());
            table.insert("key_file".into(), t.key_file.display().to_string().into());
            if let Some(ca) = &t.client_ca_file {
                table.insert("client_ca_file".into(), ca.display().to_string().into());
            }
            table
        });
        let origins = match &self.allowed_origins {
            Origins::SameOnly => vec![],
            Origins::List(l) => l.clone(),
            Origins::Any => vec!["*".into()],
        };
        let hosts = match &self.allowed_hosts {
            Hosts::Builtin => vec![],
            Hosts::List(l) => l.clone(),
            Hosts::Any => vec!["*".into()],
        };
        (tls, origins, hosts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_normalize() {
        assert_eq!(normalize_origin("HTTPS://Scada.Example:443/").as_deref(), Some("https://scada.example"));
        assert_eq!(normalize_origin("http://127.0.0.1:8080").as_deref(), Some("http://127.0.0.1:8080"));
        assert_eq!(normalize_origin("http://[::1]:80").as_deref(), Some("http://[::1]"));
        assert_eq!(normalize_origin("null").as_deref(), Some("null"));
        for bad in ["ftp://x", "https://", "https://a/b", "https://a:x", "a.example", "https://u@a", "http://a:123456"]
        {
            assert_eq!(normalize_origin(bad), None, "{bad}");
        }
    }

    fn resolve(origins: &[&str], hosts: &[&str], per_ip: Option<usize>) -> Result<Perimeter, String> {
        let f = PerimeterFile {
            tls: None,
            allowed_origins: Some(origins.iter().map(|s| s.to_string()).collect()),
            allowed_hosts: Some(hosts.iter().map(|s| s.to_string()).collect()),
            max_clients_per_ip: per_ip,
            http: None,
            generate_auth_token: None,
        };
        Perimeter::resolve(f, &[("X", "")], 100, &|_| None)
    }

    #[test]
    fn lists_and_limits_are_checked() {
        let p = resolve(&["https://a.example"], &["GW.plant.example.", "*.plant.example"], None).unwrap();
        assert_eq!(p.allowed_origins, Origins::List(vec!["https://a.example".into()]));
        assert_eq!(p.allowed_hosts, Hosts::List(vec!["gw.plant.example".into(), "*.plant.example".into()]));
        assert_eq!(p.max_clients_per_ip, 64);
        assert_eq!(resolve(&["*"], &["*"], None).unwrap().allowed_origins, Origins::Any);
        assert!(resolve(&["https://a/b"], &[], None).unwrap_err().contains("allowed_origins"));
        assert!(resolve(&[], &["a b"], None).unwrap_err().contains("allowed_hosts"));
        assert!(resolve(&[], &[], Some(0)).unwrap_err().contains("max_clients_per_ip"));
        assert!(resolve(&[], &[], Some(101)).unwrap_err().contains("max_clients_per_ip"));
    }
}
