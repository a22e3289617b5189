//! One JSON POST over HTTP/1.1, plain or TLS, for the HTTP sinks (webhook, Slack,
//! Telegram, Alertmanager). A connection per delivery: sinks send rarely, and a
//! kept-alive connection to a chat service would mostly be a dead one.
//!
//! Errors name the endpoint by its `shown` form, which the caller masks when the
//! URL itself is a credential (Slack's path, Telegram's bot token).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use super::SendError;
use crate::config::{HttpUrl, Secret};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(20);
/// Of an answer's body, this much is kept for an error message.
const ERROR_BODY: usize = 300;

/// An endpoint ready to be posted to.
#[derive(Clone)]
pub struct Endpoint {
    pub url: HttpUrl,
    /// The URL as errors and logs may show it.
    pub shown: String,
    pub headers: Vec<(String, Secret)>,
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// POST `body` as JSON. 2xx is accepted; 429, 5xx and connection problems are worth
/// retrying; any other answer is a permanent refusal (with the start of its body,
/// which is where Slack and Telegram say what was wrong).
pub async fn post_json(endpoint: &Endpoint, body: Vec<u8>) -> Result<(), SendError> {
    let (url, shown) = (&endpoint.url, &endpoint.shown);
    let retry = |what: &str, e: &dyn std::fmt::Display| SendError::Retry(format!("{what} {shown}: {e}"));
    let connect = crate::tls::connect(&url.host, url.port, endpoint.tls.as_ref());
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(retry("cannot connect to", &e)),
        Err(_) => return Err(retry("cannot connect to", &"timed out")),
    };
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| retry("handshake with", &e))?;
    let connection = tokio::spawn(conn);
    let mut req = hyper::Request::post(url.path.as_str())
        .header(hyper::header::HOST, url.host_header())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::USER_AGENT, concat!("monserv/", env!("CARGO_PKG_VERSION")));
    for (name, value) in &endpoint.headers {
        req = req.header(name.as_str(), value.expose());
    }
    let req = req.body(Full::new(Bytes::from(body))).map_err(|e| SendError::Permanent(e.to_string()))?;
    let sent = tokio::time::timeout(RESPONSE_TIMEOUT, async {
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        // Read (a bounded part of) the answer so the receiver is not cut off mid-write.
        let body = http_body_util::Limited::new(resp.into_body(), 64 << 10).collect().await;
        Ok::<_, hyper::Error>((status, body.map(|b| b.to_bytes()).unwrap_or_default()))
    })
    .await;
    connection.abort();
    let (status, answer) = match sent {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(retry("no answer from", &e)),
        Err(_) => return Err(retry("no answer from", &"timed out")),
    };
    let said = || {
        let text = String::from_utf8_lossy(&answer[..answer.len().min(ERROR_BODY)]).into_owned();
        let text = crate::rules::output::escape_controls(text.trim().to_string(), false, &mut false);
        if text.is_empty() {
            String::new()
        } else {
            format!(": {text}")
        }
    };
    match status.as_u16() {
        200..=299 => Ok(()),
        429 | 500..=599 => Err(SendError::Retry(format!("{shown} answered {status}{}", said()))),
        _ => Err(SendError::Permanent(format!("{shown} answered {status}{}", said()))),
    }
}
