//! Sparkplug B, the edge node's side, as pure state: which messages a round, a
//! rebirth request or an alert turns into. monserv is the edge node; every monitored
//! host is a device. The MQTT session (`edge`) only carries what this produces.
//!
//! - NBIRTH (seq 0) carries `bdSeq`, the number the session's will (NDEATH) also
//!   carries, so a host application can match a death to its birth.
//! - A device is born (DBIRTH, every metric with its name, alias, type and value) when
//!   its host answers, dies (DDEATH) when it goes offline, is born again when it comes
//!   back or its set of metrics changes (a disk mounted or gone).
//! - DDATA carries only the values that changed, by alias.
//! - `seq` counts every message after NBIRTH and wraps from 255 to 0.
//!
//! Payloads follow Eclipse Tahu's `sparkplug_b.proto` field numbers, encoded by hand
//! (`wire`'s varints): no protobuf runtime and no protoc on the device.

use std::collections::{BTreeMap, HashMap};

use crate::model::{HostStatus, Snapshot, TargetReport};

/// Sparkplug data types (Tahu's DataType numbers).
const UINT32: u32 = 7;
const UINT64: u32 = 8;
const INT64: u32 = 4;
const DOUBLE: u32 = 10;
const BOOLEAN: u32 = 11;
const STRING: u32 = 12;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    U32(u32),
    U64(u64),
    I64(i64),
    F64(f64),
    Str(String),
}

impl Value {
    fn datatype(&self) -> u32 {
        match self {
            Value::Bool(_) => BOOLEAN,
            Value::U32(_) => UINT32,
            Value::U64(_) => UINT64,
            Value::I64(_) => INT64,
            Value::F64(_) => DOUBLE,
            Value::Str(_) => STRING,
        }
    }
}

/// One metric in a payload: named on births, by alias after.
pub struct Metric<'a> {
    pub name: Option<&'a str>,
    pub alias: Option<u64>,
    pub timestamp_ms: u64,
    pub value: &'a Value,
    pub historical: bool,
}

fn varint(out: &mut Vec<u8>, v: u64) {
    super::wire::varint(out, v);
}

fn bytes_field(out: &mut Vec<u8>, key: u8, bytes: &[u8]) {
    out.push(key);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A `Payload { timestamp = 1; metrics = 2; seq = 3 }`; NDEATH has no seq.
pub fn payload(timestamp_ms: u64, seq: Option<u8>, metrics: &[Metric<'_>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + metrics.len() * 32);
    out.push(0x08);
    varint(&mut out, timestamp_ms);
    let mut m = Vec::with_capacity(48);
    for metric in metrics {
        m.clear();
        if let Some(name) = metric.name {
            bytes_field(&mut m, 0x0a, name.as_bytes()); // name = 1
        }
        if let Some(alias) = metric.alias {
            m.push(0x10); // alias = 2
            varint(&mut m, alias);
        }
        m.push(0x18); // timestamp = 3
        varint(&mut m, metric.timestamp_ms);
        m.push(0x20); // datatype = 4
        varint(&mut m, u64::from(metric.value.datatype()));
        if metric.historical {
            m.extend_from_slice(&[0x28, 1]); // is_historical = 5
        }
        match metric.value {
            Value::U32(v) => {
                m.push(0x50); // int_value = 10
                varint(&mut m, u64::from(*v));
            }
            Value::U64(v) => {
                m.push(0x58); // long_value = 11
                varint(&mut m, *v);
            }
            Value::I64(v) => {
                m.push(0x58); // long_value = 11 (Int64 travels as its two's complement)
                varint(&mut m, *v as u64);
            }
            Value::F64(v) => {
                m.push(0x69); // double_value = 13, fixed64
                m.extend_from_slice(&v.to_le_bytes());
            }
            Value::Bool(v) => m.extend_from_slice(&[0x70, u8::from(*v)]), // boolean_value = 14
            Value::Str(s) => bytes_field(&mut m, 0x7a, s.as_bytes()),     // string_value = 15
        }
        bytes_field(&mut out, 0x12, &m); // metrics = 2
    }
    if let Some(seq) = seq {
        out.push(0x18); // seq = 3
        varint(&mut out, u64::from(seq));
    }
    out
}

/// A host's metrics in one round, by Sparkplug metric name (folders with `/`).
pub fn device_metrics(t: &TargetReport) -> Vec<(String, Value)> {
    let m = &t.metrics;
    let mut out = vec![
        ("Hostname".to_string(), Value::Str(m.hostname.clone())),
        ("Uptime".into(), Value::U64(m.uptime_seconds)),
        ("Memory/Total".into(), Value::U64(m.memory.total)),
        ("Memory/Used".into(), Value::U64(m.memory.used)),
        ("Memory/Free".into(), Value::U64(m.memory.free)),
        ("Memory/Used Percent".into(), Value::F64(m.memory.used_percent)),
        ("CPU/Cores".into(), Value::U32(m.cpu.cores)),
        ("CPU/Used Percent".into(), Value::F64(m.cpu.used_percent)),
    ];
    for d in &m.disks {
        let folder = match d.mountpoint.trim_start_matches('/') {
            "" => "(root)".to_string(),
            rest => rest.to_string(),
        };
        out.push((format!("Disks/{folder}/Total"), Value::U64(d.total)));
        out.push((format!("Disks/{folder}/Used"), Value::U64(d.used)));
        out.push((format!("Disks/{folder}/Free"), Value::U64(d.free)));
        out.push((format!("Disks/{folder}/Used Percent"), Value::F64(d.used_percent)));
    }
    out
}

/// A target's device id: its host (and port) without scheme or credentials; `/`,
/// `+` and `#` (not allowed in a topic level) become `_`.
pub fn device_id(target_key: &str) -> String {
    let rest = target_key.split_once("://").map_or(target_key, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let id: String =
        rest.trim_end_matches('/').chars().map(|c| if matches!(c, '/' | '+' | '#') { '_' } else { c }).collect();
    if id.is_empty() {
        "_".into()
    } else {
        id
    }
}

/// A published message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
}

#[derive(Default)]
struct Device {
    online: bool,
    /// Alias by metric name, as announced in the last DBIRTH.
    aliases: HashMap<String, u64>,
    last: HashMap<String, Value>,
}

/// The edge node's state across one MQTT session (a new session is a new `EdgeNode`
/// with the next `bdSeq`).
pub struct EdgeNode {
    group: String,
    node: String,
    bd_seq: u64,
    seq: u8,
    next_alias: u64,
    devices: BTreeMap<String, Device>,
    last_alert: Value,
}

impl EdgeNode {
    pub fn new(group: &str, node: &str, bd_seq: u64) -> Self {
        EdgeNode {
            group: group.into(),
            node: node.into(),
            bd_seq,
            seq: 0,
            next_alias: 1,
            devices: BTreeMap::new(),
            last_alert: Value::Str(String::new()),
        }
    }

    fn topic(&self, kind: &str, device: Option<&str>) -> String {
        match device {
            Some(d) => format!("spBv1.0/{}/{kind}/{}/{d}", self.group, self.node),
            None => format!("spBv1.0/{}/{kind}/{}", self.group, self.node),
        }
    }

    fn next_seq(&mut self) -> u8 {
        let s = self.seq;
        self.seq = self.seq.wrapping_add(1);
        s
    }

    pub fn ncmd_topic(&self) -> String {
        self.topic("NCMD", None)
    }

    /// The will: NDEATH with this session's bdSeq (and no seq).
    pub fn ndeath(&self, now_ms: u64) -> Message {
        let bd = Value::I64(self.bd_seq as i64);
        let metric = Metric { name: Some("bdSeq"), alias: None, timestamp_ms: now_ms, value: &bd, historical: false };
        Message { topic: self.topic("NDEATH", None), payload: payload(now_ms, None, &[metric]) }
    }

    /// NBIRTH (seq 0) and a DBIRTH for every device known to be online: the start of
    /// a session, or the answer to a rebirth request.
    pub fn birth(&mut self, now_ms: u64) -> Vec<Message> {
        self.seq = 0;
        let bd = Value::I64(self.bd_seq as i64);
        let rebirth = Value::Bool(false);
        let version = Value::Str(env!("CARGO_PKG_VERSION").to_string());
        let last_alert = self.last_alert.clone();
        let named =
            |name, value| Metric { name: Some(name), alias: None, timestamp_ms: now_ms, value, historical: false };
        let metrics = [
            named("bdSeq", &bd),
            named("Node Control/Rebirth", &rebirth),
            named("Properties/monserv version", &version),
            named("Alerts/Last", &last_alert),
        ];
        let seq = self.next_seq();
        let mut out =
            vec![Message { topic: self.topic("NBIRTH", None), payload: payload(now_ms, Some(seq), &metrics) }];
        let online: Vec<String> = self.devices.iter().filter(|(_, d)| d.online).map(|(id, _)| id.clone()).collect();
        for id in online {
            out.push(self.dbirth(&id, now_ms));
        }
        out
    }

    fn dbirth(&mut self, id: &str, now_ms: u64) -> Message {
        let mut next_alias = self.next_alias;
        let device = self.devices.entry(id.to_string()).or_default();
        let mut names: Vec<&String> = device.last.keys().collect();
        names.sort();
        for name in &names {
            if !device.aliases.contains_key(*name) {
                device.aliases.insert((*name).clone(), next_alias);
                next_alias += 1;
            }
        }
        let metrics: Vec<Metric<'_>> = names
            .iter()
            .map(|name| Metric {
                name: Some(name.as_str()),
                alias: device.aliases.get(*name).copied(),
                timestamp_ms: now_ms,
                value: &device.last[*name],
                historical: false,
            })
            .collect();
        let body = payload(now_ms, None, &metrics);
        self.next_alias = next_alias;
        let seq = self.next_seq();
        Message { topic: self.topic("DBIRTH", Some(id)), payload: with_seq(body, seq) }
    }

    /// What one round means for the devices: births, data that changed, deaths.
    pub fn round(&mut self, snapshot: &Snapshot, now_ms: u64) -> Vec<Message> {
        let mut out = Vec::new();
        for t in &snapshot.targets {
            let id = device_id(&t.url);
            let online = t.status == HostStatus::Online && t.collected;
            let was_online = self.devices.get(&id).is_some_and(|d| d.online);
            if !online {
                if was_online {
                    if let Some(d) = self.devices.get_mut(&id) {
                        d.online = false;
                    }
                    let seq = self.next_seq();
                    let topic = self.topic("DDEATH", Some(&id));
                    out.push(Message { topic, payload: payload(now_ms, Some(seq), &[]) });
                }
                continue;
            }
            let values = device_metrics(t);
            let device = self.devices.entry(id.clone()).or_default();
            let same_set = device.online
                && values.len() == device.last.len()
                && values.iter().all(|(name, _)| device.aliases.contains_key(name));
            if !same_set {
                device.last = values.into_iter().collect();
                device.online = true;
                out.push(self.dbirth(&id, now_ms));
                continue;
            }
            let mut changed: Vec<(u64, Value)> = Vec::new();
            for (name, v) in values {
                if device.last.get(&name) == Some(&v) {
                    continue;
                }
                if let Some(alias) = device.aliases.get(&name).copied() {
                    device.last.insert(name, v.clone());
                    changed.push((alias, v));
                }
            }
            if changed.is_empty() {
                continue;
            }
            let metrics: Vec<Metric<'_>> = changed
                .iter()
                .map(|(alias, v)| Metric {
                    name: None,
                    alias: Some(*alias),
                    timestamp_ms: now_ms,
                    value: v,
                    historical: false,
                })
                .collect();
            let body = payload(now_ms, None, &metrics);
            let seq = self.next_seq();
            out.push(Message { topic: self.topic("DDATA", Some(&id)), payload: with_seq(body, seq) });
        }
        out
    }

    /// The `Alerts/Last` value the next NBIRTH carries.
    pub fn set_last_alert(&mut self, json: &str) {
        self.last_alert = Value::Str(json.to_string());
    }

    /// An alert or recovery, as the node's `Alerts/Last` metric (the `/ws` JSON).
    pub fn alert(&mut self, json: &str, now_ms: u64) -> Message {
        self.last_alert = Value::Str(json.to_string());
        let metric = Metric {
            name: Some("Alerts/Last"),
            alias: None,
            timestamp_ms: now_ms,
            value: &self.last_alert,
            historical: false,
        };
        let body = payload(now_ms, None, &[metric]);
        let seq = self.next_seq();
        Message { topic: self.topic("NDATA", None), payload: with_seq(body, seq) }
    }
}

impl EdgeNode {
    /// A round kept while nothing could be published, sent after the births: every
    /// value of every born device, by alias, flagged historical, at the round's time.
    pub fn historical(&mut self, snapshot: &Snapshot, at_ms: u64) -> Vec<Message> {
        let mut out = Vec::new();
        for t in &snapshot.targets {
            if t.status != HostStatus::Online || !t.collected {
                continue;
            }
            let id = device_id(&t.url);
            let Some(device) = self.devices.get(&id) else { continue };
            let values: Vec<(u64, Value)> = device_metrics(t)
                .into_iter()
                .filter_map(|(name, v)| device.aliases.get(&name).map(|a| (*a, v)))
                .collect();
            let metrics: Vec<Metric<'_>> = values
                .iter()
                .map(|(alias, v)| Metric {
                    name: None,
                    alias: Some(*alias),
                    timestamp_ms: at_ms,
                    value: v,
                    historical: true,
                })
                .collect();
            let body = payload(at_ms, None, &metrics);
            let seq = self.next_seq();
            out.push(Message { topic: self.topic("DDATA", Some(&id)), payload: with_seq(body, seq) });
        }
        out
    }
}

/// Whether an NCMD payload asks for a rebirth (`Node Control/Rebirth` = true). The
/// payload comes from the broker, so it is walked with every length checked.
pub fn rebirth_requested(payload: &[u8]) -> bool {
    fields(payload).any(|(field, value)| {
        let Field::Bytes(metric) = value else { return false };
        if field != 2 {
            return false;
        }
        let (mut named, mut set) = (false, false);
        for (f, v) in fields(metric) {
            match (f, v) {
                (1, Field::Bytes(name)) => named = name == b"Node Control/Rebirth",
                (14, Field::Varint(b)) => set = b != 0,
                _ => {}
            }
        }
        named && set
    })
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// The top-level fields of a protobuf message; stops at the first malformed one.
fn fields(mut p: &[u8]) -> impl Iterator<Item = (u64, Field<'_>)> {
    fn varint(p: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = p.split_first()?;
            *p = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    std::iter::from_fn(move || {
        let key = varint(&mut p)?;
        let field = match key & 7 {
            0 => Field::Varint(varint(&mut p)?),
            1 | 5 => {
                let n = if key & 7 == 1 { 8 } else { 4 };
                p = p.get(n..)?;
                Field::Fixed
            }
            2 => {
                let n = usize::try_from(varint(&mut p)?).ok()?;
                let bytes = p.get(..n)?;
                p = &p[n..];
                Field::Bytes(bytes)
            }
            _ => return None,
        };
        Some((key >> 3, field))
    })
}

/// Append `seq = 3` to an encoded payload (fields may come in any order).
fn with_seq(mut body: Vec<u8>, seq: u8) -> Vec<u8> {
    body.push(0x18);
    varint(&mut body, u64::from(seq));
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Disk, ServerMetrics};

    fn target(url: &str, online: bool, mem_used: u64, disks: &[&str]) -> TargetReport {
        let status = if online { HostStatus::Online } else { HostStatus::Offline };
        TargetReport {
            url: url.into(),
            status,
            metrics: ServerMetrics {
                hostname: "plc-7".into(),
                uptime_seconds: 60,
                memory: crate::model::Memory {
                    total: 100,
                    used: mem_used,
                    free: 100 - mem_used,
                    used_percent: mem_used as f64,
                },
                disks: disks
                    .iter()
                    .map(|m| Disk {
                        device: "/dev/x".into(),
                        mountpoint: m.to_string(),
                        fstype: "ext4".into(),
                        total: 10,
                        used: 5,
                        free: 5,
                        used_percent: 50.0,
                    })
                    .collect(),
                top_procs_by_mem: vec![],
                generated_at_utc: String::new(),
                cpu: Default::default(),
                status,
                error: None,
            },
            collected: true,
            last_update: None,
            consecutive_failures: 0,
            last_error_kind: None,
            poll_duration: None,
            last_success: None,
            facts: Default::default(),
        }
    }

    fn snap(targets: Vec<TargetReport>) -> Snapshot {
        Snapshot { round: 1, unix_ms: 0, targets }
    }

    fn kinds(messages: &[Message]) -> Vec<String> {
        messages.iter().map(|m| m.topic.split('/').skip(2).collect::<Vec<_>>().join("/")).collect()
    }

    fn read_varint(p: &[u8], at: &mut usize) -> u64 {
        let mut v = 0;
        for shift in (0..64).step_by(7) {
            let b = p[*at];
            *at += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
        }
        v
    }

    /// The payload's top-level `seq` (field 3), walking its fields as protobuf does.
    fn seq_of(m: &Message) -> u8 {
        let (p, mut at, mut seq) = (&m.payload, 0, None);
        while at < p.len() {
            let key = read_varint(p, &mut at);
            match key & 7 {
                0 => {
                    let v = read_varint(p, &mut at);
                    if key >> 3 == 3 {
                        seq = Some(v);
                    }
                }
                2 => at += read_varint(p, &mut at) as usize,
                1 => at += 8,
                other => panic!("wire type {other}"),
            }
        }
        u8::try_from(seq.unwrap_or_else(|| panic!("no seq in {}", m.topic))).unwrap()
    }

    #[test]
    fn devices_are_born_report_changes_and_die() {
        let mut node = EdgeNode::new("plant", "gw-1", 3);
        let birth = node.birth(1000);
        assert_eq!(kinds(&birth), ["NBIRTH/gw-1"]);
        assert_eq!(seq_of(&birth[0]), 0);
        let ssh = "ssh://scada:***@10.0.0.5:22";
        let first =
            node.round(&snap(vec![target("local", true, 10, &["/"]), target(ssh, true, 20, &["/", "/var"])]), 2000);
        assert_eq!(kinds(&first), ["DBIRTH/gw-1/local", "DBIRTH/gw-1/10.0.0.5:22"]);
        assert_eq!((seq_of(&first[0]), seq_of(&first[1])), (1, 2));
        // Nothing changed: nothing sent. One value changed: a DDATA with it alone.
        assert!(node
            .round(&snap(vec![target("local", true, 10, &["/"]), target(ssh, true, 20, &["/", "/var"])]), 3000)
            .is_empty());
        let data =
            node.round(&snap(vec![target("local", true, 11, &["/"]), target(ssh, true, 20, &["/", "/var"])]), 4000);
        assert_eq!(kinds(&data), ["DDATA/gw-1/local"]);
        assert!(data[0].payload.len() < 80, "memory used, free and percent by alias only: {}", data[0].payload.len());
        // A disk goes away: a new birth. Offline: a death, once; back: a birth.
        let reborn = node.round(&snap(vec![target("local", true, 11, &["/"]), target(ssh, true, 20, &["/"])]), 5000);
        assert_eq!(kinds(&reborn), ["DBIRTH/gw-1/10.0.0.5:22"]);
        let dead = node.round(&snap(vec![target("local", true, 11, &["/"]), target(ssh, false, 20, &["/"])]), 6000);
        assert_eq!(kinds(&dead), ["DDEATH/gw-1/10.0.0.5:22"]);
        assert!(node
            .round(&snap(vec![target("local", true, 11, &["/"]), target(ssh, false, 20, &["/"])]), 7000)
            .is_empty());
        let back = node.round(&snap(vec![target("local", true, 11, &["/"]), target(ssh, true, 20, &["/"])]), 8000);
        assert_eq!(kinds(&back), ["DBIRTH/gw-1/10.0.0.5:22"]);
        // A rebirth: NBIRTH seq 0 and every online device again.
        let again = node.birth(9000);
        assert_eq!(kinds(&again), ["NBIRTH/gw-1", "DBIRTH/gw-1/10.0.0.5:22", "DBIRTH/gw-1/local"]);
        assert_eq!(seq_of(&again[0]), 0);
    }

    #[test]
    fn seq_wraps_after_255() {
        let mut node = EdgeNode::new("g", "n", 0);
        node.birth(0);
        let mut last = 0;
        for i in 1..=300u64 {
            let m = node.alert("{}", i);
            let seq = seq_of(&m);
            assert_eq!(u64::from(seq), i % 256, "message {i}");
            last = seq;
        }
        assert_eq!(last, (300 % 256) as u8);
    }

    #[test]
    fn rebirth_commands_are_read_and_garbage_is_not() {
        let yes = Value::Bool(true);
        let no = Value::Bool(false);
        let cmd = |name, v| {
            payload(1, None, &[Metric { name: Some(name), alias: None, timestamp_ms: 1, value: v, historical: false }])
        };
        assert!(rebirth_requested(&cmd("Node Control/Rebirth", &yes)));
        assert!(!rebirth_requested(&cmd("Node Control/Rebirth", &no)));
        assert!(!rebirth_requested(&cmd("Node Control/Reboot", &yes)));
        let good = cmd("Node Control/Rebirth", &yes);
        for cut in 0..good.len() {
            let _ = rebirth_requested(&good[..cut]);
        }
        assert!(!rebirth_requested(&[0x12, 0xff, 0xff, 0xff, 0xff, 0x0f]));
        assert!(!rebirth_requested(&[0xff; 20]));
    }

    #[test]
    fn device_ids_are_topic_safe() {
        assert_eq!(device_id("local"), "local");
        assert_eq!(device_id("ssh://scada:***@10.0.0.5:22"), "10.0.0.5:22");
        assert_eq!(device_id("ssh://u@[fe80::1]:22"), "[fe80::1]:22");
        assert_eq!(device_id("http://agent.plant:8080/metrics"), "agent.plant:8080_metrics");
        assert_eq!(device_id("ssh://a@b+c#d"), "b_c_d");
    }
}
