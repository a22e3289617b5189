//! The HTTP server: `/ws`, the REST API and the web page on one port.
//!
//! Plain hyper 1, routing by `match (method, path)`. Every connection is a task in
//! the daemon's `TaskTracker`; the number of open connections, WebSockets included
//! for their whole life, is capped by a semaphore (`max_clients`; past it a client
//! gets 503 with `Retry-After`); headers must arrive within 10 s. On shutdown the
//! accept loop stops, HTTP connections finish gracefully and WebSocket clients get
//! a close frame.

pub mod alerts_api;
pub mod api;
pub mod openapi;
pub mod page;
pub mod rules_api;
pub mod silences_api;
pub mod ws;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Secret, WsTimings};
use crate::hub::Hub;

pub type Body = Full<Bytes>;

/// What request handlers share.
pub struct AppState {
    pub hub: Arc<Hub>,
    pub auth_token: Option<Secret>,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
    pub started: std::time::Instant,
    pub poll_interval: Duration,
    pub ws: WsTimings,
    pub rules: rules_api::RulesApi,
    /// Delivery to sinks besides `/ws`, when any is configured.
    pub notifier: Option<Arc<crate::notify::Notifier>>,
}

/// What a connection past `max_clients` gets before it is closed.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Type: application/json\r\n\
Content-Length: 49\r\nConnection: close\r\n\r\n{\"success\":false,\"error\":\"too many connections\"}\n";

/// A connection's place under `max_clients`.
pub type Slot = Arc<tokio::sync::OwnedSemaphorePermit>;

/// Accept connections until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, state: Arc<AppState>, max_clients: usize) {
    let permits = Arc::new(Semaphore::new(max_clients));
    let mut refused: u64 = 0;
    loop {
        let (stream, peer) = tokio::select! {
            _ = state.shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(%peer, max_clients, refused, "connection limit reached; refusing connections");
            }
            // A clean refusal a client can act on, without a task or a wait: the
            // socket's empty send buffer takes these few bytes at once (or nothing).
            let _ = stream.try_write(REFUSAL);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        // The slot is held by the connection and, after an upgrade, by its WebSocket:
        // it frees when both are gone.
        let slot = Arc::new(permit);
        state.tracker.clone().spawn(async move {
            let service = service_fn(|req| route(req, state.clone(), slot.clone()));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => if let Err(e) = r { tracing::debug!(%peer, error = %e, "http connection ended with error") },
                _ = state.shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
                }
            }
        });
    }
}

async fn route(req: Request<Incoming>, state: Arc<AppState>, slot: Slot) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let response = match (req.method(), path.as_str()) {
        (&Method::GET, "/ws") => ws::handle_upgrade(req, &state, slot),
        (&Method::GET, "/" | "/index.html") => page::index(),
        (&Method::GET, "/api/v1/health") => api::health(&state),
        (
            &Method::GET,
            "/api/state"
            | "/api/v1/servers"
            | "/api/v1/servers/metrics"
            | "/api/v1/alerts/active"
            | "/api/v1/alerts/history"
            | "/api/v1/notify",
        ) if !authorized(&req, &state) => unauthorized(),
        (&Method::GET, "/api/openapi.json") => openapi::document(),
        (&Method::GET, "/api/v1/servers/metrics") => silences_api::servers_metrics(&state),
        (&Method::GET, "/api/state") => api::state(&state),
        (&Method::GET, "/api/v1/servers") => api::servers(&state),
        (&Method::GET, "/api/v1/alerts/active") => alerts_api::active(&state),
        (&Method::GET, "/api/v1/alerts/history") => alerts_api::history(req.uri().query(), &state).await,
        (&Method::GET, "/api/v1/notify") => alerts_api::notify(&state).await,
        (&Method::POST, "/api/test-alert") if !authorized(&req, &state) => unauthorized(),
        (&Method::POST, "/api/test-alert") => alerts_api::test_alert(req, &state).await,
        (_, "/api/test-alert") => method_not_allowed("POST"),
        (_, p) if p == "/api/v1/silences" || p.starts_with("/api/v1/silences/") => {
            if !authorized(&req, &state) {
                unauthorized()
            } else {
                silences_api::handle(req, &state).await
            }
        }
        (_, p) if p == "/api/v1/rules" || p.starts_with("/api/v1/rules/") => {
            if !authorized(&req, &state) {
                unauthorized()
            } else {
                rules_api::handle(req, &state).await
            }
        }
        (
            _,
            "/ws"
            | "/"
            | "/index.html"
            | "/api/v1/health"
            | "/api/state"
            | "/api/v1/servers"
            | "/api/v1/servers/metrics"
            | "/api/v1/alerts/active"
            | "/api/v1/alerts/history"
            | "/api/v1/notify"
            | "/api/openapi.json",
        ) => method_not_allowed("GET"),
        _ => json_error(StatusCode::NOT_FOUND, "not found"),
    };
    Ok(response)
}

/// A JSON response.
pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    r.headers_mut().insert(hyper::header::CACHE_CONTROL, hyper::header::HeaderValue::from_static("no-store"));
    r
}

pub fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = json_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    r.headers_mut().insert(hyper::header::ALLOW, hyper::header::HeaderValue::from_static(allow));
    r
}

pub fn json_error(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "success": false, "error": message });
    json(status, body.to_string())
}

pub fn unauthorized() -> Response<Body> {
    let mut r = json_error(StatusCode::UNAUTHORIZED, "missing or wrong token");
    r.headers_mut().insert(hyper::header::WWW_AUTHENTICATE, hyper::header::HeaderValue::from_static("Bearer"));
    r
}

/// True when no token is configured, or the request carries it as `?token=` or
/// `Authorization: Bearer`. Compared in constant time.
pub fn authorized<B>(req: &Request<B>, state: &AppState) -> bool {
    let Some(expected) = &state.auth_token else {
        return true;
    };
    let from_query = req.uri().query().and_then(|q| {
        q.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == "token").then(|| percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned())
        })
    });
    let from_header = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|v| v.trim().to_string());
    [from_query, from_header]
        .into_iter()
        .flatten()
        .any(|given| constant_time_eq(given.as_bytes(), expected.expose().as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
