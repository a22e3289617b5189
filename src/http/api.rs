//! REST: `GET /api/state`, `GET /api/v1/servers`, `GET /api/v1/health`.
//!
//! All answers come from the hub's latest snapshot; nothing here touches a host.

use hyper::{Response, StatusCode};

use super::{json, AppState, Body};

/// The `data` object of the latest `metrics_update`, byte for byte.
pub fn state(state: &AppState) -> Response<Body> {
    match state.hub.latest().data {
        Some(data) => json(StatusCode::OK, data),
        None => json(StatusCode::OK, "{}"),
    }
}

/// `{success, data:{servers:[{url, status, metrics, last_update}], total}}`.
/// `metrics` is null for a target that has never answered.
pub fn servers(state: &AppState) -> Response<Body> {
    let latest = state.hub.latest();
    let servers: Vec<serde_json::Value> = latest
        .snapshot
        .as_ref()
        .map(|s| {
            s.targets
                .iter()
                .map(|t| {
                    serde_json::json!({
                        "url": t.url,
                        "status": t.status.as_str(),
                        "metrics": if t.collected { serde_json::to_value(&t.metrics).unwrap_or_default() } else { serde_json::Value::Null },
                        "last_update": t.last_update,
                        "consecutive_failures": t.consecutive_failures,
                        "last_error_kind": t.last_error_kind,
                        "error": t.metrics.error,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let total = servers.len();
    let body = serde_json::json!({ "success": true, "data": { "servers": servers, "total": total } });
    json(StatusCode::OK, body.to_string())
}

pub fn health(state: &AppState) -> Response<Body> {
    let latest = state.hub.latest();
    let (online, total, round) = latest.snapshot.as_ref().map_or((0, 0, 0), |s| {
        (s.targets.iter().filter(|t| t.status == crate::model::HostStatus::Online).count(), s.targets.len(), s.round)
    });
    let body = serde_json::json!({
        "success": true,
        "data": {
            "status": "ok",
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": state.started.elapsed().as_secs(),
            "poll_rounds": round,
            "poll_interval_seconds": state.poll_interval.as_secs_f64(),
            "targets_online": online,
            "targets_total": total,
            "ws_clients": state.hub.client_count(),
            "rules_loaded": state.rules.engine.is_loaded(),
        }
    });
    json(StatusCode::OK, body.to_string())
}
