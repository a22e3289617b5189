//! Prometheus remote_write 1.0: every round's series pushed to each configured
//! receiver, in order, with nothing lost while the uplink is down (within the cap).
//!
//! One task per receiver owns its queue. A round arrives on a bounded channel, is
//! encoded once (sorted labels, external labels, stale markers for series that ended)
//! and queued in memory. The oldest queued rounds go out together (up to
//! `max_samples_per_send`) on a kept-alive connection. 2xx removes them; 429, 5xx and
//! connection errors keep them and retry with backoff (1 s doubling to 1 min); any
//! other 4xx drops them (counted, logged): retrying would never succeed.
//!
//! While a receiver is away the memory queue is moved, Snappy-compressed, to the
//! on-disk backlog (`store::backlog`) every `flush_interval` in one transaction, and at shutdown: an
//! idle or healthy link writes nothing to flash; `kill -9` loses at most the last
//! flush interval. The backlog always holds the older rounds, so sending it first
//! keeps every series in time order (receivers refuse out-of-order samples); it is
//! replayed at most `max_sends_per_second`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::prometheus::{snapshot_families, Out};
use super::wire::{encode_series, STALE_NAN};
use crate::config::{ExportConfig, RemoteWrite};
use crate::model::Snapshot;
use crate::store::backlog::{Backlog, Round};

/// Rounds waiting for the encoder; a full channel drops the round (counted).
const CHANNEL: usize = 16;
/// Memory queue bytes beyond which it goes to the backlog at once.
const MEMORY_MAX_BYTES: usize = 4 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What `/metrics` and the API show of a receiver.
#[derive(Debug, Default)]
pub struct Stats {
    pub url: String,
    pub samples_sent: AtomicU64,
    /// Dropped: refused for good (4xx) or over the backlog's cap.
    pub samples_dropped: AtomicU64,
    /// Rounds not taken because the encoder was behind (a full channel).
    pub rounds_dropped: AtomicU64,
    pub failed_sends: AtomicU64,
    pub backlog_bytes: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

/// The running exporters: hand each round to [`Exporter::publish`].
pub struct Exporter {
    receivers: Vec<(mpsc::Sender<Arc<Snapshot>>, Arc<Stats>)>,
}

impl Exporter {
    /// Start a task per receiver on `tracker`. Errors name the receiver (a bad CA
    /// file, an unusable backlog file).
    pub fn start(
        config: &ExportConfig,
        state_dir: &Path,
        tracker: &tokio_util::task::TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<Option<Exporter>, String> {
        if config.remote_write.is_empty() {
            return Ok(None);
        }
        let mut receivers = Vec::new();
        for (i, rw) in config.remote_write.iter().enumerate() {
            let at = format!("export.remote_write[{i}]");
            let tls = if rw.url.tls {
                if rw.tls.danger_accept_invalid_certs {
                    tracing::warn!(receiver = %rw.url, "danger_accept_invalid_certs: any certificate is accepted");
                }
                Some(crate::tls::client_config(&rw.tls).map_err(|e| format!("{at}: {e}"))?)
            } else {
                None
            };
            let path = state_dir.join(format!("remote_write-{:016x}.redb", fnv(&rw.url.to_string())));
            let backlog = Backlog::open(&path).map_err(|e| format!("{at}: {e}"))?;
            let stats = Arc::new(Stats { url: rw.url.to_string(), ..Stats::default() });
            stats.backlog_bytes.store(backlog.bytes(), Ordering::Relaxed);
            let (tx, rx) = mpsc::channel(CHANNEL);
            let sender = Sender {
                config: rw.clone(),
                external: config.external_labels.clone(),
                client: Client { tls, conn: None },
                backlog,
                memory: VecDeque::new(),
                memory_bytes: 0,
                encoder: Encoder::default(),
                stats: stats.clone(),
            };
            tracker.spawn(sender.run(rx, shutdown.clone()));
            receivers.push((tx, stats));
        }
        Ok(Some(Exporter { receivers }))
    }

    /// Queue a round for every receiver; never waits.
    pub fn publish(&self, snapshot: &Arc<Snapshot>) {
        for (tx, stats) in &self.receivers {
            if tx.try_send(snapshot.clone()).is_err() {
                stats.rounds_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn stats(&self) -> Vec<Arc<Stats>> {
        self.receivers.iter().map(|(_, s)| s.clone()).collect()
    }
}

fn fnv(s: &str) -> u64 {
    crate::model::fnv1a(s.as_bytes())
}

/// Encodes rounds; remembers which series the last round had, for stale markers.
/// Public for the benchmarks (`examples/bench.rs fleet`).
#[derive(Default)]
pub struct Encoder {
    /// Series seen last round, by label hash, with their labels.
    known: HashMap<u64, Vec<(String, String)>>,
}

struct RoundOut<'a> {
    encoded: Vec<u8>,
    samples: u32,
    timestamp_ms: i64,
    external: &'a [(String, String)],
    seen: HashSet<u64>,
    new: Vec<(u64, Vec<(String, String)>)>,
    known: &'a HashMap<u64, Vec<(String, String)>>,
}

impl Out for RoundOut<'_> {
    fn family(&mut self, _name: &'static str, _kind: &'static str, _help: &'static str) {}

    fn sample(&mut self, name: &'static str, labels: &[(&'static str, &str)], value: f64) {
        let mut all: Vec<(&str, &str)> = Vec::with_capacity(labels.len() + self.external.len() + 1);
        all.push(("__name__", name));
        all.extend(labels.iter().copied());
        all.extend(self.external.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        all.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut h = std::collections::hash_map::DefaultHasher::new();
        all.hash(&mut h);
        let key = h.finish();
        if self.seen.insert(key) && !self.known.contains_key(&key) {
            self.new.push((key, all.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()));
        }
        encode_series(&mut self.encoded, &mut all, value, self.timestamp_ms);
        self.samples += 1;
    }
}

impl Encoder {
    pub fn encode(&mut self, snapshot: &Snapshot, external: &[(String, String)], at: SystemTime) -> Round {
        let timestamp_ms = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let mut out = RoundOut {
            encoded: Vec::with_capacity(snapshot.targets.len() * 2048),
            samples: 0,
            timestamp_ms,
            external,
            seen: HashSet::new(),
            new: Vec::new(),
            known: &self.known,
        };
        snapshot_families(snapshot, &mut out);
        let RoundOut { mut encoded, mut samples, seen, new, .. } = out;
        // Series that ended (a host went offline, a disk went away): a stale marker.
        let ended: Vec<u64> = self.known.keys().filter(|k| !seen.contains(k)).copied().collect();
        for key in ended {
            if let Some(labels) = self.known.remove(&key) {
                let mut labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                encode_series(&mut encoded, &mut labels, f64::from_bits(STALE_NAN), timestamp_ms);
                samples += 1;
            }
        }
        self.known.extend(new);
        Round { samples, encoded }
    }

    /// Stale markers for every series (monserv is stopping: nothing will report them).
    fn all_stale(&mut self, at: SystemTime) -> Option<Round> {
        if self.known.is_empty() {
            return None;
        }
        let timestamp_ms = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let mut encoded = Vec::new();
        for labels in self.known.values() {
            let mut labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            encode_series(&mut encoded, &mut labels, f64::from_bits(STALE_NAN), timestamp_ms);
        }
        let samples = self.known.len() as u32;
        self.known.clear();
        Some(Round { samples, encoded })
    }
}

/// Why a send did not land.
enum Failure {
    /// Keep the rounds and try again later.
    Retry(String),
    /// The receiver refused them for good.
    Refused(String),
}

/// One kept-alive HTTP/1.1 connection to the receiver.
struct Client {
    tls: Option<Arc<rustls::ClientConfig>>,
    conn: Option<(hyper::client::conn::http1::SendRequest<Full<Bytes>>, tokio::task::JoinHandle<()>)>,
}

impl Client {
    async fn post(&mut self, rw: &RemoteWrite, body: Bytes) -> Result<(), Failure> {
        let url = &rw.url;
        if self.conn.as_ref().is_none_or(|(s, _)| s.is_closed()) {
            let connect = crate::tls::connect(&url.host, url.port, self.tls.as_ref());
            let stream = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(Failure::Retry(format!("cannot connect: {e}"))),
                Err(_) => return Err(Failure::Retry("cannot connect: timed out".into())),
            };
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| Failure::Retry(format!("handshake: {e}")))?;
            let task = tokio::spawn(async move {
                let _ = conn.await;
            });
            self.conn = Some((sender, task));
        }
        let Some((sender, _)) = self.conn.as_mut() else { return Err(Failure::Retry("no connection".into())) };
        let mut req = hyper::Request::post(url.path.as_str())
            .header(hyper::header::HOST, url.host_header())
            .header(hyper::header::CONTENT_TYPE, "application/x-protobuf")
            .header(hyper::header::CONTENT_ENCODING, "snappy")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .header(hyper::header::USER_AGENT, concat!("monserv/", env!("CARGO_PKG_VERSION")));
        for (name, value) in &rw.headers {
            req = req.header(name.as_str(), value.expose());
        }
        let req = req.body(Full::new(body)).map_err(|e| Failure::Refused(e.to_string()))?;
        let answer = tokio::time::timeout(SEND_TIMEOUT, async {
            sender.ready().await?;
            let resp = sender.send_request(req).await?;
            let status = resp.status();
            let body = http_body_util::Limited::new(resp.into_body(), 16 << 10).collect().await;
            Ok::<_, hyper::Error>((status, body.map(|b| b.to_bytes()).unwrap_or_default()))
        })
        .await;
        let (status, said) = match answer {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                self.drop_connection();
                return Err(Failure::Retry(format!("no answer: {e}")));
            }
            Err(_) => {
                self.drop_connection();
                return Err(Failure::Retry("no answer: timed out".into()));
            }
        };
        let said = || {
            let text = String::from_utf8_lossy(&said[..said.len().min(300)]).trim().to_string();
            crate::rules::output::escape_controls(text, false, &mut false)
        };
        match status.as_u16() {
            200..=299 => Ok(()),
            429 | 500..=599 => Err(Failure::Retry(format!("answered {status}: {}", said()))),
            _ => Err(Failure::Refused(format!("answered {status}: {}", said()))),
        }
    }

    fn drop_connection(&mut self) {
        if let Some((_, task)) = self.conn.take() {
            task.abort();
        }
    }
}

struct Sender {
    config: RemoteWrite,
    external: Vec<(String, String)>,
    client: Client,
    backlog: Backlog,
    memory: VecDeque<Round>,
    memory_bytes: usize,
    encoder: Encoder,
    stats: Arc<Stats>,
}

/// Where the rounds of one send came from.
enum Taken {
    Backlog(Vec<u64>),
    Memory(usize),
}

impl Sender {
    async fn run(mut self, mut rx: mpsc::Receiver<Arc<Snapshot>>, shutdown: CancellationToken) {
        let mut backoff = Duration::from_secs(1);
        let mut retry_at: Option<tokio::time::Instant> = None;
        let mut flush = tokio::time::interval(self.config.flush_interval);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let pace = Duration::from_secs_f64(1.0 / self.config.max_sends_per_second);
        let mut failing = false;
        loop {
            // Send while there is something to send and no retry is pending.
            let can_send = retry_at.is_none_or(|at| at <= tokio::time::Instant::now());
            if can_send && (!self.backlog.is_empty() || !self.memory.is_empty()) {
                let replaying = !self.backlog.is_empty();
                match self.send_oldest().await {
                    Ok(()) => {
                        if failing {
                            tracing::info!(receiver = %self.config.url, "remote_write receiver reachable again");
                        }
                        failing = false;
                        backoff = Duration::from_secs(1);
                        retry_at = None;
                        if replaying {
                            retry_at = Some(tokio::time::Instant::now() + pace);
                        }
                    }
                    Err(why) => {
                        self.stats.failed_sends.fetch_add(1, Ordering::Relaxed);
                        if !failing {
                            tracing::warn!(receiver = %self.config.url, error = %why, "remote_write failing; queueing");
                        }
                        *lock(&self.stats.last_error) = Some(why);
                        failing = true;
                        retry_at = Some(tokio::time::Instant::now() + backoff);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
                if shutdown.is_cancelled() {
                    break;
                }
                take_arrived(&mut rx, &mut self);
                continue;
            }
            let wait = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                round = rx.recv() => match round {
                    Some(snapshot) => self.accept(&snapshot, SystemTime::now()),
                    None => break,
                },
                _ = flush.tick() => {
                    if failing {
                        self.persist();
                    }
                }
                _ = wait => retry_at = None,
            }
        }
        // Stopping: every series ends here; what cannot be sent now waits on flash.
        if let Some(stale) = self.encoder.all_stale(SystemTime::now()) {
            self.push(stale);
        }
        if !failing && self.backlog.is_empty() {
            let _ = tokio::time::timeout(Duration::from_secs(2), self.send_oldest()).await;
        }
        self.persist();
        self.client.drop_connection();
    }

    fn accept(&mut self, snapshot: &Snapshot, at: SystemTime) {
        let round = self.encoder.encode(snapshot, &self.external, at);
        self.push(round);
    }

    fn push(&mut self, round: Round) {
        self.memory_bytes += round.encoded.len();
        self.memory.push_back(round);
        if self.memory_bytes > MEMORY_MAX_BYTES {
            self.persist();
        }
    }

    /// Move the memory queue to the backlog, in one transaction.
    fn persist(&mut self) {
        if self.memory.is_empty() {
            return;
        }
        // On flash compressed: about a fourteenth of the bytes written (and of the cap used).
        let rounds: Vec<Round> = self
            .memory
            .drain(..)
            .map(|r| Round { samples: r.samples, encoded: crate::snappy::compress(&r.encoded) })
            .collect();
        self.memory_bytes = 0;
        match self.backlog.append(&rounds, self.config.queue_max_bytes) {
            Ok(dropped) => {
                if dropped > 0 {
                    self.stats.samples_dropped.fetch_add(dropped, Ordering::Relaxed);
                    tracing::warn!(receiver = %self.config.url, samples = dropped, "remote_write backlog full: oldest samples dropped");
                }
            }
            Err(e) => {
                let samples: u64 = rounds.iter().map(|r| u64::from(r.samples)).sum();
                self.stats.samples_dropped.fetch_add(samples, Ordering::Relaxed);
                tracing::error!(receiver = %self.config.url, error = %e, samples, "cannot queue on flash: samples dropped");
            }
        }
        self.stats.backlog_bytes.store(self.backlog.bytes(), Ordering::Relaxed);
    }

    /// Send the oldest rounds (the backlog's first, then memory's).
    async fn send_oldest(&mut self) -> Result<(), String> {
        let max = self.config.max_samples_per_send;
        let (taken, body, samples) = if !self.backlog.is_empty() {
            let rounds = self.backlog.oldest(max).map_err(|e| e.to_string())?;
            let samples: u64 = rounds.iter().map(|(_, r)| u64::from(r.samples)).sum();
            let mut body = Vec::new();
            for (seq, r) in &rounds {
                match crate::snappy::decompress(&r.encoded, 256 << 20) {
                    Ok(raw) => body.extend_from_slice(&raw),
                    // A damaged entry (the file was corrupted underneath) is skipped, not sent.
                    Err(e) => {
                        tracing::error!(receiver = %self.config.url, seq, error = ?e, "unreadable backlog entry skipped")
                    }
                }
            }
            (Taken::Backlog(rounds.iter().map(|(s, _)| *s).collect()), body, samples)
        } else {
            let (mut n, mut samples, mut body) = (0, 0u64, Vec::new());
            for r in &self.memory {
                if n > 0 && samples + u64::from(r.samples) > max as u64 {
                    break;
                }
                body.extend_from_slice(&r.encoded);
                samples += u64::from(r.samples);
                n += 1;
            }
            (Taken::Memory(n), body, samples)
        };
        let result = self.client.post(&self.config, Bytes::from(crate::snappy::compress(&body))).await;
        let done = match result {
            Ok(()) => {
                self.stats.samples_sent.fetch_add(samples, Ordering::Relaxed);
                Ok(())
            }
            Err(Failure::Refused(why)) => {
                self.stats.samples_dropped.fetch_add(samples, Ordering::Relaxed);
                tracing::warn!(receiver = %self.config.url, error = %why, samples, "remote_write refused samples for good: dropped");
                *lock(&self.stats.last_error) = Some(why);
                Ok(())
            }
            Err(Failure::Retry(why)) => Err(why),
        };
        if done.is_ok() {
            match taken {
                Taken::Backlog(seqs) => {
                    if let Err(e) = self.backlog.remove(&seqs) {
                        tracing::error!(receiver = %self.config.url, error = %e, "cannot update the backlog");
                    }
                    self.stats.backlog_bytes.store(self.backlog.bytes(), Ordering::Relaxed);
                }
                Taken::Memory(n) => {
                    for r in self.memory.drain(..n) {
                        self.memory_bytes -= r.encoded.len();
                    }
                }
            }
        }
        done
    }
}

/// Take rounds that arrived meanwhile, so a long replay does not fill the channel.
fn take_arrived(rx: &mut mpsc::Receiver<Arc<Snapshot>>, sender: &mut Sender) {
    while let Ok(snapshot) = rx.try_recv() {
        sender.accept(&snapshot, SystemTime::now());
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{HostStatus, ServerMetrics, TargetReport};

    fn snapshot(round: u64, online: bool) -> Snapshot {
        let status = if online { HostStatus::Online } else { HostStatus::Offline };
        let metrics = ServerMetrics {
            hostname: "plc-1".into(),
            uptime_seconds: 5,
            memory: Default::default(),
            disks: vec![],
            top_procs_by_mem: vec![],
            generated_at_utc: String::new(),
            cpu: Default::default(),
            status,
            error: None,
        };
        let t = TargetReport {
            url: "local".into(),
            status,
            metrics,
            collected: true,
            last_update: None,
            consecutive_failures: u32::from(!online),
            last_error_kind: None,
            poll_duration: None,
            last_success: None,
            facts: Default::default(),
        };
        Snapshot { round, unix_ms: 0, targets: vec![t] }
    }

    #[test]
    fn series_that_end_get_a_stale_marker_once() {
        let mut e = Encoder::default();
        let external = [("site".to_string(), "north".to_string())];
        let at = UNIX_EPOCH + Duration::from_secs(1000);
        let online = e.encode(&snapshot(1, true), &external, at);
        // rounds, up, failures + 7 current values (no poll duration or last success yet)
        assert_eq!(online.samples, 10);
        let again = e.encode(&snapshot(2, true), &external, at);
        assert_eq!(again.samples, 10, "no marker while every series continues");
        let offline = e.encode(&snapshot(3, false), &external, at);
        assert_eq!(offline.samples, 3 + 7, "the 7 current values end with a stale marker each");
        let stale = STALE_NAN.to_le_bytes();
        assert_eq!(offline.encoded.windows(8).filter(|w| *w == stale).count(), 7);
        assert!(offline.encoded.windows(5).any(|w| w == b"north"), "external labels on every series");
        let later = e.encode(&snapshot(4, false), &external, at);
        assert_eq!(later.samples, 3, "a marker only once");
        assert_eq!(e.all_stale(at).unwrap().samples, 3);
        assert!(e.all_stale(at).is_none());
    }
}
