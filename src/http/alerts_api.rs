//! `GET /api/v1/alerts/active` and `GET /api/v1/alerts/history?since=&limit=`.
//!
//! Active alerts come from the engine's firing state (restored from the alert store
//! at start, so they include alerts that fired before a restart); the history from
//! the store. Same token rules as the rest of the API.

use hyper::{Response, StatusCode};

use super::{json, json_error, AppState, Body};

/// Most transitions one history answer holds.
pub const HISTORY_MAX: usize = 1000;

/// `{success, data:{alerts:[{rule, key, subject, message, since}], total}}`.
pub fn active(state: &AppState) -> Response<Body> {
    let alerts = state.rules.engine.active_alerts();
    let total = alerts.len();
    let body = serde_json::json!({ "success": true, "data": { "alerts": alerts, "total": total } });
    json(StatusCode::OK, body.to_string())
}

/// `{success, data:{transitions:[{seq, time, rule, key, alert_type, subject, message}]}}`,
/// oldest first; `since` in Unix seconds (default 0), `limit` (default and most 1000)
/// keeps the newest.
pub async fn history(query: Option<&str>, state: &AppState) -> Response<Body> {
    let (mut since, mut limit) = (0u64, HISTORY_MAX);
    for pair in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let parsed = v.parse::<u64>();
        match (k, parsed) {
            ("since", Ok(n)) => since = n,
            ("limit", Ok(n)) => limit = (n as usize).min(HISTORY_MAX),
            ("since" | "limit", Err(_)) => {
                return json_error(StatusCode::BAD_REQUEST, &format!("{k} must be a non-negative integer"))
            }
            _ => {}
        }
    }
    match state.rules.engine.history(since, limit).await {
        Ok(transitions) => {
            let body = serde_json::json!({ "success": true, "data": { "transitions": transitions } });
            json(StatusCode::OK, body.to_string())
        }
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}
