//! `GET/POST /api/v1/silences`, `DELETE /api/v1/silences/{id}`, and the Go MonServ's
//! `GET /api/v1/servers/metrics`.
//!
//! Reading needs what the rest of the API needs; creating or expiring a silence
//! needs a configured token (a silence hides alerts from people: as with rule
//! changes, 403 when monserv has no `auth_token`).

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

use super::{json, json_error, AppState, Body};
use crate::store::alerts::unix_now;
use crate::store::silence::{Matcher, Silence};

/// The longest silence: a year (longer is a disabled rule, not a silence).
const MAX_SILENCE_SECS: u64 = 366 * 86_400;

fn state_of(s: &Silence, now: u64) -> &'static str {
    if s.is_active(now) {
        "active"
    } else if now < s.starts_at {
        "pending"
    } else {
        "expired"
    }
}

fn shown(s: &Silence, now: u64) -> serde_json::Value {
    let mut v = serde_json::to_value(s).unwrap_or_default();
    v["state"] = state_of(s, now).into();
    v
}

pub async fn handle(req: Request<Incoming>, state: &AppState) -> Response<Body> {
    let Some(store) = state.rules.engine.store() else {
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "the alert store is unusable; see the log");
    };
    let path = req.uri().path().trim_end_matches('/').to_string();
    let id = path.strip_prefix("/api/v1/silences/").map(str::to_string);
    let changing = req.method() != Method::GET;
    if changing && state.auth_token.is_none() {
        return json_error(StatusCode::FORBIDDEN, "silences are changed only with auth_token in the configuration");
    }
    let now = unix_now();
    match (req.method().clone(), id) {
        (Method::GET, None) => {
            let list = tokio::task::spawn_blocking(move || store.silences()).await;
            match list {
                Ok(Ok(list)) => {
                    let list: Vec<_> = list.iter().map(|s| shown(s, now)).collect();
                    json(
                        StatusCode::OK,
                        serde_json::json!({ "success": true, "data": { "silences": list } }).to_string(),
                    )
                }
                Ok(Err(e)) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
                Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            }
        }
        (Method::POST, None) => {
            let Ok(body) = Limited::new(req.into_body(), 16 << 10).collect().await.map(|b| b.to_bytes()) else {
                return json_error(StatusCode::PAYLOAD_TOO_LARGE, "the body is limited to 16384 bytes");
            };
            let silence = match parse_new(&body, now) {
                Ok(s) => s,
                Err(why) => return json_error(StatusCode::BAD_REQUEST, &why),
            };
            match tokio::task::spawn_blocking(move || store.add_silence(silence)).await {
                Ok(Ok(Ok(s))) => {
                    tracing::info!(id = s.id, matchers = ?s.matchers, ends_at = s.ends_at, "silence created");
                    json(
                        StatusCode::CREATED,
                        serde_json::json!({ "success": true, "data": shown(&s, now) }).to_string(),
                    )
                }
                Ok(Ok(Err(full))) => json_error(StatusCode::CONFLICT, &full),
                Ok(Err(e)) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
                Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            }
        }
        (Method::DELETE, Some(id)) => {
            let Ok(id) = id.parse::<u64>() else {
                return json_error(StatusCode::NOT_FOUND, "no such silence");
            };
            match tokio::task::spawn_blocking(move || store.expire_silence(id)).await {
                Ok(Ok(Some(s))) => {
                    tracing::info!(id, "silence expired");
                    json(StatusCode::OK, serde_json::json!({ "success": true, "data": shown(&s, now) }).to_string())
                }
                Ok(Ok(None)) => json_error(StatusCode::NOT_FOUND, "no such silence"),
                Ok(Err(e)) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
                Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            }
        }
        (_, None) => super::method_not_allowed("GET, POST"),
        (_, Some(_)) => super::method_not_allowed("DELETE"),
    }
}

/// `{matchers:[{name,value}], starts_at?, ends_at? | duration?, comment?, created_by?}`:
/// times in Unix seconds, `duration` as `"2h"`; starts now by default.
pub fn parse_new(body: &[u8], now: u64) -> Result<Silence, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct New {
        matchers: Vec<Matcher>,
        starts_at: Option<u64>,
        ends_at: Option<u64>,
        duration: Option<String>,
        #[serde(default)]
        comment: String,
        #[serde(default)]
        created_by: String,
    }
    let n: New = serde_json::from_slice(body).map_err(|e| {
        format!("expected {{matchers:[{{name: host|rule|key|subject, value}}], ends_at or duration, comment}}: {e}")
    })?;
    let starts_at = n.starts_at.unwrap_or(now);
    let ends_at = match (n.ends_at, n.duration) {
        (Some(end), None) => end,
        (None, Some(d)) => {
            let d = humantime::parse_duration(d.trim()).map_err(|e| format!("duration {d:?}: {e} (e.g. \"2h\")"))?;
            starts_at.saturating_add(d.as_secs())
        }
        _ => return Err("give either ends_at (Unix seconds) or duration (e.g. \"2h\")".into()),
    };
    if ends_at <= now {
        return Err("the silence would already be over".into());
    }
    if ends_at.saturating_sub(starts_at) > MAX_SILENCE_SECS {
        return Err("a silence lasts at most 366 days".into());
    }
    let s = Silence { id: 0, matchers: n.matchers, starts_at, ends_at, comment: n.comment, created_by: n.created_by };
    s.validate()?;
    Ok(s)
}

/// `GET /api/v1/servers/metrics` (Go MonServ): `{success, data:{<target>: ServerMetrics}}`,
/// the `data` of the latest `metrics_update`.
pub fn servers_metrics(state: &AppState) -> Response<Body> {
    let data = state.hub.latest().data;
    let data = data.as_deref().map_or("{}".into(), String::from_utf8_lossy);
    json(StatusCode::OK, format!("{{\"success\":true,\"data\":{data}}}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_silences() {
        let s = parse_new(br#"{"matchers":[{"name":"host","value":"plc-*"}],"duration":"2h","comment":"maint"}"#, 1000)
            .unwrap();
        assert_eq!((s.starts_at, s.ends_at), (1000, 1000 + 7200));
        let err = |b: &[u8]| parse_new(b, 1000).unwrap_err();
        assert!(err(br#"{"matchers":[],"duration":"1h"}"#).contains("1 to 16"));
        assert!(err(br#"{"matchers":[{"name":"hots","value":"x"}],"duration":"1h"}"#).contains("hots"));
        assert!(err(br#"{"matchers":[{"name":"host","value":"x"}]}"#).contains("either"));
        assert!(err(br#"{"matchers":[{"name":"host","value":"x"}],"ends_at":999}"#).contains("already"));
        assert!(err(br#"{"matchers":[{"name":"host","value":"x"}],"duration":"400days"}"#).contains("366"));
    }
}
