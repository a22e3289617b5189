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

pub mod webhook;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{NotifyConfig, WebhookSink};
use crate::store::alerts::{AlertStore, Transition};

const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Deliveries read from the store at a time.
const BATCH: usize = 50;

/// Why a delivery did not go through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Try again later (connection error, timeout, 429, 5xx).
    Retry(String),
    /// The sink refused it for good (other 4xx); not retried.
    Permanent(String),
}

/// One configured sink.
#[derive(Debug, Clone)]
pub enum Sink {
    Webhook(WebhookSink),
}

impl Sink {
    pub fn name(&self) -> &'static str {
        match self {
            Sink::Webhook(_) => "webhook",
        }
    }

    async fn send(&self, t: &Transition) -> Result<(), SendError> {
        match self {
            Sink::Webhook(w) => webhook::send(w, t).await,
        }
    }
}

pub fn sinks(config: &NotifyConfig) -> Vec<Sink> {
    config.webhook.iter().cloned().map(Sink::Webhook).collect()
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
            let status = Arc::new(Mutex::new(SinkStatus { name: sink.name().into(), ..SinkStatus::default() }));
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

/// One sink's delivery loop, until `shutdown`.
async fn run_sink(
    sink: Sink,
    store: Arc<AlertStore>,
    status: Arc<Mutex<SinkStatus>>,
    mut committed: watch::Receiver<u64>,
    shutdown: CancellationToken,
) {
    let name = sink.name();
    let mut backoff = BACKOFF_START;
    loop {
        committed.mark_unchanged();
        let queue = store.clone();
        let batch = blocking(move || queue.queued(name, BATCH)).await.and_then(Result::ok).unwrap_or_default();
        if batch.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = committed.changed() => if changed.is_err() { return },
                // In case a wake-up was missed.
                _ = tokio::time::sleep(Duration::from_secs(60)) => {}
            }
            continue;
        }
        for t in batch {
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = sink.send(&t) => r,
            };
            let done = match outcome {
                Ok(()) => {
                    let mut s = lock(&status);
                    s.delivered += 1;
                    s.retrying = false;
                    s.last_success = Some(crate::model::rfc3339_utc(SystemTime::now()));
                    backoff = BACKOFF_START;
                    true
                }
                Err(SendError::Permanent(why)) => {
                    tracing::warn!(sink = name, seq = t.seq, reason = %why, "delivery refused for good; not retried");
                    let mut s = lock(&status);
                    s.failed += 1;
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
            if !done {
                break; // retry the same delivery first: order per sink is kept
            }
            let (queue, seq) = (store.clone(), t.seq);
            if let Some(Err(e)) = blocking(move || queue.delivered(name, &[seq])).await {
                tracing::error!(sink = name, error = %e, "cannot record a delivery (it may be sent again)");
            }
        }
    }
}
