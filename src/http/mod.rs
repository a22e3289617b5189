//! The HTTP server: `/ws`, the REST API and the web page on one port, plain or TLS.
//!
//! Plain hyper 1, routing by `match (method, path)`. Every connection is a task in
//! the daemon's `TaskTracker` and holds a [`limits::Conn`] for its whole life,
//! WebSockets included: one of `max_clients` and one of its address's
//! `max_clients_per_ip` (past either, 503 with `Retry-After`). Headers must arrive
//! within `http.idle_timeout_seconds` (hyper restarts that clock whenever a
//! keep-alive connection goes idle, so it is also the idle timeout), and a write
//! that makes no progress for `http.write_timeout_seconds` ends the connection
//! ([`conn_io`]). Before routing, [`origin`] checks `Host` and `Origin`; a wrong
//! token counts against its address ([`limits::AuthThrottle`]); changes are audited.
//! On shutdown the accept loop stops, HTTP connections finish gracefully and
//! WebSocket clients get a close frame.

pub mod alerts_api;
pub mod api;
pub mod conn_io;
pub mod history_api;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod origin;
pub mod page;
pub mod rules_api;
pub mod serve_tls;
pub mod silences_api;
pub mod ws;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{HttpTimings, Secret, WsTimings};
use crate::hub::Hub;
pub use limits::Slot;

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
    /// remote_write receivers, when any is configured.
    pub exporter: Option<Arc<crate::export::remote_write::Exporter>>,
    pub gate: origin::Gate,
    pub throttle: limits::AuthThrottle,
    pub http: HttpTimings,
    /// Serving `https://` and `wss://`, when a certificate is configured.
    pub tls: Option<Arc<serve_tls::ServingTls>>,
}

/// How many connections, in all and from one address.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_clients: usize,
    pub per_ip: usize,
}

fn refusal(message: &str) -> Vec<u8> {
    let body = format!("{{\"success\":false,\"error\":\"{message}\"}}\n");
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Type: application/json\r\n\
Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// TLS handshakes (and refusals over TLS) must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Refusals over TLS need a handshake, so a task: at most this many at once.
const TLS_REFUSALS_AT_ONCE: usize = 16;

/// Accept connections until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, state: Arc<AppState>, limits: Limits) {
    let permits = Arc::new(Semaphore::new(limits.max_clients));
    let per_ip = limits::PerIp::new(limits.per_ip);
    let tls_refusals = Arc::new(Semaphore::new(TLS_REFUSALS_AT_ONCE));
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
        let place = match permits.clone().try_acquire_owned() {
            Err(_) => Err("too many connections"),
            Ok(permit) => match per_ip.try_take(peer.ip()) {
                None => Err("too many connections from your address"),
                Some(place) => Ok((permit, place)),
            },
        };
        let (permit, place) = match place {
            Ok(p) => p,
            Err(why) => {
                refused += 1;
                if refused.is_power_of_two() {
                    tracing::warn!(%peer, limits.max_clients, limits.per_ip, refused, "{why}; refusing connections");
                }
                refuse(stream, why, &state, &tls_refusals);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        state.tracker.clone().spawn(async move {
            let (io, client_cert): (Box<dyn crate::tls::Stream>, Option<String>) = match &state.tls {
                None => (Box::new(stream), None),
                Some(tls) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor().accept(stream)).await {
                    Ok(Ok(s)) => {
                        let cert = s.get_ref().1.peer_certificates().and_then(|c| c.first());
                        let name = cert.map(|c| crate::tls::subject_common_name(c).unwrap_or_else(|| "(no CN)".into()));
                        (Box::new(s), name)
                    }
                    Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                },
            };
            let slot: Slot = Arc::new(limits::Conn::new(permit, place, peer, client_cert));
            serve_connection(io, state, slot).await;
        });
    }
}

/// Refuse a connection past a limit with 503 and `Retry-After`. Plain: at once, without
/// a task (the socket's empty send buffer takes these few bytes). TLS: after a
/// handshake, on a bounded number of tasks; past that the connection is just closed.
fn refuse(stream: TcpStream, why: &str, state: &Arc<AppState>, tls_refusals: &Arc<Semaphore>) {
    let Some(tls) = &state.tls else {
        let _ = stream.try_write(&refusal(why));
        return;
    };
    let Ok(permit) = tls_refusals.clone().try_acquire_owned() else {
        return;
    };
    let acceptor = tls.acceptor();
    let message = refusal(why);
    state.tracker.spawn(async move {
        let _permit = permit;
        let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, async move {
            let mut s = acceptor.accept(stream).await?;
            tokio::io::AsyncWriteExt::write_all(&mut s, &message).await?;
            tokio::io::AsyncWriteExt::shutdown(&mut s).await
        })
        .await;
    });
}

async fn serve_connection(io: Box<dyn crate::tls::Stream>, state: Arc<AppState>, slot: Slot) {
    let peer = slot.peer;
    let io = conn_io::Deadlined::new(io, state.http.write_timeout());
    let service = service_fn(|req| route(req, state.clone(), slot.clone()));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(state.http.idle_timeout())
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => if let Err(e) = r { tracing::debug!(%peer, error = %e, "http connection ended with error") },
        _ = state.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
        }
    }
}

/// Routes anyone may use: the page, health, the API description.
fn public(path: &str) -> bool {
    matches!(path, "/" | "/index.html" | "/console.js" | "/console.css" | "/api/v1/health" | "/api/openapi.json")
}

/// Requests that change something: each gets an audit line.
fn audited(method: &Method, path: &str) -> bool {
    *method != Method::GET
        && (path == "/api/test-alert" || path.starts_with("/api/v1/silences") || path.starts_with("/api/v1/rules"))
}

async fn route(req: Request<Incoming>, state: Arc<AppState>, slot: Slot) -> Result<Response<Body>, Infallible> {
    let cors = match state.gate.check(&req) {
        origin::Pass::Plain => None,
        origin::Pass::Cors(origin) => Some(origin),
        origin::Pass::Refused(why) => return Ok(origin::Pass::refusal(why)),
    };
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    if method == Method::OPTIONS {
        return Ok(match cors {
            Some(origin) => origin::preflight(origin),
            None => method_not_allowed("GET, POST, PUT, DELETE"),
        });
    }
    let mut response = match (!public(&path)).then(|| deny(&req, &state, &slot)).flatten() {
        Some(refused) => refused,
        None => dispatch(req, &path, &state, slot.clone()).await,
    };
    if audited(&method, &path) {
        tracing::info!(
            target: "monserv::audit",
            who = %slot.who(state.auth_token.is_some()),
            from = %slot.peer.ip(),
            status = response.status().as_u16(),
            "{method} {path}"
        );
    }
    if let Some(origin) = cors {
        origin::allow(&mut response, origin);
    }
    Ok(response)
}

/// The refusal for a request that needs the token and lacks it, or from an address
/// that has sent too many wrong ones.
fn deny<B>(req: &Request<B>, state: &AppState, slot: &Slot) -> Option<Response<Body>> {
    let expected = state.auth_token.as_ref()?;
    let ip = slot.peer.ip();
    if let Some(wait) = state.throttle.blocked(ip) {
        let mut r = json_error(StatusCode::TOO_MANY_REQUESTS, "too many wrong tokens from your address");
        r.headers_mut().insert(hyper::header::RETRY_AFTER, HeaderValue::from(wait));
        return Some(r);
    }
    match token_matches(req, expected) {
        Some(true) => None,
        Some(false) => {
            state.throttle.failed(ip);
            tracing::warn!(target: "monserv::audit", from = %ip, path = req.uri().path(), "wrong token");
            Some(unauthorized())
        }
        None => Some(unauthorized()),
    }
}

async fn dispatch(req: Request<Incoming>, path: &str, state: &Arc<AppState>, slot: Slot) -> Response<Body> {
    match (req.method(), path) {
        (&Method::GET, "/ws") => ws::handle_upgrade(req, state, slot),
        (&Method::GET, "/" | "/index.html" | "/console.js" | "/console.css") => {
            page::asset(path, req.headers()).unwrap_or_else(|| json_error(StatusCode::NOT_FOUND, "not found"))
        }
        (&Method::GET, "/api/v1/health") => api::health(state),
        (&Method::GET, "/api/openapi.json") => openapi::document(),
        (&Method::GET, "/api/v1/servers/metrics") => silences_api::servers_metrics(state),
        (&Method::GET, "/api/state") => api::state(state),
        (&Method::GET, "/api/v1/servers") => api::servers(state),
        (&Method::GET, "/api/v1/alerts/active") => alerts_api::active(state),
        (&Method::GET, "/api/v1/alerts/history") => alerts_api::history(req.uri().query(), state).await,
        (&Method::GET, "/api/v1/history") => history_api::history(req.uri().query(), state).await,
        (&Method::GET, "/api/v1/notify") => alerts_api::notify(state).await,
        (&Method::GET, "/metrics") => metrics::metrics(state).await,
        (&Method::POST, "/api/test-alert") => alerts_api::test_alert(req, state).await,
        (_, "/api/test-alert") => method_not_allowed("POST"),
        (_, p) if p == "/api/v1/silences" || p.starts_with("/api/v1/silences/") => {
            silences_api::handle(req, state).await
        }
        (_, p) if p == "/api/v1/rules" || p.starts_with("/api/v1/rules/") => rules_api::handle(req, state).await,
        (
            _,
            "/ws"
            | "/"
            | "/index.html"
            | "/console.js"
            | "/console.css"
            | "/api/v1/health"
            | "/api/state"
            | "/api/v1/servers"
            | "/api/v1/servers/metrics"
            | "/api/v1/alerts/active"
            | "/api/v1/alerts/history"
            | "/api/v1/history"
            | "/api/v1/notify"
            | "/metrics"
            | "/api/openapi.json",
        ) => method_not_allowed("GET"),
        _ => json_error(StatusCode::NOT_FOUND, "not found"),
    }
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

/// Whether the request's token (`?token=` or `Authorization: Bearer`) is `expected`,
/// compared in constant time; None when it carries none.
fn token_matches<B>(req: &Request<B>, expected: &Secret) -> Option<bool> {
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
    let given: Vec<String> = [from_query, from_header].into_iter().flatten().collect();
    if given.is_empty() {
        return None;
    }
    Some(given.iter().any(|g| constant_time_eq(g.as_bytes(), expected.expose().as_bytes())))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
