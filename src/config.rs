//! Configuration: a TOML file, overridden by the Go MonServ's environment variables.
//!
//! Everything is validated before anything binds or connects; a bad value is one
//! line naming the key and the value (never a password), and the binary exits with
//! [`EXIT_CONFIG`] so systemd's `RestartPreventExitStatus=` stops a restart loop.
//! With nothing configured, monserv watches the machine it runs on.

mod export;
mod kafka;
mod notify;
mod perimeter;
mod print;
mod rules;
mod target;
mod url;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use export::{ExportConfig, RemoteWrite, Sparkplug};
pub use kafka::{KafkaJenis, KafkaPayloadDefaults, KafkaSink};
use notify::NotifyFile;
pub use notify::{EmailSink, HttpSink, NotifyConfig, SinkConfig, SinkKind, SmtpTls, TelegramSink};
pub use perimeter::{normalize_origin, split_host_port, Hosts, HttpTimings, Origins, Perimeter, ServeTls};
use rules::RulesFile;
pub use rules::{CompileIn, RuleLimits, RulesConfig};
pub use target::{mask_url, parse_target, SshAuth, SshTarget, Target, TargetError, TargetKind};
pub use url::{parse_http_url, HttpUrl};

/// Exit status for a configuration error (EX_CONFIG from sysexits.h).
pub const EXIT_CONFIG: i32 = 78;
pub const DEFAULT_PORT: u16 = 18904;

/// A string that must never be shown: `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("config file {path}, line {line}: {message}")]
    Syntax { path: String, line: usize, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// How SSH host keys are trusted (`known_hosts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostKeyPolicy {
    /// Trust on first use, then pin.
    Tofu,
    /// Only keys already in the file.
    Strict,
}

/// Alert thresholds in percent (read and validated now; the rules use them).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    pub memory_percent: f64,
    pub disk_percent: f64,
    pub cpu_percent: f64,
    pub proc_ram_percent: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds { memory_percent: 90.0, disk_percent: 90.0, cpu_percent: 80.0, proc_ram_percent: 90.0 }
    }
}

/// WebSocket keep-alive timings. PROTOCOL.md fixes the defaults; operators behind
/// NAT boxes that drop idle flows sooner may shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WsTimings {
    pub ping_interval_seconds: f64,
    pub read_timeout_seconds: f64,
    pub write_timeout_seconds: f64,
}

impl Default for WsTimings {
    fn default() -> Self {
        WsTimings { ping_interval_seconds: 54.0, read_timeout_seconds: 60.0, write_timeout_seconds: 10.0 }
    }
}

impl WsTimings {
    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs_f64(self.ping_interval_seconds)
    }
    pub fn read_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.read_timeout_seconds)
    }
    pub fn write_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.write_timeout_seconds)
    }
}

/// The file's shape. Every key is optional; unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    port: Option<u16>,
    poll_interval_seconds: Option<f64>,
    host_timeout_seconds: Option<f64>,
    top_processes: Option<usize>,
    history_minutes: Option<u64>,
    max_output_bytes: Option<usize>,
    max_clients: Option<usize>,
    max_clients_per_ip: Option<usize>,
    allowed_origins: Option<Vec<String>>,
    allowed_hosts: Option<Vec<String>>,
    auth_token: Option<String>,
    generate_auth_token: Option<bool>,
    tls: Option<perimeter::TlsFile>,
    http: Option<HttpTimings>,
    targets: Option<Vec<TargetEntry>>,
    identity_file: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    known_hosts: Option<PathBuf>,
    host_key_policy: Option<HostKeyPolicy>,
    include_fstypes: Option<Vec<String>>,
    reconnect_max_seconds: Option<f64>,
    thresholds: Option<Thresholds>,
    websocket: Option<WsTimings>,
    rules: Option<RulesFile>,
    notify: Option<NotifyFile>,
    export: Option<export::ExportFile>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TargetEntry {
    Url(String),
    Table(TargetTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetTable {
    url: String,
    identity_file: Option<PathBuf>,
}

/// The effective, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub poll_interval: Duration,
    /// Per-host deadline for one poll.
    pub host_timeout: Duration,
    pub top_processes: usize,
    /// How far back the in-memory history reaches (rules' queries, the console,
    /// backtests): at most `history::MAX_POINTS` samples per target and series.
    pub history_window: Duration,
    pub max_output_bytes: usize,
    pub max_clients: usize,
    pub auth_token: Option<Secret>,
    pub targets: Vec<Target>,
    pub state_dir: PathBuf,
    pub known_hosts: PathBuf,
    pub host_key_policy: HostKeyPolicy,
    pub include_fstypes: Vec<String>,
    pub reconnect_max: Duration,
    pub thresholds: Thresholds,
    pub websocket: WsTimings,
    pub rules: RulesConfig,
    pub notify: NotifyConfig,
    pub export: ExportConfig,
    pub perimeter: Perimeter,
}

/// Where environment variables come from (the process, or a test's map).
pub trait Env {
    fn get(&self, name: &str) -> Option<String>;
}

pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.trim().is_empty())
    }
}

impl<const N: usize> Env for [(&str, &str); N] {
    fn get(&self, name: &str) -> Option<String> {
        self.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into().replace('\n', " "))
}

fn env_number(env: &dyn Env, name: &str) -> Result<Option<f64>, ConfigError> {
    match env.get(name) {
        None => Ok(None),
        Some(v) => {
            v.trim().parse::<f64>().map(Some).map_err(|_| invalid(format!("environment {name}={v:?} is not a number")))
        }
    }
}

impl Config {
    /// Load the file (if any), apply environment overrides, validate.
    pub fn load(path: Option<&Path>, env: &dyn Env) -> Result<Config, ConfigError> {
        let file = match path {
            None => FileConfig::default(),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| ConfigError::Read { path: p.display().to_string(), reason: e.to_string() })?;
                Self::parse_file(&text, &p.display().to_string())?
            }
        };
        Self::resolve(file, env)
    }

    /// Parse TOML text (used by `load` and by tests).
    pub fn from_toml(text: &str, env: &dyn Env) -> Result<Config, ConfigError> {
        Self::resolve(Self::parse_file(text, "<inline>")?, env)
    }

    fn parse_file(text: &str, path: &str) -> Result<FileConfig, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let message = mask_url(e.message()).replace('\n', " ");
            ConfigError::Syntax { path: path.to_string(), line, message }
        })
    }

    fn resolve(f: FileConfig, env: &dyn Env) -> Result<Config, ConfigError> {
        // Environment first, as the Go MonServ read it; it overrides the file.
        let interval = env_number(env, "POLL_INTERVAL_SECONDS")?.or(f.poll_interval_seconds).unwrap_or(4.0);
        if !(interval.is_finite() && (0.05..=86_400.0).contains(&interval)) {
            return Err(invalid(format!("poll_interval_seconds = {interval}: must be between 0.05 and 86400")));
        }
        let poll_interval = Duration::from_secs_f64(interval);
        let host_timeout = match f.host_timeout_seconds {
            None => poll_interval.min(Duration::from_secs(5)),
            Some(t) if t.is_finite() && t > 0.0 && t <= interval => Duration::from_secs_f64(t),
            Some(t) => {
                return Err(invalid(format!(
                    "host_timeout_seconds = {t}: must be > 0 and at most poll_interval_seconds ({interval})"
                )))
            }
        };

        let port = match env.get("SERVER_PORT") {
            Some(p) => p
                .trim()
                .parse::<u16>()
                .map_err(|_| invalid(format!("environment SERVER_PORT={p:?} is not a port number (0-65535)")))?,
            None => f.port.unwrap_or(DEFAULT_PORT),
        };
        let listen_text = env.get("LISTEN_ADDRESS").or(f.listen).unwrap_or_else(|| "0.0.0.0".into());
        let ip: IpAddr = listen_text.trim().parse().map_err(|_| {
            invalid(format!("listen = {listen_text:?}: not an IP address (e.g. \"0.0.0.0\" or \"127.0.0.1\")"))
        })?;

        let mut thresholds = f.thresholds.unwrap_or_default();
        for (env_name, key, slot) in [
            ("MEM_THRESHOLD_PERCENT", "memory_percent", &mut thresholds.memory_percent),
            ("DISK_THRESHOLD_PERCENT", "disk_percent", &mut thresholds.disk_percent),
            ("CPU_THRESHOLD_PERCENT", "cpu_percent", &mut thresholds.cpu_percent),
            ("PROC_RAM_THRESHOLD_PERCENT", "proc_ram_percent", &mut thresholds.proc_ram_percent),
        ] {
            if let Some(v) = env_number(env, env_name)? {
                *slot = v;
            }
            if !(slot.is_finite() && (0.0..=100.0).contains(slot)) {
                return Err(invalid(format!("thresholds.{key} = {slot} (or {env_name}): must be between 0 and 100")));
            }
        }

        // systemd credentials (LoadCredential=): secrets kept out of the environment
        // and out of monserv.toml. The environment still wins, as everywhere.
        let credential = |name: &str| {
            let dir = env.get("CREDENTIALS_DIRECTORY")?;
            let text = std::fs::read_to_string(Path::new(&dir).join(name)).ok()?;
            Some(text.trim().to_string()).filter(|t| !t.is_empty())
        };
        let identity_file = env.get("SSH_IDENTITY_FILE").map(PathBuf::from).or(f.identity_file);
        let mut targets = Vec::new();
        let servers = env.get("SERVERS").or_else(|| credential("servers").map(|c| c.replace('\n', ",")));
        let entries: Vec<(String, Option<PathBuf>)> = match servers {
            Some(list) => {
                list.split(',').filter(|s| !s.trim().is_empty()).map(|s| (s.trim().to_string(), None)).collect()
            }
            None => f
                .targets
                .unwrap_or_default()
                .into_iter()
                .map(|e| match e {
                    TargetEntry::Url(u) => (u, None),
                    TargetEntry::Table(t) => (t.url, t.identity_file),
                })
                .collect(),
        };
        for (url, own_identity) in entries {
            let target = parse_target(&url, own_identity.or_else(|| identity_file.clone()))
                .map_err(|e| invalid(e.to_string()))?;
            if let TargetKind::Ssh(SshTarget { auth: SshAuth::Key(path), .. }) = &target.kind {
                russh::keys::load_secret_key(path, None)
                    .map_err(|e| invalid(format!("target {:?}: identity_file {}: {e}", target.key, path.display())))?;
            }
            if targets.iter().any(|t: &Target| t.key == target.key) {
                return Err(invalid(format!("target {:?} is listed twice", target.key)));
            }
            targets.push(target);
        }
        if targets.is_empty() {
            targets.push(parse_target("local", None).map_err(|e| invalid(e.to_string()))?);
        }

        let top_processes = f.top_processes.unwrap_or(5);
        if !(1..=100).contains(&top_processes) {
            return Err(invalid(format!("top_processes = {top_processes}: must be between 1 and 100")));
        }
        let history_minutes = f.history_minutes.unwrap_or(60);
        if !(1..=1440).contains(&history_minutes) {
            return Err(invalid(format!("history_minutes = {history_minutes}: must be between 1 and 1440")));
        }
        let max_output_bytes = f.max_output_bytes.unwrap_or(1 << 20);
        if !(16 * 1024..=64 << 20).contains(&max_output_bytes) {
            return Err(invalid(format!("max_output_bytes = {max_output_bytes}: must be between 16384 and 67108864")));
        }
        let max_clients = f.max_clients.unwrap_or(4096);
        if max_clients == 0 {
            return Err(invalid("max_clients = 0: must be at least 1"));
        }
        let include_fstypes = f.include_fstypes.unwrap_or_default();
        if let Some(bad) = include_fstypes
            .iter()
            .find(|t| t.is_empty() || !t.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')))
        {
            return Err(invalid(format!("include_fstypes: {bad:?} is not a filesystem type name")));
        }
        let reconnect = f.reconnect_max_seconds.unwrap_or(60.0);
        if !(reconnect.is_finite() && (1.0..=3600.0).contains(&reconnect)) {
            return Err(invalid(format!("reconnect_max_seconds = {reconnect}: must be between 1 and 3600")));
        }

        let state_dir = env
            .get("STATE_DIRECTORY") // set by systemd's StateDirectory=
            .map(|s| PathBuf::from(s.split(':').next().unwrap_or_default()))
            .or(f.state_dir)
            .unwrap_or_else(default_state_dir);
        let auth_token =
            env.get("MONSERV_AUTH_TOKEN").or_else(|| credential("auth_token")).or(f.auth_token).map(Secret::new);
        if auth_token.as_ref().is_some_and(|t| t.expose().len() < 8) {
            return Err(invalid("auth_token: must be at least 8 characters"));
        }

        let websocket = f.websocket.unwrap_or_default();
        for (key, v) in [
            ("ping_interval_seconds", websocket.ping_interval_seconds),
            ("read_timeout_seconds", websocket.read_timeout_seconds),
            ("write_timeout_seconds", websocket.write_timeout_seconds),
        ] {
            if !(v.is_finite() && (0.1..=3600.0).contains(&v)) {
                return Err(invalid(format!("websocket.{key} = {v}: must be between 0.1 and 3600")));
            }
        }
        if websocket.read_timeout_seconds <= websocket.ping_interval_seconds {
            return Err(invalid("websocket.read_timeout_seconds must be longer than ping_interval_seconds"));
        }

        let credential_path = |name: &str| {
            let path = Path::new(&env.get("CREDENTIALS_DIRECTORY")?).join(name);
            path.is_file().then_some(path)
        };
        let perimeter = Perimeter::resolve(
            perimeter::PerimeterFile {
                tls: f.tls,
                allowed_origins: f.allowed_origins,
                allowed_hosts: f.allowed_hosts,
                max_clients_per_ip: f.max_clients_per_ip,
                http: f.http,
                generate_auth_token: f.generate_auth_token,
            },
            env,
            max_clients,
            &credential_path,
        )
        .map_err(invalid)?;
        let secret = |name: &str| env.get(name).or_else(|| credential(&name.to_ascii_lowercase()));
        let notify = NotifyConfig::resolve(f.notify.unwrap_or_default(), env, &secret).map_err(invalid)?;
        let rules = RulesConfig::from_file(f.rules.unwrap_or_default(), state_dir.join("rules"), poll_interval)
            .map_err(invalid)?;
        let export = ExportConfig::resolve(f.export.unwrap_or_default()).map_err(invalid)?;

        Ok(Config {
            perimeter,
            rules,
            notify,
            export,
            websocket,
            listen: SocketAddr::new(ip, port),
            poll_interval,
            host_timeout,
            top_processes,
            history_window: Duration::from_secs(history_minutes * 60),
            max_output_bytes,
            max_clients,
            auth_token,
            targets,
            known_hosts: f.known_hosts.unwrap_or_else(|| state_dir.join("known_hosts")),
            state_dir,
            host_key_policy: f.host_key_policy.unwrap_or(HostKeyPolicy::Tofu),
            include_fstypes,
            reconnect_max: Duration::from_secs_f64(reconnect),
            thresholds,
        })
    }
}

/// `/var/lib/monserv` for root (the appliance), else a per-user directory, so that
/// `cargo run` as a developer works without privileges.
fn default_state_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/monserv");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/state/monserv"),
        None => PathBuf::from("monserv-state"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_ENV: [(&str, &str); 0] = [];

    #[test]
    fn defaults_monitor_local() {
        let c = Config::from_toml("", &NO_ENV).unwrap();
        assert_eq!(c.listen.port(), 18904);
        assert_eq!(c.poll_interval, Duration::from_secs(4));
        assert_eq!(c.host_timeout, Duration::from_secs(4));
        assert_eq!(c.targets.len(), 1);
        assert!(matches!(c.targets[0].kind, TargetKind::Local));
        assert_eq!(c.thresholds, Thresholds::default());
    }

    #[test]
    fn env_overrides_file() {
        let env = [
            ("SERVERS", "ssh://a:x%2Cy@h1:22, local"),
            ("SERVER_PORT", "9000"),
            ("MEM_THRESHOLD_PERCENT", "75.5"),
            ("POLL_INTERVAL_SECONDS", "10"),
        ];
        let c = Config::from_toml("port = 1\ntargets = [\"ssh://b:c@h2\"]\n[thresholds]\nmemory_percent = 10\n", &env)
            .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.thresholds.memory_percent, 75.5);
        assert_eq!(c.host_timeout, Duration::from_secs(5));
        let keys: Vec<&str> = c.targets.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(keys, vec!["ssh://a:***@h1:22", "local"]);
    }

    #[test]
    fn bad_values_are_one_line_and_masked() {
        let cases = [
            ("bogus = 1", "unknown field"),
            ("poll_interval_seconds = 0", "poll_interval_seconds"),
            ("[thresholds]\ndisk_percent = 101", "disk_percent"),
            ("targets = [\"ftp://u:hunter2@h\"]", "unsupported scheme"),
            ("targets = [\"http://u:hunter2@h\"]", "credentials in the URL are not allowed"),
            ("targets = [\"ssh://u:hunter2@h:70000\"]", "port"),
            ("listen = \"nowhere\"", "listen"),
            ("port = 70000", "line 1"),
            ("targets = [\"local\", \"local\"]", "twice"),
            ("host_timeout_seconds = 9", "host_timeout_seconds"),
            ("include_fstypes = [\"a|b\"]", "include_fstypes"),
            ("auth_token = \"short\"", "auth_token"),
        ];
        for (text, expect) in cases {
            let e = Config::from_toml(text, &NO_ENV).unwrap_err().to_string();
            assert!(e.contains(expect), "{text:?} gave {e:?}");
            assert!(!e.contains('\n'), "{e:?}");
            assert!(!e.contains("hunter2"), "{e:?}");
        }
        let e = Config::from_toml("", &[("CPU_THRESHOLD_PERCENT", "abc")]).unwrap_err().to_string();
        assert!(e.contains("CPU_THRESHOLD_PERCENT"), "{e}");
    }

    #[test]
    fn print_masks_secrets() {
        let c =
            Config::from_toml("auth_token = \"tok-secret-123\"\ntargets = [\"ssh://u:hunter2@h:2\"]", &NO_ENV).unwrap();
        let printed = c.to_masked_toml();
        assert!(!printed.contains("hunter2") && !printed.contains("tok-secret-123"), "{printed}");
        assert!(printed.contains("ssh://u:***@h:2"));
        // What is printed loads again.
        let again =
            Config::from_toml(&printed.replace("\"***\"", "\"tok-other-456\"").replace("u:***@", "u:pw@"), &NO_ENV)
                .unwrap();
        assert_eq!(again.listen, c.listen);
        assert_eq!(format!("{:?}", Secret::new("x")), "***");
    }
}
