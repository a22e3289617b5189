//! `[notify.kafka]` and the Go MonServ's `KAFKA_*` names, with the Go payload's
//! defaults exactly as it had them (`KAFKA_IP_ADDRESS` ... `KAFKA_GENERAL_ACTION`,
//! `KAFKA_JENIS_*`). Unlike the Go code, a value that does not parse is an error, not
//! silently the default.

use serde::Deserialize;

use super::notify::split_common;
use super::{Env, Secret};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KafkaFile {
    brokers: Option<toml::Value>,
    topic: Option<String>,
    username: Option<String>,
    password: Option<String>,
    tls: Option<bool>,
    client_id: Option<String>,
    #[serde(default)]
    payload: PayloadFile,
    #[serde(default)]
    jenis: JenisFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PayloadFile {
    ip_address: Option<String>,
    protocol: Option<String>,
    id_rtu: Option<String>,
    action: Option<String>,
    address: Option<String>,
    channel: Option<i64>,
    #[serde(rename = "type")]
    kind: Option<String>,
    ca: Option<i64>,
    group: Option<String>,
    value: Option<f64>,
    general_action: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JenisFile {
    mem_by_app: Option<String>,
    mem_server: Option<String>,
    disk_usage: Option<String>,
    cpu_usage: Option<String>,
    default: Option<String>,
}

#[derive(Debug, Clone)]
pub struct KafkaSink {
    /// `host:port` of the bootstrap brokers.
    pub brokers: Vec<(String, u16)>,
    pub topic: String,
    /// SASL PLAIN, when a user name or password is set.
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub tls: bool,
    pub client_id: String,
    pub payload: KafkaPayloadDefaults,
    pub jenis: KafkaJenis,
}

/// The fixed fields of the Go payload.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaPayloadDefaults {
    pub ip_address: String,
    pub protocol: String,
    pub id_rtu: String,
    pub action: String,
    pub address: String,
    pub channel: i64,
    pub kind: String,
    pub ca: i64,
    pub group: String,
    pub value: f64,
    pub general_action: i64,
}

/// `jenis` by what the subject names, as the Go code mapped it.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaJenis {
    pub mem_by_app: String,
    pub mem_server: String,
    pub disk_usage: String,
    pub cpu_usage: String,
    pub default: String,
}

impl KafkaJenis {
    /// The Go `mapJenisFromSubject`: first match wins, on the upper-cased subject.
    pub fn for_subject(&self, subject: &str) -> &str {
        let s = subject.to_uppercase();
        if s.contains("MEMORY BY") || s.contains("PROC") || s.contains("PROCESS") {
            &self.mem_by_app
        } else if s.contains("MEMORY") {
            &self.mem_server
        } else if s.contains("DISK") {
            &self.disk_usage
        } else if s.contains("CPU") {
            &self.cpu_usage
        } else {
            &self.default
        }
    }
}

fn truthy(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        other => Err(format!("environment KAFKA_TLS_ENABLE={other:?} is not true or false")),
    }
}

fn broker(entry: &str) -> Result<(String, u16), String> {
    let entry = entry.trim();
    let (host, port) = match entry.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => {
            (h.trim_matches(['[', ']']), p.parse::<u16>().map_err(|_| format!("broker {entry:?}: bad port"))?)
        }
        _ => (entry.trim_matches(['[', ']']), 9092),
    };
    if host.is_empty()
        || port == 0
        || !host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
    {
        return Err(format!("broker {entry:?} is not host[:port]"));
    }
    Ok((host.to_string(), port))
}

/// Parse the section and the environment; `None` when Kafka is not configured.
pub(super) fn resolve(
    table: Option<toml::Table>,
    env: &dyn Env,
    secret: &dyn Fn(&str) -> Option<String>,
) -> Result<(toml::Table, Option<KafkaSink>), String> {
    let (common, file) = match table {
        None => (toml::Table::new(), KafkaFile::default()),
        Some(mut t) => {
            let common = split_common(&mut t);
            let file: KafkaFile = toml::Value::Table(t).try_into().map_err(|e| format!("notify.kafka: {e}"))?;
            (common, file)
        }
    };
    let brokers_text: Option<Vec<String>> = match env.get("KAFKA_BROKERS") {
        Some(b) => Some(b.split(',').map(str::to_string).collect()),
        None => match file.brokers {
            None => None,
            Some(toml::Value::String(s)) => Some(s.split(',').map(str::to_string).collect()),
            Some(toml::Value::Array(a)) => Some(a.iter().map(|v| v.as_str().unwrap_or("").to_string()).collect()),
            Some(_) => return Err("notify.kafka.brokers: expected \"host:port,...\" or a list".into()),
        },
    };
    let Some(brokers_text) = brokers_text else { return Ok((common, None)) };
    let brokers = brokers_text
        .iter()
        .filter(|b| !b.trim().is_empty())
        .map(|b| broker(b))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("notify.kafka.brokers (KAFKA_BROKERS): {e}"))?;
    if brokers.is_empty() {
        return Err("notify.kafka.brokers (KAFKA_BROKERS) is empty".into());
    }
    let topic = env.get("KAFKA_TOPIC").or(file.topic).unwrap_or_else(|| "datapoint".into());
    if topic.is_empty()
        || topic.len() > 249
        || !topic.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(format!("notify.kafka.topic (KAFKA_TOPIC) = {topic:?}: not a Kafka topic name"));
    }
    let tls = match env.get("KAFKA_TLS_ENABLE") {
        Some(v) => truthy(&v)?,
        None => file.tls.unwrap_or(false),
    };
    let p = file.payload;
    let text =
        |name: &str, file: Option<String>, default: &str| env.get(name).or(file).unwrap_or_else(|| default.into());
    let int = |name: &str, file: Option<i64>, default: i64| -> Result<i64, String> {
        match env.get(name) {
            Some(v) => v.trim().parse().map_err(|_| format!("environment {name}={v:?} is not an integer")),
            None => Ok(file.unwrap_or(default)),
        }
    };
    let value = match env.get("KAFKA_VALUE") {
        Some(v) => v.trim().parse::<f64>().map_err(|_| format!("environment KAFKA_VALUE={v:?} is not a number"))?,
        None => p.value.unwrap_or(1.0),
    };
    let payload = KafkaPayloadDefaults {
        ip_address: text("KAFKA_IP_ADDRESS", p.ip_address, ""),
        protocol: text("KAFKA_PROTOCOL", p.protocol, "TCP"),
        id_rtu: text("KAFKA_ID_RTU", p.id_rtu, "EXT-30890"),
        action: text("KAFKA_ACTION", p.action, "SPONTANEUS"),
        address: text("KAFKA_ADDRESS", p.address, "244444"),
        channel: int("KAFKA_CHANNEL", p.channel, 623)?,
        kind: text("KAFKA_TYPE", p.kind, "GROUP10_VAR2"),
        ca: int("KAFKA_CA", p.ca, 1)?,
        group: text("KAFKA_GROUP", p.group, "fe547e84-3b20-4811-ad51-3fb72d806159"),
        value,
        general_action: int("KAFKA_GENERAL_ACTION", p.general_action, 1)?,
    };
    let j = file.jenis;
    let jenis = KafkaJenis {
        mem_by_app: text("KAFKA_JENIS_MEM_BY_APP", j.mem_by_app, "MEMORY_BY_APLIKASI"),
        mem_server: text("KAFKA_JENIS_MEM_SERVER", j.mem_server, "MEMORY_SERVER"),
        disk_usage: text("KAFKA_JENIS_DISK_USAGE", j.disk_usage, "DISK_USAGE"),
        cpu_usage: text("KAFKA_JENIS_CPU_USAGE", j.cpu_usage, "CPU_USAGE"),
        default: text("KAFKA_JENIS_DEFAULT", j.default, "ALERT_GENERIC"),
    };
    let username = env.get("KAFKA_USERNAME").or(file.username).filter(|u| !u.is_empty());
    let password = secret("KAFKA_PASSWORD").or(file.password).filter(|p| !p.is_empty()).map(Secret::new);
    let client_id = env.get("KAFKA_CLIENT_ID").or(file.client_id).unwrap_or_else(|| "monserv".into());
    let sink = KafkaSink { brokers, topic, username, password, tls, client_id, payload, jenis };
    Ok((common, Some(sink)))
}

impl KafkaSink {
    pub(super) fn print_into(&self, t: &mut toml::Table) {
        let brokers: Vec<String> = self.brokers.iter().map(|(h, p)| format!("{h}:{p}")).collect();
        t.insert("brokers".into(), brokers.into());
        t.insert("topic".into(), self.topic.clone().into());
        if let Some(u) = &self.username {
            t.insert("username".into(), u.clone().into());
        }
        if self.password.is_some() {
            t.insert("password".into(), "***".into());
        }
        t.insert("tls".into(), self.tls.into());
        t.insert("client_id".into(), self.client_id.clone().into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_go_defaults_and_jenis_mapping() {
        let env = [("KAFKA_BROKERS", "127.0.0.1:9092, [::1]"), ("KAFKA_JENIS_CPU_USAGE", "CPU_X")];
        let (_, sink) = resolve(None, &env, &|n| env.get(n)).unwrap();
        let k = sink.unwrap();
        assert_eq!(k.brokers, [("127.0.0.1".to_string(), 9092), ("::1".into(), 9092)]);
        assert_eq!((k.topic.as_str(), k.payload.channel, k.payload.id_rtu.as_str()), ("datapoint", 623, "EXT-30890"));
        assert_eq!(k.jenis.for_subject("[ALERT] Process memory high"), "MEMORY_BY_APLIKASI");
        assert_eq!(k.jenis.for_subject("[alert] memory usage"), "MEMORY_SERVER");
        assert_eq!(k.jenis.for_subject("Disk / full"), "DISK_USAGE");
        assert_eq!(k.jenis.for_subject("cpu hot"), "CPU_X");
        assert_eq!(k.jenis.for_subject("host offline"), "ALERT_GENERIC");
        let bad = [("KAFKA_BROKERS", "k"), ("KAFKA_CHANNEL", "six")];
        assert!(resolve(None, &bad, &|n| bad.get(n)).unwrap_err().contains("KAFKA_CHANNEL"));
        let none: [(&str, &str); 0] = [];
        assert!(resolve(None, &none, &|_| None).unwrap().1.is_none());
    }
}
