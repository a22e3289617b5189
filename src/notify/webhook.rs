//! The webhook sink: one Alertmanager webhook v4 message per transition, POSTed over
//! HTTP/1.1, so receivers written for Alertmanager work unchanged.

use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use super::SendError;
use crate::config::WebhookSink;
use crate::store::alerts::Transition;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(15);

/// The Alertmanager webhook v4 body for one transition.
pub fn payload(t: &Transition) -> serde_json::Value {
    let at = crate::model::rfc3339_utc(UNIX_EPOCH + Duration::from_secs(t.time));
    let (status, ends_at) = match t.alert_type.as_str() {
        "recovery" => ("resolved", at.clone()),
        _ => ("firing", "0001-01-01T00:00:00Z".to_string()),
    };
    let labels = serde_json::json!({ "alertname": t.rule, "key": t.key, "source": "monserv" });
    let annotations = serde_json::json!({ "subject": t.subject, "message": t.message });
    serde_json::json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{}\", key=\"{}\"}}", t.rule, t.key),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "monserv",
        "groupLabels": { "alertname": t.rule },
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": "",
        "alerts": [{
            "status": status,
            "labels": labels,
            "annotations": annotations,
            "startsAt": at,
            "endsAt": ends_at,
            "generatorURL": "",
            "fingerprint": format!("{:016x}", fnv1a(format!("{}\0{}", t.rule, t.key).as_bytes())),
        }],
        "monserv": { "seq": t.seq, "alert_type": t.alert_type },
    })
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// POST one transition. 2xx is accepted; 429, 5xx and connection problems are worth
/// retrying; any other answer is a permanent refusal.
pub async fn send(sink: &WebhookSink, t: &Transition) -> Result<(), SendError> {
    let url = &sink.url;
    let retry = |what: &str, e: &dyn std::fmt::Display| SendError::Retry(format!("{what} {url}: {e}"));
    let connect = tokio::net::TcpStream::connect((url.host.as_str(), url.port));
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(retry("cannot connect to", &e)),
        Err(_) => return Err(retry("cannot connect to", &"timed out")),
    };
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| retry("handshake with", &e))?;
    let connection = tokio::spawn(conn);
    let body = serde_json::to_vec(&payload(t)).map_err(|e| SendError::Permanent(e.to_string()))?;
    let host = if url.port == 80 { url.host.clone() } else { format!("{}:{}", url.host, url.port) };
    let mut req = hyper::Request::post(url.path.as_str())
        .header(hyper::header::HOST, host)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::USER_AGENT, concat!("monserv/", env!("CARGO_PKG_VERSION")));
    for (name, value) in &sink.headers {
        req = req.header(name.as_str(), value.expose());
    }
    let req = req.body(Full::new(Bytes::from(body))).map_err(|e| SendError::Permanent(e.to_string()))?;
    let sent = tokio::time::timeout(RESPONSE_TIMEOUT, async {
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        // Read (a bounded part of) the answer so the receiver is not cut off mid-write.
        let _ = http_body_util::Limited::new(resp.into_body(), 64 << 10).collect().await;
        Ok::<_, hyper::Error>(status)
    })
    .await;
    connection.abort();
    let status = match sent {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(retry("no answer from", &e)),
        Err(_) => return Err(retry("no answer from", &"timed out")),
    };
    match status.as_u16() {
        200..=299 => Ok(()),
        429 | 500..=599 => Err(SendError::Retry(format!("{url} answered {status}"))),
        _ => Err(SendError::Permanent(format!("{url} answered {status}"))),
    }
}
