//! Go MonServ agent targets (`http://host:port`): polled over one kept-alive HTTP
//! connection, alerted on like any host, and contained when hostile. The agent is a
//! real HTTP server on loopback. Needs no root.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::support::{self, TestDaemon};

/// A Go MonServ agent's answer, in the shape of PROTOCOL.md's ServerMetrics.
const ANSWER: &str = r#"{"hostname":"plc-gw-7\u001b[2J","uptimeSeconds":86400,
 "memory":{"total":8000000000,"used":7600000000,"free":400000000,"usedPercent":95.0},
 "disks":[{"device":"/dev/mmcblk0p2","mountpoint":"/","fstype":"ext4","total":100,"used":40,"free":60,"usedPercent":40.0}],
 "topProcsByMem":[{"pid":812,"name":"historian","username":"scada","rssBytes":4000000000,"percentRAM":50.0,"cmdline":"historian --db /data"}],
 "generatedAtUtc":"2026-01-01T00:00:00Z"}"#;

struct Agent {
    port: u16,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Agent {
    /// `/metrics`: the answer; `/huge`: 2 MB; `/slow`: nothing for 30 s; `/garbage`:
    /// not JSON; `/missing`: 404.
    async fn start() -> Agent {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                        let (status, body) = match req.uri().path() {
                            "/metrics" => (200, Bytes::from_static(ANSWER.as_bytes())),
                            "/huge" => (200, Bytes::from(format!("{{\"hostname\":\"{}\"}}", "x".repeat(2 << 20)))),
                            "/slow" => {
                                tokio::time::sleep(Duration::from_secs(30)).await;
                                (200, Bytes::from_static(ANSWER.as_bytes()))
                            }
                            "/garbage" => (200, Bytes::from_static(b"<html>\x1b[31mnot json")),
                            _ => (404, Bytes::from_static(b"{}")),
                        };
                        let mut resp = hyper::Response::new(Full::new(body));
                        *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        Ok::<_, std::convert::Infallible>(resp)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Agent { port, connections, task }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_agents_are_polled_alerted_on_and_contained() {
    // The good agent has a server of its own, so its connections can be counted.
    let (agent, hostile) = (Agent::start().await, Agent::start().await);
    let good = format!("http://127.0.0.1:{}", agent.port);
    let url = |path: &str| format!("http://127.0.0.1:{}{path}", hostile.port);
    let targets = vec![good.clone(), url("/huge"), url("/slow"), url("/garbage"), url("/missing")];
    let d = TestDaemon::start(
        &targets,
        "poll_interval_seconds = 1\nhost_timeout_seconds = 1\n[thresholds]\ndisk_percent = 100\ncpu_percent = 100\nproc_ram_percent = 100",
    )
    .await;
    let mut ws = d.connect().await;
    let offline = |d: &Value, k: &str| d[k]["status"] == "offline" && d[k]["error"].is_string();
    let data = support::wait_metrics(&mut ws, Duration::from_secs(20), |d| {
        d[&good]["status"] == "online" && targets[1..].iter().all(|k| offline(d, k))
    })
    .await;
    let m = &data[&good];
    // The agent's metrics, its escape cleaned, under the key it was configured with.
    assert_eq!(m["hostname"], "plc-gw-7\u{fffd}[2J");
    assert_eq!((m["memory"]["usedPercent"].as_f64(), m["uptimeSeconds"].as_u64()), (Some(95.0), Some(86400)));
    assert_eq!(m["topProcsByMem"][0]["name"], "historian");
    assert_eq!(m["disks"][0]["mountpoint"], "/");
    let error = |k: &str| support::error_cause(data[k]["error"].as_str().unwrap()).to_string();
    assert_eq!(error(&url("/huge")), "output exceeded 1048576 bytes; closed the session");
    // The host timeout on the first try; the round's deadline once it waits out a backoff.
    assert!(
        ["no complete answer within 1s", "no complete answer before the poll deadline"]
            .contains(&error(&url("/slow")).as_str()),
        "{}",
        error(&url("/slow"))
    );
    assert!(
        error(&url("/garbage")).starts_with("unusable output: agent answer is malformed"),
        "{}",
        error(&url("/garbage"))
    );
    assert!(!error(&url("/garbage")).contains('\u{1b}'));
    assert_eq!(error(&url("/missing")), "agent answered HTTP 404");
    // The built-in rule alerts on it like on any host. Read from the active alerts:
    // the alert may have gone out on /ws while `wait_metrics` above skipped it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let alert = loop {
        let (status, body) = support::http_get(d.addr, "/api/v1/alerts/active", &[]).await;
        assert_eq!(status, 200, "{body}");
        let active: Value = serde_json::from_str(&body).unwrap();
        let alerts = active["data"]["alerts"].as_array().unwrap();
        if let Some(a) = alerts.iter().find(|a| a["subject"].as_str().unwrap().contains("memory high")) {
            break a.clone();
        }
        assert!(Instant::now() < deadline, "no memory alert for the agent within 20 s: {active:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(alert["subject"], "[ALERT] plc-gw-7\u{fffd}[2J memory high");
    // One kept-alive connection for the good agent across rounds, no per-poll connects.
    for _ in 0..3 {
        let d = support::wait_metrics(&mut ws, Duration::from_secs(5), |_| true).await;
        assert_eq!(d[&good]["status"], "online");
    }
    assert_eq!(agent.connections.load(Ordering::SeqCst), 1, "the agent was reconnected");
    assert!(d.shutdown().await);
}
