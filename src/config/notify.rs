//! `[notify.*]`: where alerts and recoveries go besides `/ws`, under the Go MonServ's
//! environment names (`EMAIL_*`, `SLACK_WEBHOOK_URL`, `TELEGRAM_*`, `KAFKA_*`), which
//! override the file field by field, as everywhere in monserv.
//!
//! Every sink also takes `repeat_interval`, `max_per_minute` (past it, deliveries are
//! grouped into digests), `ca_file` and `danger_accept_invalid_certs`; the last two
//! may be set once under `[notify]`. Passwords, tokens, header values and the Slack
//! URL (its path is the credential) are [`Secret`]s: printed masked, never logged.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::url::{parse_http_url, HttpUrl};
use super::{Env, Secret};
use crate::tls::TlsOptions;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NotifyFile {
    ca_file: Option<PathBuf>,
    danger_accept_invalid_certs: Option<bool>,
    email: Option<toml::Table>,
    slack: Option<toml::Table>,
    telegram: Option<toml::Table>,
    kafka: Option<toml::Table>,
    webhook: Option<toml::Table>,
    alertmanager: Option<toml::Table>,
}

/// Keys every sink takes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommonFile {
    repeat_interval: Option<String>,
    max_per_minute: Option<u32>,
    ca_file: Option<PathBuf>,
    danger_accept_invalid_certs: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmailFile {
    smtp_host: Option<String>,
    smtp_port: Option<u16>,
    from: Option<String>,
    user: Option<String>,
    password: Option<String>,
    to: Option<StringList>,
    tls: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlackFile {
    webhook_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TelegramFile {
    bot_token: Option<String>,
    chat_id: Option<String>,
    api_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpSinkFile {
    url: Option<String>,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StringList {
    One(String),
    Many(Vec<String>),
}

impl StringList {
    fn items(self) -> Vec<String> {
        let all = match self {
            StringList::One(s) => s.split(',').map(str::to_string).collect(),
            StringList::Many(v) => v,
        };
        all.into_iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
    }
}

#[derive(Debug, Clone, Default)]
pub struct NotifyConfig {
    pub sinks: Vec<SinkConfig>,
}

/// One configured sink.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub kind: SinkKind,
    pub tls: TlsOptions,
    /// Re-send alerts that stay firing this often (off by default).
    pub repeat_interval: Option<Duration>,
    /// Messages per minute; past it, waiting deliveries go out as one digest.
    pub max_per_minute: u32,
}

#[derive(Debug, Clone)]
pub enum SinkKind {
    Email(EmailSink),
    Slack { url: HttpUrl, secret_url: Secret },
    Telegram(TelegramSink),
    Kafka(Box<super::kafka::KafkaSink>),
    Webhook(HttpSink),
    Alertmanager(HttpSink),
}

impl SinkConfig {
    /// The sink's name in the store, the API and logs.
    pub fn name(&self) -> &'static str {
        match self.kind {
            SinkKind::Email(_) => "email",
            SinkKind::Slack { .. } => "slack",
            SinkKind::Telegram(_) => "telegram",
            SinkKind::Kafka(_) => "kafka",
            SinkKind::Webhook(_) => "webhook",
            SinkKind::Alertmanager(_) => "alertmanager",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// TLS from the first byte (port 465).
    Implicit,
    /// Plain connection upgraded with STARTTLS; refused if the server does not offer it.
    Starttls,
}

#[derive(Debug, Clone)]
pub struct EmailSink {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub from: String,
    /// SMTP user: `user`, else `from` (as the Go MonServ did).
    pub user: String,
    pub password: Option<Secret>,
    pub to: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct TelegramSink {
    pub api: HttpUrl,
    pub token: Secret,
    pub chat_id: String,
}

/// The webhook and Alertmanager sinks: a URL and optional headers (values secret).
#[derive(Debug, Clone)]
pub struct HttpSink {
    pub url: HttpUrl,
    pub headers: Vec<(String, Secret)>,
}

/// Default per-minute limits: chat services throttle (Telegram about 20 a minute per
/// chat), mail servers and people more so; machines take more.
fn default_rate(name: &str) -> u32 {
    match name {
        "email" => 10,
        "slack" | "telegram" => 20,
        "kafka" => 600,
        _ => 120,
    }
}

fn is_address(s: &str) -> bool {
    let ok = |c: char| !c.is_control() && !c.is_whitespace() && !matches!(c, '<' | '>' | ',' | ';' | '"');
    s.split_once('@').is_some_and(|(l, d)| !l.is_empty() && !d.is_empty() && s.chars().all(ok))
}

/// Header names and values checked, values kept secret; `at` names the table in errors.
pub(super) fn secret_header_list(
    at: &str,
    headers: std::collections::BTreeMap<String, String>,
) -> Result<Vec<(String, Secret)>, String> {
    let mut out = Vec::new();
    for (name, value) in headers {
        let valid_name = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !valid_name || value.chars().any(|c| c.is_control()) {
            return Err(format!("{at}.headers: {name:?} is not a valid header"));
        }
        out.push((name, Secret::new(value)));
    }
    Ok(out)
}

/// Split a sink's table into the common keys and its own; both refuse unknown keys.
fn split<T: for<'de> Deserialize<'de> + Default>(
    section: &str,
    table: Option<toml::Table>,
) -> Result<(CommonFile, Option<T>), String> {
    let Some(mut table) = table else { return Ok((CommonFile::default(), None)) };
    let common = common_from(section, split_common(&mut table))?;
    let own: T =
        toml::Value::Table(table).try_into().map_err(|e| format!("notify.{section}: {}", e.to_string().trim()))?;
    Ok((common, Some(own)))
}

impl NotifyConfig {
    /// Build the sinks from the file, with the environment (and `secret` lookups:
    /// environment, then systemd credentials) overriding it.
    pub(super) fn resolve(
        f: NotifyFile,
        env: &dyn Env,
        secret: &dyn Fn(&str) -> Option<String>,
    ) -> Result<NotifyConfig, String> {
        let mut sinks = Vec::new();
        let mut push = |name: &str, common: CommonFile, kind: SinkKind| -> Result<(), String> {
            let repeat_interval = match common.repeat_interval.as_deref().map(str::trim) {
                None | Some("") | Some("0") | Some("off") => None,
                Some(text) => {
                    let d = humantime::parse_duration(text)
                        .map_err(|e| format!("notify.{name}.repeat_interval = {text:?}: {e} (e.g. \"4h\")"))?;
                    if d < Duration::from_secs(60) {
                        return Err(format!("notify.{name}.repeat_interval = {text:?}: must be at least 1m"));
                    }
                    Some(d)
                }
            };
            let max_per_minute = common.max_per_minute.unwrap_or_else(|| default_rate(name));
            if max_per_minute == 0 {
                return Err(format!("notify.{name}.max_per_minute = 0: must be at least 1"));
            }
            let danger = common.danger_accept_invalid_certs.or(f.danger_accept_invalid_certs).unwrap_or(false);
            let tls = TlsOptions { ca_file: common.ca_file.or(f.ca_file.clone()), danger_accept_invalid_certs: danger };
            sinks.push(SinkConfig { kind, tls, repeat_interval, max_per_minute });
            Ok(())
        };

        // Email: EMAIL_SMTP_HOST enables it.
        let (common, file) = split::<EmailFile>("email", f.email)?;
        let mut email = file.unwrap_or_default();
        let from_env = env.get("EMAIL_SMTP_HOST");
        if let Some(h) = from_env.clone() {
            email.smtp_host = Some(h);
        }
        if let Some(p) = env.get("EMAIL_SMTP_PORT") {
            email.smtp_port =
                Some(p.trim().parse().map_err(|_| format!("environment EMAIL_SMTP_PORT={p:?} is not a port number"))?);
        }
        email.from = env.get("EMAIL_FROM").or(email.from);
        email.password = secret("EMAIL_PASSWORD").or(email.password);
        if let Some(to) = env.get("EMAIL_TO") {
            email.to = Some(StringList::One(to));
        }
        if let Some(host) = email.smtp_host.take() {
            let host = host.trim().to_string();
            let port = email.smtp_port.unwrap_or(587);
            let tls = match email.tls.as_deref() {
                None | Some("auto") => {
                    if port == 465 {
                        SmtpTls::Implicit
                    } else {
                        SmtpTls::Starttls
                    }
                }
                Some("implicit") => SmtpTls::Implicit,
                Some("starttls") => SmtpTls::Starttls,
                Some(other) => {
                    return Err(format!(
                        "notify.email.tls = {other:?}: expected \"auto\", \"implicit\" or \"starttls\""
                    ))
                }
            };
            let from = email.from.unwrap_or_default().trim().to_string();
            if !is_address(&from) {
                return Err(format!("notify.email.from (EMAIL_FROM) = {from:?}: not a mail address"));
            }
            let to = email.to.map(StringList::items).unwrap_or_default();
            if to.is_empty() {
                return Err("notify.email.to (EMAIL_TO): no recipient".into());
            }
            if let Some(bad) = to.iter().find(|a| !is_address(a)) {
                return Err(format!("notify.email.to (EMAIL_TO): {bad:?} is not a mail address"));
            }
            if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control() || c == '/') {
                return Err(format!("notify.email.smtp_host (EMAIL_SMTP_HOST) = {host:?}: not a host name"));
            }
            let user = email.user.unwrap_or_else(|| from.clone());
            let sink = EmailSink { host, port, tls, from, user, password: email.password.map(Secret::new), to };
            push("email", common, SinkKind::Email(sink))?;
        }

        // Slack: the URL's path is the credential.
        let (common, file) = split::<SlackFile>("slack", f.slack)?;
        if let Some(url) = secret("SLACK_WEBHOOK_URL").or(file.and_then(|s| s.webhook_url)) {
            let parsed = parse_http_url(url.trim()).map_err(|e| format!("notify.slack.webhook_url: {e}"))?;
            push("slack", common, SinkKind::Slack { url: parsed, secret_url: Secret::new(url) })?;
        }

        // Telegram: TELEGRAM_BOT_TOKEN enables it.
        let (common, file) = split::<TelegramFile>("telegram", f.telegram)?;
        let file = file.unwrap_or_default();
        if let Some(token) = secret("TELEGRAM_BOT_TOKEN").or(file.bot_token) {
            let token = token.trim().to_string();
            if token.is_empty() || !token.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-'))
            {
                return Err("notify.telegram.bot_token (TELEGRAM_BOT_TOKEN): not a bot token (digits:letters)".into());
            }
            let chat_id = env.get("TELEGRAM_CHAT_ID").or(file.chat_id).unwrap_or_default().trim().to_string();
            if chat_id.is_empty() || chat_id.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err("notify.telegram.chat_id (TELEGRAM_CHAT_ID): missing or not an id".into());
            }
            let api_text =
                env.get("TELEGRAM_API_URL").or(file.api_url).unwrap_or_else(|| "https://api.telegram.org".into());
            let mut api = parse_http_url(api_text.trim()).map_err(|e| format!("notify.telegram.api_url: {e}"))?;
            api.path = api.path.trim_end_matches('/').to_string();
            let sink = TelegramSink { api, token: Secret::new(token), chat_id };
            push("telegram", common, SinkKind::Telegram(sink))?;
        }

        // Kafka: KAFKA_BROKERS enables it.
        let (common, kafka) = super::kafka::resolve(f.kafka, env, secret)?;
        if let Some(sink) = kafka {
            push("kafka", common_from("kafka", common)?, SinkKind::Kafka(Box::new(sink)))?;
        }

        for (name, table) in [("webhook", f.webhook), ("alertmanager", f.alertmanager)] {
            let (common, file) = split::<HttpSinkFile>(name, table)?;
            let Some(file) = file else { continue };
            let text = file.url.ok_or_else(|| format!("notify.{name}.url is missing"))?;
            let mut url = parse_http_url(&text).map_err(|e| format!("notify.{name}.url = {text:?}: {e}"))?;
            if name == "alertmanager" && url.path == "/" {
                url.path = "/api/v2/alerts".into();
            }
            let sink = HttpSink { url, headers: secret_header_list(&format!("notify.{name}"), file.headers)? };
            push(name, common, if name == "webhook" { SinkKind::Webhook(sink) } else { SinkKind::Alertmanager(sink) })?;
        }
        Ok(NotifyConfig { sinks })
    }

    /// Names of the configured sinks, as queued in the alert store.
    pub fn sink_names(&self) -> Vec<String> {
        self.sinks.iter().map(|s| s.name().to_string()).collect()
    }

    pub(super) fn printable(&self) -> toml::Table {
        let mut out = toml::Table::new();
        for s in &self.sinks {
            let mut t = toml::Table::new();
            let mut put = |k: &str, v: toml::Value| {
                t.insert(k.into(), v);
            };
            let masked = || toml::Value::String("***".into());
            match &s.kind {
                SinkKind::Email(e) => {
                    put("smtp_host", e.host.clone().into());
                    put("smtp_port", i64::from(e.port).into());
                    put("tls", if e.tls == SmtpTls::Implicit { "implicit" } else { "starttls" }.into());
                    put("from", e.from.clone().into());
                    put("user", e.user.clone().into());
                    if e.password.is_some() {
                        put("password", masked());
                    }
                    put("to", e.to.clone().into());
                }
                SinkKind::Slack { .. } => put("webhook_url", masked()),
                SinkKind::Telegram(tg) => {
                    put("bot_token", masked());
                    put("chat_id", tg.chat_id.clone().into());
                    put("api_url", tg.api.to_string().into());
                }
                SinkKind::Kafka(k) => k.print_into(&mut t),
                SinkKind::Webhook(h) | SinkKind::Alertmanager(h) => {
                    put("url", h.url.to_string().into());
                    let headers: toml::Table = h.headers.iter().map(|(k, _)| (k.clone(), masked())).collect();
                    put("headers", headers.into());
                }
            }
            if let Some(r) = s.repeat_interval {
                t.insert("repeat_interval".into(), humantime::format_duration(r).to_string().into());
            }
            t.insert("max_per_minute".into(), i64::from(s.max_per_minute).into());
            if let Some(ca) = &s.tls.ca_file {
                t.insert("ca_file".into(), ca.display().to_string().into());
            }
            if s.tls.danger_accept_invalid_certs {
                t.insert("danger_accept_invalid_certs".into(), true.into());
            }
            out.insert(s.name().into(), t.into());
        }
        out
    }
}

/// The common keys, split off a sink's table, checked.
fn common_from(section: &str, t: toml::Table) -> Result<CommonFile, String> {
    toml::Value::Table(t).try_into().map_err(|e| format!("notify.{section}: {e}"))
}

/// For the Kafka section (its own module): split off the common keys.
pub(super) fn split_common(table: &mut toml::Table) -> toml::Table {
    let mut common = toml::Table::new();
    for key in ["repeat_interval", "max_per_minute", "ca_file", "danger_accept_invalid_certs"] {
        if let Some(v) = table.remove(key) {
            common.insert(key.into(), v);
        }
    }
    common
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(toml_text: &str, env: &[(&str, &str)]) -> Result<NotifyConfig, String> {
        let f: NotifyFile = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        struct E(Vec<(String, String)>);
        impl Env for E {
            fn get(&self, name: &str) -> Option<String> {
                self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
            }
        }
        let e = E(env);
        NotifyConfig::resolve(f, &e, &|n| e.get(n))
    }

    #[test]
    fn go_environment_names_build_the_sinks() {
        let c = resolve(
            "",
            &[
                ("EMAIL_SMTP_HOST", "mail.plant"),
                ("EMAIL_FROM", "monserv@plant"),
                ("EMAIL_PASSWORD", "mail-pass-1"),
                ("EMAIL_TO", "ops@plant, oncall@plant"),
                ("SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T/B/sekrit"),
                ("TELEGRAM_BOT_TOKEN", "123:abc"),
                ("TELEGRAM_CHAT_ID", "-100"),
                ("KAFKA_BROKERS", "k1:9092,k2"),
            ],
        )
        .unwrap();
        assert_eq!(c.sink_names(), ["email", "slack", "telegram", "kafka"]);
        let SinkKind::Email(e) = &c.sinks[0].kind else { panic!() };
        assert_eq!((e.port, e.tls, e.user.as_str()), (587, SmtpTls::Starttls, "monserv@plant"));
        assert_eq!(e.to, ["ops@plant", "oncall@plant"]);
        let SinkKind::Telegram(t) = &c.sinks[2].kind else { panic!() };
        assert_eq!(t.api.to_string(), "https://api.telegram.org:443");
        let printed = toml::to_string(&c.printable()).unwrap();
        for secret in ["mail-pass-1", "sekrit", "123:abc"] {
            assert!(!printed.contains(secret), "{printed}");
        }
        assert_eq!(c.sinks[0].max_per_minute, 10);
    }

    #[test]
    fn file_settings_and_their_errors() {
        let c = resolve(
            "ca_file = \"/etc/plant-ca.pem\"\n[email]\nsmtp_host = \"m\"\nsmtp_port = 465\nfrom = \"a@b\"\nto = [\"c@d\"]\n\
             repeat_interval = \"4h\"\n[alertmanager]\nurl = \"http://am:9093\"\n",
            &[],
        )
        .unwrap();
        let SinkKind::Email(e) = &c.sinks[0].kind else { panic!() };
        assert_eq!(e.tls, SmtpTls::Implicit, "465 is implicit TLS");
        assert_eq!(c.sinks[0].repeat_interval, Some(Duration::from_secs(4 * 3600)));
        assert_eq!(c.sinks[0].tls.ca_file.as_deref(), Some(std::path::Path::new("/etc/plant-ca.pem")));
        let SinkKind::Alertmanager(am) = &c.sinks[1].kind else { panic!() };
        assert_eq!(am.url.path, "/api/v2/alerts");
        let err = |t: &str| resolve(t, &[]).unwrap_err();
        assert!(err("[email]\nsmtp_hots = \"m\"").contains("smtp_hots"));
        assert!(err("[email]\nsmtp_host = \"m\"\nfrom = \"nobody\"\nto = \"c@d\"").contains("not a mail address"));
        assert!(err("[email]\nsmtp_host = \"m\"\nfrom = \"a@b\"").contains("no recipient"));
        assert!(err("[webhook]\nurl = \"http://h\"\nrepeat_interval = \"5s\"").contains("at least 1m"));
        assert!(err("[webhook]\nurl = \"http://h\"\nmax_per_minute = 0").contains("max_per_minute"));
        assert!(err("[telegram]\nbot_token = \"a b\"\nchat_id = \"1\"").contains("bot token"));
    }
}
