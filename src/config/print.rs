//! `monserv --print-config`: the effective configuration as TOML, secrets masked.
//! What is printed loads again (with real secrets put back).

use serde::Serialize;

use super::HostKeyPolicy;
use super::{Config, Thresholds, WsTimings};

impl Config {
    /// The effective configuration as TOML, secrets masked (`--print-config`).
    pub fn to_masked_toml(&self) -> String {
        #[derive(Serialize)]
        struct Printable<'a> {
            listen: String,
            port: u16,
            poll_interval_seconds: f64,
            host_timeout_seconds: f64,
            top_processes: usize,
            max_output_bytes: usize,
            max_clients: usize,
            max_clients_per_ip: usize,
            allowed_origins: Vec<String>,
            allowed_hosts: Vec<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            auth_token: Option<&'static str>,
            generate_auth_token: bool,
            targets: Vec<String>,
            state_dir: String,
            known_hosts: String,
            host_key_policy: HostKeyPolicy,
            include_fstypes: &'a [String],
            reconnect_max_seconds: f64,
            thresholds: Thresholds,
            websocket: WsTimings,
            http: super::HttpTimings,
            #[serde(skip_serializing_if = "Option::is_none")]
            tls: Option<toml::Table>,
            rules: super::rules::PrintRules,
            notify: toml::Table,
            export: toml::Table,
        }
        let (tls, allowed_origins, allowed_hosts) = self.perimeter.printable();
        let p = Printable {
            max_clients_per_ip: self.perimeter.max_clients_per_ip,
            allowed_origins,
            allowed_hosts,
            generate_auth_token: self.perimeter.generate_auth_token,
            http: self.perimeter.http,
            tls,
            rules: self.rules.printable(),
            notify: self.notify.printable(),
            export: self.export.printable(),
            websocket: self.websocket,
            listen: self.listen.ip().to_string(),
            port: self.listen.port(),
            poll_interval_seconds: self.poll_interval.as_secs_f64(),
            host_timeout_seconds: self.host_timeout.as_secs_f64(),
            top_processes: self.top_processes,
            max_output_bytes: self.max_output_bytes,
            max_clients: self.max_clients,
            auth_token: self.auth_token.as_ref().map(|_| "***"),
            targets: self.targets.iter().map(|t| t.key.clone()).collect(),
            state_dir: self.state_dir.display().to_string(),
            known_hosts: self.known_hosts.display().to_string(),
            host_key_policy: self.host_key_policy,
            include_fstypes: &self.include_fstypes,
            reconnect_max_seconds: self.reconnect_max.as_secs_f64(),
            thresholds: self.thresholds,
        };
        toml::to_string(&p).unwrap_or_else(|e| format!("# cannot print config: {e}\n"))
    }
}
