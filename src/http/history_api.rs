//! `GET /api/v1/history` (the in-memory history, as the file `rule test --history`
//! replays) and `POST /api/v1/rules/{name}/backtest` (the same replay on the
//! daemon's own history, before a hot swap: "would have fired 3 times in the last
//! hour").
//!
//! Both cost CPU and memory in proportion to the history asked for, so they take
//! the token like the rest of the API, and backtests run one at a time (a second
//! one meanwhile is answered 429 with `Retry-After`).

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Request, Response, StatusCode};

use super::{json, json_error, AppState, Body};
use crate::rules::loader::MAX_RULE_BYTES;

/// Query parameters: `minutes` (default: the whole window) and `target` (repeatable).
fn parse_query(query: Option<&str>, window_minutes: u64) -> Result<(u64, Vec<String>), String> {
    let mut minutes = window_minutes;
    let mut targets = Vec::new();
    for pair in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned();
        match k {
            "minutes" => {
                minutes =
                    v.parse::<u64>().ok().filter(|m| (1..=window_minutes.max(1)).contains(m)).ok_or(format!(
                        "minutes must be a whole number from 1 to {window_minutes} (the history window)"
                    ))?
            }
            "target" => targets.push(v),
            _ => {}
        }
    }
    Ok((minutes, targets))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// `{"success":true,"data":...}` written straight to bytes, not through a `Value`.
fn enveloped(data: &impl serde::Serialize) -> serde_json::Result<Vec<u8>> {
    let mut body = br#"{"success":true,"data":"#.to_vec();
    serde_json::to_writer(&mut body, data)?;
    body.push(b'}');
    Ok(body)
}

/// `{success, data: <history export>}`; `rule test --history` reads the whole answer.
pub async fn history(query: Option<&str>, state: &AppState) -> Response<Body> {
    let Some(history) = state.rules.engine.history_handle() else {
        return json_error(StatusCode::NOT_FOUND, "this monserv keeps no history");
    };
    let window = history.sizing().window.as_secs() / 60;
    let (minutes, targets) = match parse_query(query, window) {
        Ok(q) => q,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &e),
    };
    let built = tokio::task::spawn_blocking(move || {
        let only = (!targets.is_empty()).then_some(targets.as_slice());
        let now = now_ms();
        let values = history.export_values(only, minutes * 60, now);
        if values > MAX_EXPORT_VALUES {
            return Ok(Err(values));
        }
        enveloped(&history.export(only, minutes * 60, now)).map(Ok)
    })
    .await;
    match built {
        Ok(Ok(Ok(body))) => json(StatusCode::OK, body),
        Ok(Ok(Err(values))) => json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "the answer would hold {values} values (about {} MB; at most {MAX_EXPORT_VALUES}): ask for fewer \
                 targets (target=KEY, repeatable) or fewer minutes",
                values * 10 / 1_000_000
            ),
        ),
        Ok(Err(e)) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// Values one history answer may hold (about 20 MB of JSON): a whole fleet's hour is
/// fine up to about 150 hosts; beyond, ask per target (the console asks for one).
pub const MAX_EXPORT_VALUES: u64 = 2_000_000;

/// One backtest at a time.
static BACKTESTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// `POST /api/v1/rules/{name}/backtest[?minutes=N]`. An empty body replays the loaded
/// rule; a `.wasm` body is a candidate with the rule's settings file; a TOML body is
/// candidate settings (for the rule's component, or an expression rule).
pub async fn backtest(req: Request<Incoming>, name: &str, state: &AppState) -> Response<Body> {
    let api = &state.rules;
    let Some(history) = api.engine.history_handle() else {
        return json_error(StatusCode::NOT_FOUND, "this monserv keeps no history");
    };
    let window = history.sizing().window.as_secs() / 60;
    let (minutes, _) = match parse_query(req.uri().query(), window) {
        Ok(q) => q,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &e),
    };
    let Ok(_permit) = BACKTESTS.try_acquire() else {
        let mut r = json_error(StatusCode::TOO_MANY_REQUESTS, "a backtest is running; try again shortly");
        r.headers_mut().insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("5"));
        return r;
    };
    let body: Bytes = match Limited::new(req.into_body(), MAX_RULE_BYTES).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return json_error(StatusCode::PAYLOAD_TOO_LARGE, &format!("rules are limited to {MAX_RULE_BYTES} bytes"))
        }
    };
    let candidate = if body.is_empty() {
        None
    } else {
        match super::rules_api::candidate(name, body, api).await {
            Ok(c) => Some(c),
            Err(e) => return json_error(StatusCode::UNPROCESSABLE_ENTITY, &e),
        }
    };
    match api.engine.backtest(name, candidate, minutes * 60).await {
        Ok(outcome) => match enveloped(&outcome) {
            Ok(body) => json(StatusCode::OK, body),
            Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        },
        Err(e) => json_error(StatusCode::UNPROCESSABLE_ENTITY, &format!("cannot backtest: {e}")),
    }
}

/// The rules API hands `…/backtest` paths here.
pub fn is_backtest(rest: &str) -> Option<&str> {
    rest.strip_suffix("/backtest")
}
