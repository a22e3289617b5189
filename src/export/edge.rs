//! The Sparkplug B edge node's MQTT session: one task owns the connection and the
//! node's state (`sparkplug::EdgeNode`), fed rounds and alerts on a bounded channel.
//!
//! Each connection is a session with the next `bdSeq` (persisted in `state_dir`
//! before connecting, since the will carries it): CONNECT with the NDEATH will,
//! SUBSCRIBE to the node's NCMD topic (rebirth) and, with a primary host
//! application configured, to its STATE topic. Without a primary host the node is
//! born at once; with one, only once STATE says it is online, and when it goes
//! offline the node publishes NDEATH and disconnects, as Sparkplug 3.0 asks. Rounds
//! that could not be published (broker away, primary host offline) are kept, up to
//! `history_max_bytes`, and sent after the next births as historical data.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::mqtt::{self, Incoming};
use super::sparkplug::{rebirth_requested, EdgeNode, Message};
use crate::config::Sparkplug;
use crate::model::Snapshot;

const CHANNEL: usize = 64;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

enum Event {
    Round(Arc<Snapshot>),
    Alert(String),
}

/// Hands rounds and alerts to the edge node's task; never waits.
pub struct Edge {
    tx: mpsc::Sender<Event>,
}

impl Edge {
    pub fn start(
        cfg: &Sparkplug,
        state_dir: &Path,
        tracker: &tokio_util::task::TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<Edge, String> {
        let tls = if cfg.tls {
            Some(
                crate::tls::client_config_with_identity(&cfg.tls_options, cfg.client_identity.as_ref())
                    .map_err(|e| format!("export.sparkplug: {e}"))?,
            )
        } else {
            None
        };
        let (tx, rx) = mpsc::channel(CHANNEL);
        let runner = Runner {
            cfg: cfg.clone(),
            tls,
            bd_seq_path: state_dir.join("sparkplug-bdseq"),
            latest: None,
            history: VecDeque::new(),
            history_bytes: 0,
            last_alert: None,
        };
        tracker.spawn(runner.run(rx, shutdown));
        Ok(Edge { tx })
    }

    pub fn publish_round(&self, snapshot: &Arc<Snapshot>) {
        let _ = self.tx.try_send(Event::Round(snapshot.clone()));
    }

    pub fn publish_alert(&self, json: &str) {
        let _ = self.tx.try_send(Event::Alert(json.to_string()));
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Why a session ended, other than shutdown.
enum Ended {
    Shutdown,
    /// The primary host went offline: reconnect at once and wait for it.
    PrimaryOffline,
    Lost(String),
}

struct Runner {
    cfg: Sparkplug,
    tls: Option<Arc<rustls::ClientConfig>>,
    bd_seq_path: PathBuf,
    latest: Option<Arc<Snapshot>>,
    /// Rounds not published, oldest first, with their time.
    history: VecDeque<(Arc<Snapshot>, u64)>,
    history_bytes: u64,
    last_alert: Option<String>,
}

/// About what a kept round costs in memory.
fn round_bytes(s: &Snapshot) -> u64 {
    s.targets
        .iter()
        .map(|t| 512 + 128 * t.metrics.disks.len() as u64 + 256 * t.metrics.top_procs_by_mem.len() as u64)
        .sum()
}

impl Runner {
    async fn run(mut self, mut rx: mpsc::Receiver<Event>, shutdown: CancellationToken) {
        let mut backoff = Duration::from_secs(1);
        let mut last_reason = String::new();
        loop {
            match self.session(&mut rx, &shutdown).await {
                Ended::Shutdown => break,
                Ended::PrimaryOffline => {
                    tracing::info!("sparkplug: primary host offline; waiting for it");
                    backoff = Duration::from_secs(1);
                    continue;
                }
                Ended::Lost(why) => {
                    if why != last_reason {
                        tracing::warn!(broker = %self.cfg.host, error = %why, "sparkplug session lost; keeping rounds until it is back");
                        last_reason = why;
                    }
                }
            }
            // Wait before reconnecting, still taking rounds (kept as history).
            let deadline = Instant::now() + backoff;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep_until(deadline) => break,
                    ev = rx.recv() => match ev {
                        Some(ev) => self.keep(ev),
                        None => return,
                    },
                }
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// The next bdSeq (0-255), written before it is used: the broker publishes the
    /// will with it even if monserv dies right after connecting.
    fn next_bd_seq(&self) -> u64 {
        let last = std::fs::read_to_string(&self.bd_seq_path).ok().and_then(|s| s.trim().parse::<u64>().ok());
        let next = last.map_or(0, |l| (l + 1) % 256);
        if let Err(e) = crate::store::write_atomic(&self.bd_seq_path, next.to_string().as_bytes()) {
            tracing::warn!(path = %self.bd_seq_path.display(), error = %e, "cannot persist the sparkplug bdSeq");
        }
        next
    }

    /// A round or alert that cannot be published now.
    fn keep(&mut self, ev: Event) {
        match ev {
            Event::Round(s) => {
                self.history_bytes += round_bytes(&s);
                self.latest = Some(s.clone());
                self.history.push_back((s, now_ms()));
                while self.history_bytes > self.cfg.history_max_bytes {
                    let Some((old, _)) = self.history.pop_front() else { break };
                    self.history_bytes -= round_bytes(&old);
                }
            }
            Event::Alert(json) => self.last_alert = Some(json),
        }
    }

    async fn session(&mut self, rx: &mut mpsc::Receiver<Event>, shutdown: &CancellationToken) -> Ended {
        let cfg = self.cfg.clone();
        let connect = crate::tls::connect(&cfg.host, cfg.port, self.tls.as_ref());
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Ended::Lost(format!("cannot connect to {}:{}: {e}", cfg.host, cfg.port)),
            Err(_) => return Ended::Lost(format!("cannot connect to {}:{}: timed out", cfg.host, cfg.port)),
        };
        // The session's bdSeq only once the broker is reachable: a broker that stays
        // away costs no flash write per reconnect attempt.
        let bd_seq = self.next_bd_seq();
        let (mut rd, mut wr) = tokio::io::split(stream);
        let mut node = EdgeNode::new(&cfg.group_id, &cfg.edge_node_id, bd_seq);
        let will = node.ndeath(now_ms());
        let keep_alive = cfg.keep_alive.as_secs().min(u64::from(u16::MAX)) as u16;
        let hello = mqtt::connect(&mqtt::Connect {
            client_id: &format!("monserv-{}-{}", cfg.group_id, cfg.edge_node_id),
            keep_alive_secs: keep_alive,
            username: cfg.username.as_deref(),
            password: cfg.password.as_ref().map(|p| p.expose()),
            will: Some((&will.topic, &will.payload, 1)),
        });
        let mut buf = Vec::with_capacity(4096);
        let answer = tokio::time::timeout(CONNECT_TIMEOUT, async {
            wr.write_all(&hello).await.map_err(|e| format!("connect: {e}"))?;
            read_packet(&mut rd, &mut buf).await
        })
        .await;
        match answer {
            Ok(Ok(Incoming::ConnAck { return_code: 0 })) => {}
            Ok(Ok(Incoming::ConnAck { return_code })) => {
                let why = match return_code {
                    4 => "bad user name or password",
                    5 => "not authorized",
                    2 => "client id rejected",
                    3 => "server unavailable",
                    _ => "refused",
                };
                return Ended::Lost(format!("the broker refused the connection: {why} (code {return_code})"));
            }
            Ok(Ok(other)) => return Ended::Lost(format!("expected CONNACK, got {other:?}")),
            Ok(Err(e)) => return Ended::Lost(e),
            Err(_) => return Ended::Lost("no CONNACK within 10 s".into()),
        }
        let ncmd = node.ncmd_topic();
        let state_topics =
            cfg.primary_host_id.as_ref().map(|id| (format!("spBv1.0/STATE/{id}"), format!("STATE/{id}")));
        let mut topics = vec![(ncmd.as_str(), 0u8)];
        if let Some((current, legacy)) = &state_topics {
            topics.push((current.as_str(), 1));
            topics.push((legacy.as_str(), 1));
        }
        if let Err(e) = wr.write_all(&mqtt::subscribe(1, &topics)).await {
            return Ended::Lost(format!("subscribe: {e}"));
        }
        let mut born = false;
        if state_topics.is_none() {
            if let Err(e) = self.births(&mut node, &mut wr).await {
                return Ended::Lost(e);
            }
            born = true;
        }
        let ping_every = cfg.keep_alive / 2;
        let mut ping = tokio::time::interval(ping_every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heard = Instant::now();
        let mut chunk = vec![0u8; 4096];
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    if born {
                        let death = node.ndeath(now_ms());
                        let _ = wr.write_all(&mqtt::publish(&death.topic, &death.payload, 0, false, 0)).await;
                    }
                    let _ = wr.write_all(&mqtt::disconnect()).await;
                    let _ = wr.flush().await;
                    return Ended::Shutdown;
                }
                ev = rx.recv() => {
                    let Some(ev) = ev else { return Ended::Shutdown };
                    if !born {
                        self.keep(ev);
                        continue;
                    }
                    let messages = match ev {
                        Event::Round(s) => {
                            let m = node.round(&s, now_ms());
                            self.latest = Some(s);
                            m
                        }
                        Event::Alert(json) => {
                            let m = vec![node.alert(&json, now_ms())];
                            self.last_alert = Some(json);
                            m
                        }
                    };
                    if let Err(e) = send(&mut wr, &messages).await {
                        return Ended::Lost(e);
                    }
                }
                read = rd.read(&mut chunk) => {
                    let n = match read {
                        Ok(0) => return Ended::Lost("the broker closed the connection".into()),
                        Ok(n) => n,
                        Err(e) => return Ended::Lost(format!("read: {e}")),
                    };
                    heard = Instant::now();
                    buf.extend_from_slice(&chunk[..n]);
                    loop {
                        let (packet, used) = match mqtt::decode(&buf) {
                            Ok(Some(p)) => p,
                            Ok(None) => break,
                            Err(e) => return Ended::Lost(e.to_string()),
                        };
                        buf.drain(..used);
                        let Incoming::Publish { topic, payload, qos, packet_id } = packet else { continue };
                        if let (1, Some(id)) = (qos, packet_id) {
                            if let Err(e) = wr.write_all(&mqtt::puback(id)).await {
                                return Ended::Lost(format!("puback: {e}"));
                            }
                        }
                        if topic == ncmd {
                            if born && rebirth_requested(&payload) {
                                tracing::info!("sparkplug: rebirth requested");
                                let mut messages = node.birth(now_ms());
                                if let Some(s) = self.latest.clone() {
                                    messages.extend(node.round(&s, now_ms()));
                                }
                                if let Err(e) = send(&mut wr, &messages).await {
                                    return Ended::Lost(e);
                                }
                            }
                            continue;
                        }
                        let Some(online) = state_topics.as_ref().and_then(|(current, legacy)| primary_state(&topic, &payload, current, legacy)) else { continue };
                        if online && !born {
                            if let Err(e) = self.births(&mut node, &mut wr).await {
                                return Ended::Lost(e);
                            }
                            born = true;
                        } else if !online && born {
                            let death = node.ndeath(now_ms());
                            let _ = wr.write_all(&mqtt::publish(&death.topic, &death.payload, 0, false, 0)).await;
                            let _ = wr.write_all(&mqtt::disconnect()).await;
                            let _ = wr.flush().await;
                            return Ended::PrimaryOffline;
                        }
                    }
                }
                _ = ping.tick() => {
                    if heard.elapsed() > cfg.keep_alive * 3 / 2 {
                        return Ended::Lost("the broker did not answer within the keep-alive".into());
                    }
                    if let Err(e) = wr.write_all(&mqtt::pingreq()).await {
                        return Ended::Lost(format!("ping: {e}"));
                    }
                }
            }
        }
    }

    /// NBIRTH, a DBIRTH per online host, then the kept rounds as historical data.
    async fn births(&mut self, node: &mut EdgeNode, wr: &mut (impl AsyncWriteExt + Unpin)) -> Result<(), String> {
        let now = now_ms();
        if let Some(alert) = &self.last_alert {
            node.set_last_alert(alert);
        }
        let mut messages = node.birth(now);
        if let Some(s) = self.latest.clone() {
            messages.extend(node.round(&s, now));
        }
        for (s, at) in self.history.drain(..) {
            messages.extend(node.historical(&s, at));
        }
        self.history_bytes = 0;
        send(wr, &messages).await
    }
}

/// Whether a STATE message says the primary host is online (Sparkplug 3.0 JSON
/// `{"online": true, ...}`, or 2.x `ONLINE`/`OFFLINE` on the legacy topic).
fn primary_state(topic: &str, payload: &[u8], current: &str, legacy: &str) -> Option<bool> {
    if topic == current {
        let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
        v.get("online")?.as_bool()
    } else if topic == legacy {
        match payload {
            b"ONLINE" => Some(true),
            b"OFFLINE" => Some(false),
            _ => None,
        }
    } else {
        None
    }
}

async fn send(wr: &mut (impl AsyncWriteExt + Unpin), messages: &[Message]) -> Result<(), String> {
    for m in messages {
        wr.write_all(&mqtt::publish(&m.topic, &m.payload, 0, false, 0)).await.map_err(|e| format!("publish: {e}"))?;
    }
    wr.flush().await.map_err(|e| format!("publish: {e}"))
}

/// Read until one whole packet is in `buf` (the CONNACK).
async fn read_packet(rd: &mut (impl AsyncReadExt + Unpin), buf: &mut Vec<u8>) -> Result<Incoming, String> {
    let mut chunk = [0u8; 512];
    loop {
        if let Some((packet, used)) = mqtt::decode(buf).map_err(|e| e.to_string())? {
            buf.drain(..used);
            return Ok(packet);
        }
        let n = rd.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("the broker closed the connection".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primary_host_state_in_both_spellings() {
        let (c, l) = ("spBv1.0/STATE/scada", "STATE/scada");
        assert_eq!(primary_state(c, br#"{"online":true,"timestamp":1}"#, c, l), Some(true));
        assert_eq!(primary_state(c, br#"{"online":false}"#, c, l), Some(false));
        assert_eq!(primary_state(c, b"garbage", c, l), None);
        assert_eq!(primary_state(l, b"ONLINE", c, l), Some(true));
        assert_eq!(primary_state(l, b"OFFLINE", c, l), Some(false));
        assert_eq!(primary_state("other", b"ONLINE", c, l), None);
    }
}
