//! The fan-out point between the poll loop and every client.
//!
//! Each message is serialized once into a [`Utf8Bytes`] and the same bytes go to
//! every `/ws` client (cloning is a reference-count bump). Two channels, two policies:
//!
//! - **Metrics** go through a `watch`: one slot holding the latest `metrics_update`.
//!   A client that is behind skips straight to the newest snapshot (keep latest);
//!   older snapshots are worth nothing once a newer one exists, and a new client gets
//!   the slot's content at once.
//! - **Alerts** go through a `broadcast` ring of [`ALERT_RING_CAPACITY`] messages, so
//!   none is skipped. Memory is bounded by the ring, not by the number of clients; a
//!   message is freed once the slowest client has taken it. A client that falls a
//!   whole ring behind is closed with 1013 instead of silently missing alerts; it
//!   reconnects and gets the latest snapshot at once.

use std::sync::{Arc, RwLock};

use bytes::Bytes;
use hyper_tungstenite::tungstenite::Utf8Bytes;
use tokio::sync::{broadcast, watch};

use crate::model::AlertMessage;
use crate::model::Snapshot;

/// How many alerts a client may lag before it is dropped: far more than one poll
/// round of a plant-wide outage produces, at ~200 bytes per alert.
pub const ALERT_RING_CAPACITY: usize = 4096;

pub struct Hub {
    metrics: watch::Sender<Option<Utf8Bytes>>,
    alerts: broadcast::Sender<Utf8Bytes>,
    /// The latest snapshot for REST, kept beside the frame.
    latest: RwLock<Latest>,
}

#[derive(Default, Clone)]
pub struct Latest {
    /// The `data` object of the latest `metrics_update` (served by `GET /api/state`).
    pub data: Option<Bytes>,
    pub snapshot: Option<Arc<Snapshot>>,
}

/// What a `/ws` client reads from.
pub struct Subscription {
    pub metrics: watch::Receiver<Option<Utf8Bytes>>,
    pub alerts: broadcast::Receiver<Utf8Bytes>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new()
    }
}

impl Hub {
    pub fn new() -> Self {
        let (alerts, _) = broadcast::channel(ALERT_RING_CAPACITY);
        Hub { metrics: watch::Sender::new(None), alerts, latest: RwLock::new(Latest::default()) }
    }

    /// Serialize a poll round once and hand it to every client.
    pub fn publish_metrics(&self, snapshot: Arc<Snapshot>) {
        let data = snapshot.data_json();
        let mut frame = Vec::with_capacity(data.len() + 40);
        frame.extend_from_slice(br#"{"type":"metrics_update","data":"#);
        frame.extend_from_slice(&data);
        frame.push(b'}');
        let Ok(frame) = Utf8Bytes::try_from(Bytes::from(frame)) else {
            tracing::error!("metrics_update is not UTF-8; not sent");
            return;
        };
        *self.latest.write().unwrap_or_else(|e| e.into_inner()) =
            Latest { data: Some(Bytes::from(data)), snapshot: Some(snapshot) };
        self.metrics.send_replace(Some(frame));
    }

    pub fn publish_alert(&self, alert: &AlertMessage) {
        match serde_json::to_string(alert) {
            // Err only means nobody is connected.
            Ok(text) => drop(self.alerts.send(Utf8Bytes::from(text))),
            Err(e) => tracing::error!(error = %e, "cannot serialize alert"),
        }
    }

    pub fn subscribe(&self) -> Subscription {
        Subscription { metrics: self.metrics.subscribe(), alerts: self.alerts.subscribe() }
    }

    pub fn latest(&self) -> Latest {
        self.latest.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Connected `/ws` clients.
    pub fn client_count(&self) -> usize {
        self.metrics.receiver_count()
    }
}
