//! The Kafka sink: a small producer speaking the Kafka protocol itself (no C library,
//! and no second crypto stack: TLS is the project's rustls), which is all a sink
//! needs: ApiVersions, SASL PLAIN, Metadata v4 and Produce v3 with one record batch
//! (magic 2, CRC-32C) per partition, `acks = all` as the Go MonServ asked.
//!
//! Records carry the alert key as their key and go to partition
//! `hash(key) % partitions`, so order per alert key holds. Connections are kept
//! between deliveries and dropped on any error (the next delivery reconnects from
//! the bootstrap list and asks for metadata again).
//!
//! Framing and record encoding are pure functions, tested below; the test suite
//! checks the whole path against a real Kafka-protocol broker.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

use super::SendError;
use crate::config::KafkaSink;
use crate::store::alerts::Transition;
use crate::tls::Stream;

const TIMEOUT: Duration = Duration::from_secs(15);
/// Largest response accepted (metadata of a big cluster fits easily).
const MAX_RESPONSE: usize = 8 << 20;

const API_PRODUCE: i16 = 0;
const API_METADATA: i16 = 3;
const API_SASL_HANDSHAKE: i16 = 17;
const API_VERSIONS: i16 = 18;
const API_SASL_AUTHENTICATE: i16 = 36;

/// The Go payload, fields in the Go order, plus `alert_type`.
#[derive(Debug, Serialize)]
pub struct Payload<'a> {
    pub ip_address: &'a str,
    pub protocol: &'a str,
    pub id_rtu: &'a str,
    pub action: &'a str,
    pub address: &'a str,
    pub channel: i64,
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub ca: i64,
    pub tag: String,
    pub jenis: &'a str,
    pub group: &'a str,
    #[serde(serialize_with = "go_float")]
    pub value: f64,
    /// Milliseconds since the epoch.
    pub time: u64,
    pub general_action: i64,
    pub subject: &'a str,
    /// `alert` or `recovery` (the Go payload could not tell them apart).
    pub alert_type: &'a str,
}

/// Go's encoding/json writes a whole float64 without a fraction (`1`, not `1.0`).
fn go_float<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        s.serialize_i64(*v as i64)
    } else {
        s.serialize_f64(*v)
    }
}

pub fn payload<'a>(sink: &'a KafkaSink, t: &'a Transition) -> Payload<'a> {
    let p = &sink.payload;
    Payload {
        ip_address: &p.ip_address,
        protocol: &p.protocol,
        id_rtu: &p.id_rtu,
        action: &p.action,
        address: &p.address,
        channel: p.channel,
        kind: &p.kind,
        ca: p.ca,
        tag: t.subject.replace(' ', "").to_uppercase(),
        jenis: sink.jenis.for_subject(&t.subject),
        group: &p.group,
        value: p.value,
        time: t.time * 1000,
        general_action: p.general_action,
        subject: &t.subject,
        alert_type: &t.alert_type,
    }
}

// ---- encoding -------------------------------------------------------------------

const CRC32C: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0x82F6_3B78 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

pub fn crc32c(data: &[u8]) -> u32 {
    !data.iter().fold(!0u32, |c, b| CRC32C[((c ^ u32::from(*b)) & 0xff) as usize] ^ (c >> 8))
}

fn varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        if z < 0x80 {
            out.push(z as u8);
            return;
        }
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len().min(i16::MAX as usize) as i16).to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..s.len().min(i16::MAX as usize)]);
}

/// One record batch (magic 2) of `(key, value)` records, all at `timestamp_ms`.
pub fn record_batch(records: &[(&[u8], &[u8])], timestamp_ms: i64) -> Vec<u8> {
    let mut body = Vec::new(); // from attributes to the end: what the CRC covers
    body.extend_from_slice(&0i16.to_be_bytes()); // attributes: no compression
    body.extend_from_slice(&(records.len() as i32 - 1).to_be_bytes()); // last offset delta
    body.extend_from_slice(&timestamp_ms.to_be_bytes()); // first timestamp
    body.extend_from_slice(&timestamp_ms.to_be_bytes()); // max timestamp
    body.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    body.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    body.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    body.extend_from_slice(&(records.len() as i32).to_be_bytes());
    for (i, (key, value)) in records.iter().enumerate() {
        let mut r = vec![0u8]; // attributes
        varint(&mut r, 0); // timestamp delta
        varint(&mut r, i as i64); // offset delta
        varint(&mut r, key.len() as i64);
        r.extend_from_slice(key);
        varint(&mut r, value.len() as i64);
        r.extend_from_slice(value);
        varint(&mut r, 0); // headers
        varint(&mut body, r.len() as i64);
        body.extend_from_slice(&r);
    }
    let mut batch = Vec::with_capacity(body.len() + 21);
    batch.extend_from_slice(&0i64.to_be_bytes()); // base offset
    batch.extend_from_slice(&((body.len() + 9) as i32).to_be_bytes()); // length after this field
    batch.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
    batch.push(2); // magic
    batch.extend_from_slice(&crc32c(&body).to_be_bytes());
    batch.extend_from_slice(&body);
    batch
}

/// SaslAuthenticate v0's body for PLAIN (RFC 4616): `\0user\0password` as bytes.
pub fn sasl_plain(user: &str, password: &str) -> Vec<u8> {
    let token = format!("\0{user}\0{password}");
    let mut body = (token.len() as i32).to_be_bytes().to_vec();
    body.extend_from_slice(token.as_bytes());
    body
}

/// A bounds-checked reader over a response body.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("response cut short".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn i16(&mut self) -> Result<i16, String> {
        Ok(i16::from_be_bytes([self.take(1)?[0], self.take(1)?[0]]))
    }
    fn i32(&mut self) -> Result<i32, String> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn skip(&mut self, n: usize) -> Result<(), String> {
        self.take(n).map(|_| ())
    }
    fn string(&mut self) -> Result<Option<String>, String> {
        let n = self.i16()?;
        if n < 0 {
            return Ok(None);
        }
        Ok(Some(String::from_utf8_lossy(self.take(n as usize)?).into_owned()))
    }
    fn count(&mut self) -> Result<usize, String> {
        let n = self.i32()?;
        if n < 0 {
            return Ok(0);
        }
        if n as usize > self.0.len() {
            return Err("array longer than the response".into());
        }
        Ok(n as usize)
    }
}

/// Partition leaders of the topic, and where each broker is.
#[derive(Debug, Default, PartialEq)]
pub struct Metadata {
    pub brokers: HashMap<i32, (String, u16)>,
    /// Leader node per partition index, in index order.
    pub partitions: Vec<(i32, i32)>,
}

/// Parse a Metadata v4 response body for `topic`.
pub fn parse_metadata(body: &[u8], topic: &str) -> Result<Metadata, String> {
    let mut r = Reader(body);
    r.skip(4)?; // throttle
    let mut m = Metadata::default();
    for _ in 0..r.count()? {
        let node = r.i32()?;
        let host = r.string()?.unwrap_or_default();
        let port = r.i32()?;
        r.string()?; // rack
        m.brokers.insert(node, (host, u16::try_from(port).unwrap_or(0)));
    }
    r.string()?; // cluster id
    r.skip(4)?; // controller
    for _ in 0..r.count()? {
        let error = r.i16()?;
        let name = r.string()?.unwrap_or_default();
        r.skip(1)?; // internal
        let mut partitions = Vec::new();
        for _ in 0..r.count()? {
            r.skip(2)?; // partition error
            let index = r.i32()?;
            let leader = r.i32()?;
            for _ in 0..2 {
                let n = r.count()?;
                r.skip(4 * n)?;
            }
            partitions.push((index, leader));
        }
        if name == topic {
            if error != 0 {
                return Err(format!("topic {topic:?}: {}", error_name(error)));
            }
            partitions.sort_unstable();
            m.partitions = partitions;
        }
    }
    if m.partitions.is_empty() {
        return Err(format!("topic {topic:?} has no partitions (does it exist?)"));
    }
    Ok(m)
}

/// Parse a Produce v3 response: the first partition error, if any.
pub fn parse_produce(body: &[u8]) -> Result<Vec<i16>, String> {
    let mut r = Reader(body);
    let mut errors = Vec::new();
    for _ in 0..r.count()? {
        r.string()?;
        for _ in 0..r.count()? {
            r.skip(4)?;
            errors.push(r.i16()?);
            r.skip(16)?; // base offset, log append time
        }
    }
    Ok(errors)
}

fn error_name(code: i16) -> String {
    let name = match code {
        3 => "UNKNOWN_TOPIC_OR_PARTITION",
        5 => "LEADER_NOT_AVAILABLE",
        6 => "NOT_LEADER_OR_FOLLOWER",
        7 => "REQUEST_TIMED_OUT",
        10 => "MESSAGE_TOO_LARGE",
        17 => "INVALID_TOPIC_EXCEPTION",
        19 => "NOT_ENOUGH_REPLICAS",
        29 => "TOPIC_AUTHORIZATION_FAILED",
        31 => "CLUSTER_AUTHORIZATION_FAILED",
        33 => "UNSUPPORTED_SASL_MECHANISM",
        34 => "ILLEGAL_SASL_STATE",
        35 => "UNSUPPORTED_VERSION",
        58 => "SASL_AUTHENTICATION_FAILED",
        _ => "",
    };
    format!("error {code} {name}").trim_end().to_string()
}

/// Worth retrying: the cluster is moving or busy. Others (authorization, too large,
/// bad topic) are permanent.
fn retriable(code: i16) -> bool {
    matches!(code, 3 | 5 | 6 | 7 | 8 | 13 | 14 | 15 | 16 | 19 | 20 | 56)
}

// ---- connections ----------------------------------------------------------------

struct Conn {
    io: Box<dyn Stream>,
    correlation: i32,
    client_id: String,
}

impl Conn {
    async fn request(&mut self, api: i16, version: i16, body: &[u8]) -> Result<Vec<u8>, String> {
        self.correlation = self.correlation.wrapping_add(1);
        let mut frame = Vec::with_capacity(body.len() + 64);
        frame.extend_from_slice(&[0; 4]);
        frame.extend_from_slice(&api.to_be_bytes());
        frame.extend_from_slice(&version.to_be_bytes());
        frame.extend_from_slice(&self.correlation.to_be_bytes());
        string(&mut frame, &self.client_id);
        frame.extend_from_slice(body);
        let len = (frame.len() - 4) as i32;
        frame[..4].copy_from_slice(&len.to_be_bytes());
        self.io.write_all(&frame).await.map_err(|e| e.to_string())?;
        self.io.flush().await.map_err(|e| e.to_string())?;
        let len = self.io.read_i32().await.map_err(|e| e.to_string())?;
        if !(4..=MAX_RESPONSE as i32).contains(&len) {
            return Err(format!("response of {len} bytes refused"));
        }
        let mut buf = vec![0; len as usize];
        self.io.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        if buf[..4] != self.correlation.to_be_bytes() {
            return Err("response for another request".into());
        }
        buf.drain(..4);
        Ok(buf)
    }
}

/// A record's key and value.
type Record = (Vec<u8>, Vec<u8>);

/// The sink's connections and what it knows of the cluster.
pub struct Producer {
    sink: KafkaSink,
    tls: Option<Arc<rustls::ClientConfig>>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    metadata: Option<Metadata>,
    conns: HashMap<i32, Conn>,
}

impl Producer {
    pub fn new(sink: KafkaSink, tls: Option<Arc<rustls::ClientConfig>>) -> Producer {
        Producer { sink, tls, state: Mutex::default() }
    }

    async fn connect(&self, host: &str, port: u16) -> Result<Conn, String> {
        let io = crate::tls::connect(host, port, self.tls.as_ref()).await.map_err(|e| format!("{host}:{port}: {e}"))?;
        let mut conn = Conn { io, correlation: 0, client_id: self.sink.client_id.clone() };
        let versions = conn.request(API_VERSIONS, 0, &[]).await.map_err(|e| format!("{host}:{port}: {e}"))?;
        let mut r = Reader(&versions);
        let error = r.i16()?;
        if error != 0 {
            return Err(format!("{host}:{port}: ApiVersions: {}", error_name(error)));
        }
        let mut ranges = HashMap::new();
        for _ in 0..r.count()? {
            let (api, min, max) = (r.i16()?, r.i16()?, r.i16()?);
            ranges.insert(api, (min, max));
        }
        for (api, version, name) in [(API_PRODUCE, 3, "Produce v3"), (API_METADATA, 4, "Metadata v4")] {
            if !ranges.get(&api).is_some_and(|(min, max)| (*min..=*max).contains(&version)) {
                return Err(format!("{host}:{port}: the broker does not speak {name}"));
            }
        }
        if let Some(password) = &self.sink.password {
            let mut body = Vec::new();
            string(&mut body, "PLAIN");
            let reply = conn
                .request(API_SASL_HANDSHAKE, 1, &body)
                .await
                .map_err(|e| format!("{host}:{port}: SASL PLAIN handshake: {e} (does the broker offer PLAIN?)"))?;
            let code = Reader(&reply).i16()?;
            if code != 0 {
                return Err(format!("{host}:{port}: SASL PLAIN refused: {}", error_name(code)));
            }
            let user = self.sink.username.as_deref().unwrap_or_default();
            let body = sasl_plain(user, password.expose());
            let reply = conn.request(API_SASL_AUTHENTICATE, 0, &body).await?;
            let mut r = Reader(&reply);
            let code = r.i16()?;
            if code != 0 {
                let msg = r.string().ok().flatten().unwrap_or_default();
                return Err(format!("{host}:{port}: SASL authentication failed: {} {msg}", error_name(code)));
            }
        }
        Ok(conn)
    }

    async fn refresh(&self, state: &mut State) -> Result<(), String> {
        let mut last = String::from("no broker");
        for (host, port) in &self.sink.brokers {
            let mut conn = match self.connect(host, *port).await {
                Ok(c) => c,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            let mut body = 1i32.to_be_bytes().to_vec();
            string(&mut body, &self.sink.topic);
            body.push(1); // allow auto topic creation
            match conn.request(API_METADATA, 4, &body).await.and_then(|b| parse_metadata(&b, &self.sink.topic)) {
                Ok(m) => {
                    state.metadata = Some(m);
                    return Ok(());
                }
                Err(e) => last = format!("{host}:{port}: {e}"),
            }
        }
        Err(last)
    }

    /// Produce one record per transition; all or nothing from the caller's view.
    pub async fn send(&self, batch: &[Transition]) -> Result<(), SendError> {
        let mut state = self.state.lock().await;
        let result = tokio::time::timeout(TIMEOUT, self.produce(&mut state, batch)).await;
        let result = result.unwrap_or_else(|_| Err(SendError::Retry("kafka: timed out".into())));
        if result.is_err() {
            *state = State::default(); // reconnect and re-read metadata next time
        }
        result
    }

    async fn produce(&self, state: &mut State, batch: &[Transition]) -> Result<(), SendError> {
        let retry = |e: String| SendError::Retry(format!("kafka: {e}"));
        if state.metadata.is_none() {
            self.refresh(state).await.map_err(retry)?;
        }
        let Some(meta) = state.metadata.as_ref() else { return Err(retry("no metadata".into())) };
        // Records per partition, in order.
        let mut by_partition: Vec<(i32, i32, Vec<Record>)> = Vec::new();
        for t in batch {
            let value = serde_json::to_vec(&payload(&self.sink, t)).map_err(|e| SendError::Permanent(e.to_string()))?;
            let hash = crate::model::fnv1a(t.key.as_bytes());
            let (partition, leader) = meta.partitions[hash as usize % meta.partitions.len()];
            match by_partition.iter_mut().find(|(p, _, _)| *p == partition) {
                Some((_, _, records)) => records.push((t.key.clone().into_bytes(), value)),
                None => by_partition.push((partition, leader, vec![(t.key.clone().into_bytes(), value)])),
            }
        }
        let now_ms = batch.first().map_or(0, |t| t.time as i64 * 1000);
        for (partition, leader, records) in by_partition {
            let Some((host, port)) = meta.brokers.get(&leader).cloned() else {
                return Err(retry(format!("partition {partition} has no leader")));
            };
            let conn = match state.conns.entry(leader) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(self.connect(&host, port).await.map_err(retry)?)
                }
            };
            let refs: Vec<(&[u8], &[u8])> = records.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
            let records = record_batch(&refs, now_ms);
            let mut body = (-1i16).to_be_bytes().to_vec(); // no transactional id
            body.extend_from_slice(&(-1i16).to_be_bytes()); // acks = all
            body.extend_from_slice(&(TIMEOUT.as_millis() as i32 - 2000).to_be_bytes());
            body.extend_from_slice(&1i32.to_be_bytes());
            string(&mut body, &self.sink.topic);
            body.extend_from_slice(&1i32.to_be_bytes());
            body.extend_from_slice(&partition.to_be_bytes());
            body.extend_from_slice(&(records.len() as i32).to_be_bytes());
            body.extend_from_slice(&records);
            let reply = conn.request(API_PRODUCE, 3, &body).await.map_err(retry)?;
            for code in parse_produce(&reply).map_err(retry)? {
                if code != 0 {
                    let why = format!("kafka topic {:?} partition {partition}: {}", self.sink.topic, error_name(code));
                    return Err(if retriable(code) { SendError::Retry(why) } else { SendError::Permanent(why) });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn zigzag_varints() {
        let enc = |v| {
            let mut out = Vec::new();
            varint(&mut out, v);
            out
        };
        assert_eq!(enc(0), [0]);
        assert_eq!(enc(-1), [1]);
        assert_eq!(enc(1), [2]);
        assert_eq!(enc(64), [0x80, 0x01]);
        assert_eq!(enc(-65), [0x81, 0x01]);
    }

    #[test]
    fn a_record_batch_is_self_consistent() {
        let b = record_batch(&[(b"k".as_slice(), b"v1".as_slice()), (b"k", b"v2")], 1_700_000_000_000);
        let length = i32::from_be_bytes([b[8], b[9], b[10], b[11]]) as usize;
        assert_eq!(length + 12, b.len());
        assert_eq!(b[16], 2, "magic");
        let crc = u32::from_be_bytes([b[17], b[18], b[19], b[20]]);
        assert_eq!(crc, crc32c(&b[21..]));
        assert_eq!(i32::from_be_bytes([b[57], b[58], b[59], b[60]]), 2, "record count");
    }

    #[test]
    fn sasl_plain_bytes() {
        assert_eq!(sasl_plain("u", "pw"), [0, 0, 0, 5, 0, b'u', 0, b'p', b'w']);
        let mut handshake = Vec::new();
        string(&mut handshake, "PLAIN");
        assert_eq!(handshake, [0, 5, b'P', b'L', b'A', b'I', b'N']);
    }

    #[test]
    fn responses_are_parsed_defensively() {
        let mut m = Vec::new();
        m.extend_from_slice(&0i32.to_be_bytes()); // throttle
        m.extend_from_slice(&1i32.to_be_bytes()); // brokers
        m.extend_from_slice(&7i32.to_be_bytes());
        string(&mut m, "127.0.0.1");
        m.extend_from_slice(&9092i32.to_be_bytes());
        m.extend_from_slice(&(-1i16).to_be_bytes()); // rack
        m.extend_from_slice(&(-1i16).to_be_bytes()); // cluster id
        m.extend_from_slice(&7i32.to_be_bytes()); // controller
        m.extend_from_slice(&1i32.to_be_bytes()); // topics
        m.extend_from_slice(&0i16.to_be_bytes());
        string(&mut m, "datapoint");
        m.push(0);
        m.extend_from_slice(&1i32.to_be_bytes()); // partitions
        m.extend_from_slice(&0i16.to_be_bytes());
        m.extend_from_slice(&0i32.to_be_bytes());
        m.extend_from_slice(&7i32.to_be_bytes());
        m.extend_from_slice(&0i32.to_be_bytes());
        m.extend_from_slice(&0i32.to_be_bytes());
        let meta = parse_metadata(&m, "datapoint").unwrap();
        assert_eq!(meta.partitions, [(0, 7)]);
        assert_eq!(meta.brokers[&7], ("127.0.0.1".to_string(), 9092));
        assert!(parse_metadata(&m, "other").unwrap_err().contains("no partitions"));
        for cut in 0..m.len() {
            let _ = parse_metadata(&m[..cut], "datapoint"); // never panics
        }
        let mut huge = 0i32.to_be_bytes().to_vec();
        huge.extend_from_slice(&i32::MAX.to_be_bytes());
        assert!(parse_metadata(&huge, "t").is_err());
    }
}
