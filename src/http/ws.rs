//! `/ws`: the MonServ WebSocket contract (PROTOCOL.md).
//!
//! One task per client, one `select!` loop over: shutdown, the hub's latest metrics
//! (keep latest), its alert ring, a ping timer (54 s), a silence deadline (60 s) and
//! incoming frames. Every write has a timeout (10 s); a client that cannot take a
//! frame in that time is dropped, so it never holds the others up (they read the same
//! shared bytes from the hub at their own pace). A client frame over 512 bytes closes
//! with 1009, a text frame that is not UTF-8 with 1007; a client a whole alert ring
//! behind closes with 1013. The client keeps its connection's `max_clients` slot.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use hyper_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use hyper_tungstenite::tungstenite::{Error as WsError, Message};
use hyper_tungstenite::HyperWebsocketStream;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use super::{json_error, AppState, Body};
use crate::config::WsTimings;

pub const MAX_CLIENT_FRAME: usize = 512;

/// Small buffers: clients send next to nothing, and 1000 idle dashboards should
/// cost kilobytes each, not tungstenite's default 128 KiB.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_write_buffer_size(64 << 20)
        .max_message_size(Some(MAX_CLIENT_FRAME))
        .max_frame_size(Some(MAX_CLIENT_FRAME))
}

pub fn handle_upgrade(mut req: Request<Incoming>, state: &AppState, slot: super::Slot) -> Response<Body> {
    if !hyper_tungstenite::is_upgrade_request(&req) {
        return json_error(StatusCode::BAD_REQUEST, "expected a WebSocket upgrade");
    }
    let (response, websocket) = match hyper_tungstenite::upgrade(&mut req, Some(ws_config())) {
        Ok(r) => r,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &format!("bad WebSocket upgrade: {e}")),
    };
    let hub = state.hub.clone();
    let shutdown = state.shutdown.clone();
    let timings = state.ws;
    state.tracker.spawn(async move {
        let _slot = slot; // held while the client is connected
        match websocket.await {
            Ok(ws) => serve_client(ws, hub, shutdown, timings).await,
            Err(e) => tracing::debug!(error = %e, "websocket upgrade did not complete"),
        }
    });
    response
}

/// Why a client's loop ended, for the debug log.
#[derive(Debug)]
enum End {
    ClientClosed,
    Shutdown,
    Silent,
    Lagged(u64),
    WriteTimeout,
    TooBig,
    BadUtf8,
    Error(String),
}

async fn serve_client(
    mut ws: HyperWebsocketStream,
    hub: std::sync::Arc<crate::hub::Hub>,
    shutdown: tokio_util::sync::CancellationToken,
    timings: WsTimings,
) {
    let (ping_every, read_timeout, write_timeout) =
        (timings.ping_interval(), timings.read_timeout(), timings.write_timeout());
    let crate::hub::Subscription { mut metrics, mut alerts } = hub.subscribe();
    let end = async {
        let first = metrics.borrow_and_update().clone();
        if let Some(frame) = first {
            send(&mut ws, write_timeout, Message::Text(frame)).await?;
        }
        let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        let silence = tokio::time::sleep(read_timeout);
        tokio::pin!(silence);
        loop {
            tokio::select! {
                // Order matters: what the client sent (a pong) is read before more is
                // sent, so a long burst of alerts cannot make a live client look silent.
                biased;
                _ = shutdown.cancelled() => return Err(End::Shutdown),
                incoming = ws.next() => match incoming {
                    None | Some(Ok(Message::Close(_))) => return Err(End::ClientClosed),
                    // Any frame (pong included) shows the client is alive.
                    Some(Ok(_)) => silence.as_mut().reset(Instant::now() + read_timeout),
                    Some(Err(WsError::Capacity(_))) => return Err(End::TooBig),
                    Some(Err(WsError::Utf8(_))) => return Err(End::BadUtf8),
                    Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => return Err(End::ClientClosed),
                    Some(Err(e)) => return Err(End::Error(e.to_string())),
                },
                changed = metrics.changed() => {
                    if changed.is_err() {
                        return Err(End::Shutdown);
                    }
                    let frame = metrics.borrow_and_update().clone();
                    if let Some(frame) = frame {
                        send(&mut ws, write_timeout, Message::Text(frame)).await?;
                    }
                }
                msg = alerts.recv() => match msg {
                    Ok(frame) => send(&mut ws, write_timeout, Message::Text(frame)).await?,
                    Err(RecvError::Lagged(n)) => return Err(End::Lagged(n)),
                    Err(RecvError::Closed) => return Err(End::Shutdown),
                },
                _ = ping.tick() => send(&mut ws, write_timeout, Message::Ping(Default::default())).await?,
                _ = &mut silence => return Err(End::Silent),
            }
        }
        #[allow(unreachable_code)]
        Ok::<(), End>(())
    }
    .await;
    let Err(end) = end else { return };
    let close = match &end {
        End::Shutdown => Some((CloseCode::Away, "server shutting down")),
        End::Silent => Some((CloseCode::Normal, "no frame or pong within the read timeout")),
        End::TooBig => Some((CloseCode::Size, "client frames are limited to 512 bytes")),
        End::BadUtf8 => Some((CloseCode::Invalid, "a text frame must be UTF-8")),
        End::Lagged(_) => Some((CloseCode::Again, "too slow: fell a whole alert ring behind")),
        End::ClientClosed | End::WriteTimeout | End::Error(_) => None,
    };
    if let Some((code, reason)) = close {
        let frame = CloseFrame { code, reason: reason.into() };
        let _ = tokio::time::timeout(Duration::from_secs(1), ws.send(Message::Close(Some(frame)))).await;
        // Give the client a moment to answer the close handshake.
        let _ =
            tokio::time::timeout(Duration::from_secs(1), async { while let Some(Ok(_)) = ws.next().await {} }).await;
    }
    match end {
        End::Lagged(missed) => tracing::warn!(missed, "websocket client fell a whole alert ring behind; disconnected"),
        End::Error(e) => tracing::debug!(error = %e, "websocket client dropped"),
        other => tracing::debug!(reason = ?other, "websocket client disconnected"),
    }
}

async fn send(ws: &mut HyperWebsocketStream, write_timeout: Duration, msg: Message) -> Result<(), End> {
    match tokio::time::timeout(write_timeout, ws.send(msg)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => Err(End::ClientClosed),
        Ok(Err(e)) => Err(End::Error(e.to_string())),
        Err(_) => Err(End::WriteTimeout),
    }
}
