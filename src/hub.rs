//! The fan-out point between the poll loop and every client.
//!
//! Each message is serialized once into a [`Utf8Bytes`] and the same bytes go to
//! every `/ws` client (cloning is a reference-count bump). Delivery uses a
//! `tokio::sync::broadcast` ring of [`RING_CAPACITY`] messages: memory is bounded by
//! the ring, not by the number of clients, and a message is freed as soon as the
//! slowest client has taken it. Policy when a client falls a whole ring behind: it is
//! disconnected (close 1013) rather than silently skipping messages, so it never
//! misses an alert without knowing; a reconnecting client gets the latest snapshot
//! at once. The latest snapshot is also kept for REST and for new clients.

use std::sync::{Arc, RwLock};

use bytes::Bytes;
use hyper_tungstenite::tungstenite::Utf8Bytes;
use tokio::sync::broadcast;

use crate::model::AlertMessage;
use crate::poll::Snapshot;

/// How many messages a client may lag before it is dropped. At one metrics update
/// per 4 s plus alerts this is minutes of backlog; a burst of alerts from a
/// plant-wide outage fits comfortably.
pub const RING_CAPACITY: usize = 256;

pub struct Hub {
    tx: broadcast::Sender<Utf8Bytes>,
    /// Written only by `publish_*`, under which `tx.send` also happens: a subscriber
    /// that reads `latest` and subscribes under the same lock neither misses nor
    /// duplicates a metrics update.
    latest: RwLock<Latest>,
}

#[derive(Default, Clone)]
pub struct Latest {
    /// The whole `metrics_update` frame.
    pub frame: Option<Utf8Bytes>,
    /// Just its `data` object (served by `GET /api/state`).
    pub data: Option<Bytes>,
    pub snapshot: Option<Arc<Snapshot>>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new()
    }
}

impl Hub {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(RING_CAPACITY);
        Hub { tx, latest: RwLock::new(Latest::default()) }
    }

    /// Serialize a poll round once and send it to every client.
    pub fn publish_metrics(&self, snapshot: Snapshot) {
        let data = snapshot.data_json();
        let mut frame = Vec::with_capacity(data.len() + 40);
        frame.extend_from_slice(br#"{"type":"metrics_update","data":"#);
        frame.extend_from_slice(&data);
        frame.push(b'}');
        let Ok(frame) = Utf8Bytes::try_from(Bytes::from(frame)) else {
            tracing::error!("metrics_update is not UTF-8; not sent");
            return;
        };
        let mut latest = self.latest.write().unwrap_or_else(|e| e.into_inner());
        *latest =
            Latest { frame: Some(frame.clone()), data: Some(Bytes::from(data)), snapshot: Some(Arc::new(snapshot)) };
        // Err only means nobody is connected.
        let _ = self.tx.send(frame);
    }

    pub fn publish_alert(&self, alert: &AlertMessage) {
        let text = match serde_json::to_string(alert) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "cannot serialize alert");
                return;
            }
        };
        let _ = self.tx.send(Utf8Bytes::from(text));
    }

    /// The latest metrics frame (if a round has completed) and a receiver for
    /// everything after it.
    pub fn subscribe(&self) -> (Option<Utf8Bytes>, broadcast::Receiver<Utf8Bytes>) {
        let latest = self.latest.write().unwrap_or_else(|e| e.into_inner());
        (latest.frame.clone(), self.tx.subscribe())
    }

    pub fn latest(&self) -> Latest {
        self.latest.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn client_count(&self) -> usize {
        self.tx.receiver_count()
    }
}
