//! `GET /metrics` for Prometheus (and VictoriaMetrics, Mimir's agents): the numbers
//! are gathered here, `export::prometheus` writes them. Same token rules as the REST
//! API (Prometheus sends it with `authorization: { credentials: ... }`).

use std::time::SystemTime;

use http_body_util::Full;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::Response;

use super::{AppState, Body};
use std::sync::atomic::Ordering;

use crate::export::prometheus::{self, ReceiverCounters, RuleCounters, SelfStats, SinkCounters};

pub async fn metrics(state: &AppState) -> Response<Body> {
    let latest = state.hub.latest();
    let rules = state
        .rules
        .engine
        .status()
        .into_iter()
        .map(|r| RuleCounters {
            name: r.name,
            evaluations: r.evaluations,
            failures: r.failures,
            events_dropped: r.events_dropped,
            firing: r.firing as u64,
            last_eval: std::time::Duration::from_micros(r.last_eval_micros),
        })
        .collect();
    let sinks = match &state.notifier {
        Some(n) => n
            .status()
            .await
            .into_iter()
            .map(|s| SinkCounters { name: s.name, queued: s.queued, delivered: s.delivered, failed: s.failed })
            .collect(),
        None => Vec::new(),
    };
    let stats = SelfStats {
        version: env!("CARGO_PKG_VERSION"),
        started_at: SystemTime::now().checked_sub(state.started.elapsed()),
        poll_interval: state.poll_interval,
        ws_clients: state.hub.client_count(),
        rules,
        sinks,
        receivers: state
            .exporter
            .as_ref()
            .map(|e| {
                e.stats()
                    .iter()
                    .map(|s| ReceiverCounters {
                        url: s.url.clone(),
                        samples_sent: s.samples_sent.load(Ordering::Relaxed),
                        samples_dropped: s.samples_dropped.load(Ordering::Relaxed),
                        rounds_dropped: s.rounds_dropped.load(Ordering::Relaxed),
                        failed_sends: s.failed_sends.load(Ordering::Relaxed),
                        backlog_bytes: s.backlog_bytes.load(Ordering::Relaxed),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    };
    let text = prometheus::render(latest.snapshot.as_deref(), &stats);
    let mut r = Response::new(Full::new(text.into()));
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(prometheus::CONTENT_TYPE));
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
