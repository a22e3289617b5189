//! REST endpoints and the optional auth token.

use std::time::Duration;

use serde_json::Value;

use crate::support::{self, hosts::free_port, TestDaemon};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_servers_health_and_errors() {
    let dead = format!("ssh://nobody:pw@127.0.0.1:{}", free_port());
    let d = TestDaemon::start(&["local".into(), dead.clone()], "poll_interval_seconds = 60\nhost_timeout_seconds = 2")
        .await;
    let mut ws = d.connect().await;
    let data = support::wait_metrics(&mut ws, Duration::from_secs(10), |_| true).await;

    let (status, body) = support::http_get(d.addr, "/api/state", &[]).await;
    assert_eq!(status, 200);
    let state: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(state, data, "/api/state must be the data object of the latest metrics_update");

    let (status, body) = support::http_get(d.addr, "/api/v1/servers", &[]).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["success"], true);
    assert_eq!(v["data"]["total"], 2);
    let servers = v["data"]["servers"].as_array().unwrap();
    assert_eq!(servers[0]["url"], "local");
    assert_eq!(servers[0]["status"], "online");
    assert_eq!(servers[0]["metrics"], data["local"]);
    assert!(servers[0]["last_update"].as_str().unwrap().ends_with('Z'));
    assert_eq!(servers[1]["url"], "ssh://nobody:***@127.0.0.1:".to_string() + dead.rsplit(':').next().unwrap());
    assert_eq!(servers[1]["status"], "offline");
    assert!(servers[1]["metrics"].is_null());
    assert!(servers[1]["last_update"].is_null());
    assert_eq!(servers[1]["last_error_kind"], "connect");
    // The offline host still has the full metrics shape on /ws, for clients that index it.
    let off = &data[servers[1]["url"].as_str().unwrap()];
    assert_eq!(off["status"], "offline");
    assert!(off["memory"]["usedPercent"].is_number());
    assert!(support::error_cause(off["error"].as_str().unwrap()).starts_with("cannot connect"), "{off}");

    let (status, body) = support::http_get(d.addr, "/api/v1/health", &[]).await;
    assert_eq!(status, 200);
    let h: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["data"]["status"], "ok");
    assert_eq!((h["data"]["targets_total"].as_u64(), h["data"]["targets_online"].as_u64()), (Some(2), Some(1)));

    let (status, body) = support::http_get(d.addr, "/no/such/path", &[]).await;
    assert_eq!(status, 404);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["success"], false);
    let (status, body) = support::http_request(d.addr, "POST", "/api/state", &[("Content-Length", "0")]).await;
    assert_eq!(status, 405);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["error"], "method not allowed");
    let (status, body) = support::http_get(d.addr, "/ws", &[]).await;
    assert_eq!(status, 400, "plain GET /ws is not an upgrade: {body}");
    let (status, body) = support::http_get(d.addr, "/", &[]).await;
    assert_eq!(status, 200);
    assert!(body.contains("<title>monserv</title>"));
    assert!(d.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_guards_ws_and_api() {
    let d = TestDaemon::start(&["local".into()], "poll_interval_seconds = 1\nauth_token = \"s3cret-token\"").await;
    let err = tokio_tungstenite::connect_async(d.ws_url()).await.unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 401),
        other => panic!("expected HTTP 401, got {other}"),
    }
    assert!(tokio_tungstenite::connect_async(format!("{}?token=wrong-token", d.ws_url())).await.is_err());
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{}?token=s3cret-token", d.ws_url())).await.unwrap();
    support::wait_metrics(&mut ws, Duration::from_secs(5), |_| true).await;
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(d.ws_url()).unwrap();
    req.headers_mut().insert("Authorization", "Bearer s3cret-token".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_ok());

    assert_eq!(support::http_get(d.addr, "/api/state", &[]).await.0, 401);
    assert_eq!(support::http_get(d.addr, "/api/state?token=s3cret-token", &[]).await.0, 200);
    assert_eq!(support::http_get(d.addr, "/api/v1/servers", &[("Authorization", "Bearer s3cret-token")]).await.0, 200);
    assert_eq!(support::http_get(d.addr, "/api/v1/health", &[]).await.0, 200, "health stays open for probes");
    assert!(d.shutdown().await);
}

/// The Go MonServ's `POST /api/test-alert`: the alert reaches `/ws` clients as sent
/// (escaped like a rule's); here it needs the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_alert_reaches_ws_clients_with_the_token() {
    let d =
        TestDaemon::start(&["local".into()], "poll_interval_seconds = 0.5\nauth_token = \"test-alert-token\"").await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{}?token=test-alert-token", d.ws_url())).await.unwrap();
    let auth = [("Authorization", "Bearer test-alert-token")];
    let body = br#"{"alert_type":"recovery","subject":"[RECOVERED] test \u001b[2J","message":"all good"}"#;
    assert_eq!(support::http_send(d.addr, "POST", "/api/test-alert", &[], body).await.0, 401);
    let (status, answer) = support::http_send(d.addr, "POST", "/api/test-alert", &auth, body).await;
    assert_eq!(status, 200, "{answer}");
    let alert = loop {
        let m = support::next_json(&mut ws, Duration::from_secs(10)).await;
        if m["type"] == "alert" {
            break m;
        }
    };
    assert_eq!(
        alert,
        serde_json::json!({"type": "alert", "alert_type": "recovery", "subject": "[RECOVERED] test \\u{1b}[2J", "message": "all good"})
    );
    for (bad, why) in [
        (&b"{nope"[..], "expected {alert_type, subject, message}"),
        (br#"{"alert_type":"page","subject":"s"}"#, "alert_type \"page\""),
        (br#"{"subject":"  "}"#, "subject must not be empty"),
    ] {
        let (status, answer) = support::http_send(d.addr, "POST", "/api/test-alert", &auth, bad).await;
        assert_eq!(status, 400, "{answer}");
        let error = serde_json::from_str::<Value>(&answer).unwrap()["error"].as_str().unwrap().to_string();
        assert!(error.contains(why), "{error}");
    }
    assert_eq!(support::http_get(d.addr, "/api/test-alert", &auth).await.0, 405);
    assert!(d.shutdown().await);
    // Without a configured token, nobody may send test alerts.
    let d = TestDaemon::start(&["local".into()], "poll_interval_seconds = 0.5").await;
    let (status, answer) = support::http_send(d.addr, "POST", "/api/test-alert", &[], br#"{"subject":"s"}"#).await;
    assert_eq!(status, 403, "{answer}");
    assert!(d.shutdown().await);
}
