//! Delivering alerts and recoveries to sinks besides `/ws`, at least once, in order.
//!
//! A round's transitions are queued for every configured sink in the same store
//! transaction that records them (`store::alerts`), before anything is sent. Each sink
//! has its own task: it takes its queue in order, sends, and removes a delivery only
//! after the sink accepted it (or refused it for good: other 4xx, counted and logged).
//! Connection errors, 429 and 5xx are retried with exponential backoff and jitter
//! (1 s doubling to 5 min), holding that sink's queue, so order per alert key is kept
//! and a sink that is down delays no other. The queue survives restarts and crashes;
//! a send that was accepted just before a crash may be sent again (at least once).
//!
//! Each sink sends at most `max_per_minute` messages; past that, waiting deliveries
//! go out grouped in one digest (never dropped). `repeat_interval` re-sends alerts
//! that stay firing; silenced transitions never reach the queue (`store::silence`).
//! Sinks: `email` (SMTP), `chat` (Slack, Telegram), `kafka`, `webhook` (webhook v4
//! and Alertmanager), over `http` with TLS from `crate::tls`.

mod chat;
pub mod email;
mod http;
pub mod kafka;
pub mod text;
pub mod webhook;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{NotifyConfig, SinkConfig, SinkKind};
use crate::store::alerts::{unix_now, AlertStore, Transition};

const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Most deliveries in one digest message.
pub const DIGEST_MAX: usize = 100;
/// The window `max_per_minute` counts messages in.
const RATE_WINDOW: Duration = Duration::from_secs(60);

/// Why a delivery did not go through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Try again later (connection error, timeout, 429, 5xx).
    Retry(String),
    /// The sink refused it for good (other 4xx); not retried.
    Permanent(String),
}

/// A configured sink, ready to send (TLS set up, endpoints resolved).
pub struct Sink {
    pub config: SinkConfig,
    endpoint: Option<http::Endpoint>,
    tls: Option<Arc<rustls::ClientConfig>>,
    kafka: Option<kafka::Producer>,
}

impl Sink {
    /// Prepare a sink: reads its CA file. A bad one is a configuration error.
    pub fn new(config: SinkConfig) -> Result<Sink, String> {
        let name = config.name();
        let needs_tls = match &config.kind {
            SinkKind::Email(_) => true,
            SinkKind::Kafka(k) => k.tls,
            SinkKind::Slack { url, .. } => url.tls,
            SinkKind::Telegram(t) => t.api.tls,
            SinkKind::Webhook(h) | SinkKind::Alertmanager(h) => h.url.tls,
        };
        let tls = if needs_tls {
            if config.tls.danger_accept_invalid_certs {
                tracing::warn!(
                    sink = name,
                    "danger_accept_invalid_certs: this sink accepts ANY certificate; \
                    anyone on the path can read and change what it sends"
                );
            }
            Some(crate::tls::client_config(&config.tls).map_err(|e| format!("notify.{name}: {e}"))?)
        } else {
            None
        };
        let endpoint = |url: &crate::config::HttpUrl, shown: String, headers: Vec<(String, crate::config::Secret)>| {
            Some(http::Endpoint { url: url.clone(), shown, headers, tls: tls.clone() })
        };
        let endpoint = match &config.kind {
            SinkKind::Slack { url, .. } => {
                let shown = format!("{}://{}/***", if url.tls { "https" } else { "http" }, url.host_header());
                endpoint(url, shown, Vec::new())
            }
            SinkKind::Telegram(t) => {
                let mut url = t.api.clone();
                url.path = format!("{}/bot{}/sendMessage", t.api.path, t.token.expose());
                endpoint(&url, format!("{}/bot***/sendMessage", t.api.to_string().trim_end_matches('/')), Vec::new())
            }
            SinkKind::Webhook(h) | SinkKind::Alertmanager(h) => endpoint(&h.url, h.url.to_string(), h.headers.clone()),
            SinkKind::Email(_) | SinkKind::Kafka(_) => None,
        };
        let kafka = match &config.kind {
            SinkKind::Kafka(k) => Some(kafka::Producer::new((**k).clone(), tls.clone())),
            _ => None,
        };
        Ok(Sink { config, endpoint, tls, kafka })
    }

    pub fn name(&self) -> &'static str {
        self.config.name()
    }

    /// Deliver `batch` as one message (a digest when it holds more than one).
    async fn send(&self, batch: &[Transition]) -> Result<(), SendError> {
        let json = |v: serde_json::Value| serde_json::to_vec(&v).map_err(|e| SendError::Permanent(e.to_string()));
        let post = |body: Vec<u8>| async move {
            match &self.endpoint {
                Some(e) => http::post_json(e, body).await,
                None => Err(SendError::Permanent("no endpoint".into())),
            }
        };
        match &self.config.kind {
            SinkKind::Webhook(_) => post(json(webhook::payload(batch))?).await,
            SinkKind::Alertmanager(_) => post(json(webhook::am_transitions(batch, unix_now()))?).await,
            SinkKind::Slack { .. } => post(json(chat::slack(batch))?).await,
            SinkKind::Telegram(t) => post(json(chat::telegram(&t.chat_id, batch))?).await,
            SinkKind::Email(e) => match &self.tls {
                Some(tls) => email::send(e, tls, batch).await,
                None => Err(SendError::Permanent("no TLS configuration".into())),
            },
            SinkKind::Kafka(_) => match &self.kafka {
                Some(p) => p.send(batch).await,
                None => Err(SendError::Permanent("no producer".into())),
            },
        }
    }
}

impl Sink {
    /// Alertmanager only: re-post the firing alerts so they do not time out there.
    async fn refresh(&self, body: serde_json::Value) -> Result<(), SendError> {
        let body = serde_json::to_vec(&body).map_err(|e| SendError::Permanent(e.to_string()))?;
        match &self.endpoint {
            Some(e) => http::post_json(e, body).await,
            None => Ok(()),
        }
    }
}

/// Prepare every configured sink.
pub fn sinks(config: &NotifyConfig) -> Result<Vec<Sink>, String> {
    config.sinks.iter().cloned().map(Sink::new).collect()
}

/// What `GET /api/v1/notify` shows of a sink.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SinkStatus {
    pub name: String,
    /// Deliveries waiting (in the store).
    pub queued: u64,
    pub delivered: u64,
    /// Refused for good by the sink (not retried).
    pub failed: u64,
    /// Messages that grouped several deliveries (the rate limit was reached).
    pub digests: u64,
    /// Reminders sent for alerts still firing (`repeat_interval`).
    pub repeats: u64,
    pub max_per_minute: u32,
    pub repeat_interval_seconds: Option<u64>,
    pub last_success: Option<String>,
    pub last_error: Option<String>,
    /// Waiting to retry after an error.
    pub retrying: bool,
}

/// The notifier: one task per sink, woken when the engine commits transitions.
pub struct Notifier {
    store: Arc<AlertStore>,
    statuses: Vec<Arc<Mutex<SinkStatus>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Notifier {
    /// Start a task per sink on `tracker`; `committed` changes whenever new
    /// deliveries were queued.
    pub fn start(
        sinks: Vec<Sink>,
        store: Arc<AlertStore>,
        committed: watch::Receiver<u64>,
        tracker: &tokio_util::task::TaskTracker,
        shutdown: CancellationToken,
    ) -> Arc<Notifier> {
        let mut statuses = Vec::new();
        for sink in sinks {
            let status = Arc::new(Mutex::new(SinkStatus {
                name: sink.name().into(),
                max_per_minute: sink.config.max_per_minute,
                repeat_interval_seconds: sink.config.repeat_interval.map(|d| d.as_secs()),
                ..SinkStatus::default()
            }));
            statuses.push(status.clone());
            tracker.spawn(run_sink(sink, store.clone(), status, committed.clone(), shutdown.clone()));
        }
        Arc::new(Notifier { store, statuses })
    }

    /// Every sink's counters, with its queue length read from the store.
    pub async fn status(&self) -> Vec<SinkStatus> {
        let mut out = Vec::new();
        for s in &self.statuses {
            let mut status = lock(s).clone();
            let (store, name) = (self.store.clone(), status.name.clone());
            status.queued = tokio::task::spawn_blocking(move || store.queue_len(&name).unwrap_or(0)).await.unwrap_or(0);
            out.push(status);
        }
        out
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

/// Which firing alerts are due a reminder: every `interval` after they fired
/// (`since + k * interval`), counted from what this process has seen, so a restart
/// sends no burst of reminders.
struct Repeats {
    interval: Duration,
    sent_slot: HashMap<(String, String), u64>,
    started: bool,
}

impl Repeats {
    fn due(&mut self, firing: Vec<crate::store::alerts::Firing>, now: u64) -> Vec<Transition> {
        let secs = self.interval.as_secs().max(1);
        let mut due = Vec::new();
        let mut seen = HashMap::with_capacity(firing.len());
        for f in firing {
            let slot = now.saturating_sub(f.since) / secs;
            let key = (f.rule.clone(), f.key.clone());
            let last = self.sent_slot.get(&key).copied().unwrap_or(if self.started { 0 } else { slot });
            if slot > last {
                due.push(Transition {
                    seq: 0,
                    time: now,
                    rule: f.rule,
                    key: f.key,
                    alert_type: "alert".into(),
                    subject: f.subject,
                    message: f.message,
                    silenced: false,
                    repeat: true,
                });
            }
            seen.insert(key, slot.max(last));
        }
        self.sent_slot = seen;
        self.started = true;
        due
    }
}

/// One sink's delivery loop, until `shutdown`.
///
/// Rate: at most `max_per_minute` messages in any minute. The last message a minute
/// allows carries everything waiting (up to [`DIGEST_MAX`] deliveries) as one digest,
/// so a storm costs a sink a bounded number of messages and loses none.
async fn run_sink(
    sink: Sink,
    store: Arc<AlertStore>,
    status: Arc<Mutex<SinkStatus>>,
    mut committed: watch::Receiver<u64>,
    shutdown: CancellationToken,
) {
    let name = sink.name();
    let limit = sink.config.max_per_minute.max(1) as usize;
    let mut sent: VecDeque<Instant> = VecDeque::with_capacity(limit.min(1024));
    let mut backoff = BACKOFF_START;
    let mut repeats =
        sink.config.repeat_interval.map(|interval| Repeats { interval, sent_slot: HashMap::new(), started: false });
    let refresh_am = matches!(sink.config.kind, SinkKind::Alertmanager(_));
    // Reminders and refreshes are looked for this often while the queue is empty.
    let check_every = match (&repeats, refresh_am) {
        (_, true) => webhook::AM_REFRESH,
        (Some(r), false) => (r.interval / 2).min(Duration::from_secs(30)),
        (None, false) => Duration::from_secs(3600),
    };
    let mut next_check = Instant::now() + if refresh_am { Duration::ZERO } else { check_every };
    loop {
        committed.mark_unchanged();
        while sent.front().is_some_and(|t| t.elapsed() >= RATE_WINDOW) {
            sent.pop_front();
        }
        let queue = store.clone();
        let mut batch = blocking(move || queue.queued(name, DIGEST_MAX)).await.and_then(Result::ok).unwrap_or_default();
        let from_queue = !batch.is_empty();
        if batch.is_empty() && Instant::now() >= next_check {
            next_check = Instant::now() + check_every;
            let firing = store.clone();
            let firing = blocking(move || firing.active_not_silenced()).await.and_then(Result::ok).unwrap_or_default();
            if refresh_am {
                if !firing.is_empty() {
                    let body = webhook::am_refresh(&firing, unix_now());
                    if let Err(SendError::Retry(e) | SendError::Permanent(e)) = sink.refresh(body).await {
                        lock(&status).last_error = Some(e);
                    }
                }
            } else if let Some(r) = repeats.as_mut() {
                batch = r.due(firing, unix_now());
                batch.truncate(DIGEST_MAX);
            }
        }
        if batch.is_empty() {
            let wait = next_check.saturating_duration_since(Instant::now());
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = committed.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(wait.min(Duration::from_secs(60))) => {}
            }
            continue;
        }
        if sent.len() >= limit {
            let free_at = sent.front().map_or(Instant::now(), |t| *t + RATE_WINDOW);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(free_at.into()) => {}
            }
            if from_queue {
                continue; // read again: more may be waiting for the digest
            }
        }
        // The last message this minute allows takes everything waiting.
        let take = if sent.len() + 1 >= limit { batch.len() } else { 1 };
        let message = &batch[..take];
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = sink.send(message) => r,
        };
        sent.push_back(Instant::now());
        let done = match outcome {
            Ok(()) => {
                let mut s = lock(&status);
                if from_queue {
                    s.delivered += take as u64;
                } else {
                    s.repeats += take as u64;
                }
                s.digests += u64::from(take > 1);
                s.retrying = false;
                s.last_success = Some(crate::model::rfc3339_utc(SystemTime::now()));
                backoff = BACKOFF_START;
                true
            }
            Err(SendError::Permanent(why)) => {
                tracing::warn!(sink = name, seq = message[0].seq, count = take, reason = %why, "delivery refused for good; not retried");
                let mut s = lock(&status);
                s.failed += take as u64;
                s.last_error = Some(why);
                true
            }
            Err(SendError::Retry(why)) => {
                let first = !lock(&status).retrying;
                if first {
                    tracing::warn!(sink = name, reason = %why, "sink unavailable; retrying with backoff");
                }
                {
                    let mut s = lock(&status);
                    s.retrying = true;
                    s.last_error = Some(why);
                }
                let jitter = Duration::from_millis(rand::random_range(0..=backoff.as_millis() as u64 / 2));
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff + jitter) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                false
            }
        };
        // A reminder that failed is not queued: the next one comes an interval later.
        if done && from_queue {
            let seqs: Vec<u64> = message.iter().map(|t| t.seq).collect();
            let queue = store.clone();
            if let Some(Err(e)) = blocking(move || queue.delivered(name, &seqs)).await {
                tracing::error!(sink = name, error = %e, "cannot record a delivery (it may be sent again)");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::alerts::Firing;

    fn firing(key: &str, since: u64) -> Firing {
        Firing { rule: "r".into(), key: key.into(), subject: format!("[ALERT] {key}"), message: "m".into(), since }
    }

    #[test]
    fn reminders_come_once_per_interval_and_not_after_a_restart() {
        let mut r = Repeats { interval: Duration::from_secs(3600), sent_slot: HashMap::new(), started: false };
        // The first look (a restart) only notes where each alert is.
        assert!(r.due(vec![firing("old", 0), firing("new", 9_000)], 9_000).is_empty());
        assert!(r.due(vec![firing("old", 0), firing("new", 9_000)], 10_000).is_empty());
        let due = r.due(vec![firing("old", 0), firing("new", 9_000)], 10_800);
        assert_eq!(due.iter().map(|t| t.key.as_str()).collect::<Vec<_>>(), ["old"]);
        assert!(due[0].repeat && due[0].alert_type == "alert");
        assert!(r.due(vec![firing("old", 0), firing("new", 9_000)], 11_000).is_empty(), "once per slot");
        let due = r.due(vec![firing("new", 9_000), firing("fresh", 11_000)], 12_600);
        assert_eq!(due.iter().map(|t| t.key.as_str()).collect::<Vec<_>>(), ["new"]);
        // An alert that recovered is forgotten; firing again, it starts over.
        assert!(!r.sent_slot.contains_key(&("r".to_string(), "old".to_string())));
        assert!(r.due(vec![firing("fresh", 11_000)], 14_000).is_empty());
        assert_eq!(r.due(vec![firing("fresh", 11_000)], 14_600).len(), 1);
    }
}
