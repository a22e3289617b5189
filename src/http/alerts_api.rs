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

/// `GET /api/v1/notify`: `{success, data:{sinks:[{name, queued, delivered, failed,
/// last_success, last_error, retrying}]}}` (no sinks: an empty list).
pub async fn notify(state: &AppState) -> Response<Body> {
    let sinks = match &state.notifier {
        Some(n) => n.status().await,
        None => Vec::new(),
    };
    json(StatusCode::OK, serde_json::json!({ "success": true, "data": { "sinks": sinks } }).to_string())
}

/// `POST /api/test-alert` with the Go MonServ's body `{alert_type, subject, message}`:
/// sends that alert to every `/ws` client, to check the path to dashboards. Unlike the
/// Go version it needs the token (and a configured one: 403 without). Not recorded as
/// an active alert: no rule fired it.
pub async fn test_alert(req: hyper::Request<hyper::body::Incoming>, state: &AppState) -> Response<Body> {
    use http_body_util::{BodyExt, Limited};
    if state.auth_token.is_none() {
        return json_error(StatusCode::FORBIDDEN, "test alerts need auth_token in the configuration");
    }
    let Ok(body) = Limited::new(req.into_body(), 16 << 10).collect().await.map(|b| b.to_bytes()) else {
        return json_error(StatusCode::PAYLOAD_TOO_LARGE, "the body is limited to 16384 bytes");
    };
    #[derive(serde::Deserialize)]
    struct TestAlert {
        #[serde(default)]
        alert_type: Option<String>,
        subject: String,
        #[serde(default)]
        message: String,
    }
    let t: TestAlert = match serde_json::from_slice(&body) {
        Ok(t) => t,
        Err(e) => {
            return json_error(StatusCode::BAD_REQUEST, &format!("expected {{alert_type, subject, message}}: {e}"))
        }
    };
    let kind = match t.alert_type.as_deref().unwrap_or("alert") {
        "alert" => crate::model::AlertKind::Alert,
        "recovery" => crate::model::AlertKind::Recovery,
        other => {
            return json_error(
                StatusCode::BAD_REQUEST,
                &format!("alert_type {other:?}: expected \"alert\" or \"recovery\""),
            )
        }
    };
    if t.subject.trim().is_empty() {
        return json_error(StatusCode::BAD_REQUEST, "subject must not be empty");
    }
    // The same limits and escaping as a rule's output.
    let limits = crate::config::RuleLimits::default();
    let event = crate::rules::sandbox::wit::Event {
        kind: crate::rules::sandbox::wit::EventKind::Alert,
        key: "test-alert".into(),
        subject: t.subject,
        message: t.message,
    };
    let (mut events, _) = crate::rules::output::sanitize(vec![event], &Default::default(), &limits);
    let Some(e) = events.pop() else {
        return json_error(StatusCode::BAD_REQUEST, "subject must not be empty");
    };
    let clients = state.hub.client_count();
    state.hub.publish_alert(&crate::model::AlertMessage::new(kind, e.subject, e.message));
    tracing::info!(clients, "test alert sent");
    json(StatusCode::OK, serde_json::json!({ "success": true, "data": { "ws_clients": clients } }).to_string())
}
