//! Test support: real peers (hosts in `hosts`, machine fixtures in `fixtures`), the
//! daemon started in-process on 127.0.0.1:0, and WebSocket helpers.

#![allow(dead_code, unused_imports)]

pub mod fixtures;
pub mod hosts;
pub mod monserv_bin;
pub mod receiver;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use fixtures::fixtures;
pub use hosts::{BusyBoxHost, Sshd};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A monserv daemon in this test process, with its own state directory.
pub struct TestDaemon {
    daemon: Option<monserv::Daemon>,
    pub addr: SocketAddr,
    pub state_dir: tempfile::TempDir,
}

impl TestDaemon {
    /// Start with the given targets and extra TOML lines.
    pub async fn start(targets: &[String], extra: &str) -> TestDaemon {
        let state_dir = tempfile::tempdir().unwrap();
        let toml = Self::toml(targets, extra, state_dir.path());
        let config = monserv::config::Config::from_toml(&toml, &[("_", "_")])
            .unwrap_or_else(|e| panic!("test config: {e}\n{toml}"));
        let daemon = monserv::Daemon::start(config).await.expect("daemon start");
        // Serving starts before the rules are compiled; tests start from loaded rules.
        daemon.rules().loaded().await;
        TestDaemon { addr: daemon.local_addr(), daemon: Some(daemon), state_dir }
    }

    pub fn toml(targets: &[String], extra: &str, state_dir: &std::path::Path) -> String {
        let list: Vec<String> = targets.iter().map(|t| format!("{t:?}")).collect();
        // Only key-auth targets need the fixtures' client key (and so root).
        let needs_key = targets.iter().any(|t| {
            t.strip_prefix("ssh://").and_then(|rest| rest.rsplit_once('@')).is_some_and(|(user, _)| !user.contains(':'))
        });
        let identity = if needs_key {
            format!("identity_file = {:?}\n", fixtures().client_key.display().to_string())
        } else {
            String::new()
        };
        format!(
            "listen = \"127.0.0.1\"\nport = 0\nstate_dir = {:?}\n{identity}targets = [{}]\n{extra}\n",
            state_dir.display().to_string(),
            list.join(", ")
        )
    }

    /// The rules directory (created if the loader has not yet).
    pub fn rules_dir(&self) -> std::path::PathBuf {
        let dir = self.state_dir.path().join("rules");
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// `GET /api/v1/rules` (with a token if given).
    pub async fn rules(&self, token: Option<&str>) -> Value {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let (status, body) = http_get(self.addr, "/api/v1/rules", &headers).await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()["data"].clone()
    }

    /// Wait (up to 20 s) until rule `name` is listed as rejected; returns the reason.
    pub async fn wait_rejected(&self, name: &str, token: Option<&str>) -> String {
        let start = std::time::Instant::now();
        loop {
            let list = self.rules(token).await;
            if let Some(r) = list["rejected"].as_array().and_then(|r| r.iter().find(|r| r["name"] == name)) {
                return r["reason"].as_str().unwrap().to_string();
            }
            assert!(start.elapsed() < Duration::from_secs(20), "{name} never refused: {list:#}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn hub(&self) -> &std::sync::Arc<monserv::hub::Hub> {
        self.daemon.as_ref().unwrap().hub()
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn connect(&self) -> Ws {
        let (ws, _) = tokio_tungstenite::connect_async(self.ws_url()).await.expect("ws connect");
        ws
    }

    pub async fn shutdown(mut self) -> bool {
        self.daemon.take().unwrap().shutdown(Duration::from_secs(5)).await
    }
}

/// Connect to a daemon that may still be starting (a spawned binary): retry for 10 s.
pub async fn connect_retry(url: &str) -> Ws {
    let start = Instant::now();
    loop {
        match tokio_tungstenite::connect_async(url).await {
            Ok((ws, _)) => return ws,
            Err(_) if start.elapsed() < Duration::from_secs(10) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("{url} did not come up: {e}"),
        }
    }
}

/// Next text message as JSON; pings and pongs are skipped. Panics on timeout.
pub async fn next_json(ws: &mut Ws, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, ws.next()).await.expect("timed out waiting for a message");
        match msg {
            Some(Ok(Message::Text(t))) => {
                return serde_json::from_str(&t).unwrap_or_else(|e| panic!("frame is not one JSON value ({e}): {t}"))
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("unexpected websocket event: {other:?}"),
        }
    }
}

/// The cause inside a host's error: a host waiting out its reconnect backoff reports
/// "next reconnect in N ms (last error: CAUSE)"; any other error is its own cause.
/// Which of the two a client sees depends on how many rounds ran before it looked.
pub fn error_cause(error: &str) -> &str {
    let waiting = error.strip_prefix("next reconnect in ").and_then(|rest| rest.split_once(" ms (last error: "));
    match waiting {
        Some((ms, cause)) if ms.parse::<u64>().is_ok() => cause.strip_suffix(')').unwrap_or(cause),
        _ => error,
    }
}

/// Wait for a `metrics_update` satisfying `pred`; returns its `data`.
pub async fn wait_metrics(ws: &mut Ws, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + timeout;
    let mut last = Value::Null;
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(msg) = tokio::time::timeout(left, next_json(ws, left + Duration::from_millis(10))).await else {
            break;
        };
        if msg["type"] == "metrics_update" {
            if pred(&msg["data"]) {
                return msg["data"].clone();
            }
            last = msg["data"].clone();
        }
    }
    panic!("no matching metrics_update within {timeout:?}; last: {last:#}");
}

/// Blocking HTTP GET returning status and body (hyper's own client would be a
/// second implementation of what we test; a raw request keeps it honest).
pub async fn http_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    http_request(addr, "GET", path, headers).await
}

pub async fn http_request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    http_send(addr, method, path, headers, &[]).await
}

pub async fn http_send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await.expect("http timeout").unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// This machine's values, to compare with what the hosts report.
pub fn machine_mem_total() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    let line = text.lines().find(|l| l.starts_with("MemTotal:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

pub fn machine_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string()
}

/// fstype of the mount that holds `path` (longest matching mountpoint).
pub fn fstype_of(path: &str) -> String {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && path.starts_with(f[1])).then(|| (f[1].len(), f[2].to_string()))
        })
        .max()
        .map(|(_, t)| t)
        .unwrap()
}

/// A component from `rules-wasm/dist/`.
pub fn dist(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/rules-wasm/dist/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// Write a file the way an operator's `cp` to a temp name plus `mv` would.
pub fn write_atomically(path: &std::path::Path, bytes: &[u8]) {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Read messages for `period`, returning the alerts seen (and the metrics count).
pub async fn collect_for(ws: &mut Ws, period: Duration) -> (Vec<Value>, usize) {
    let end = Instant::now() + period;
    let (mut alerts, mut metrics) = (Vec::new(), 0);
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        let Ok(Some(Ok(msg))) = tokio::time::timeout(left, ws.next()).await else { break };
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).unwrap();
            match v["type"].as_str() {
                Some("alert") => alerts.push(v),
                Some("metrics_update") => metrics += 1,
                _ => panic!("unexpected message {v}"),
            }
        }
    }
    (alerts, metrics)
}

/// A snapshot of `hosts` copies of this machine (as a real round reported it), for
/// the benchmarks: one `local` round from a daemon in this process, then cloned.
pub async fn snapshot_of_hosts(hosts: usize) -> monserv::model::Snapshot {
    let d = TestDaemon::start(&["local".into()], "poll_interval_seconds = 86400\n[rules]\nbuiltin = false").await;
    let mut ws = d.connect().await;
    wait_metrics(&mut ws, Duration::from_secs(10), |_| true).await;
    let template = d.hub().latest().snapshot.expect("round");
    d.shutdown().await;
    let mut snapshot = (*template).clone();
    let one = snapshot.targets[0].clone();
    snapshot.targets = (0..hosts)
        .map(|i| {
            let mut t = one.clone();
            t.url = format!("ssh://scada:***@10.1.{}.{}:22", i / 250, i % 250);
            t
        })
        .collect();
    snapshot
}

/// One sink's entry in `GET /api/v1/notify` (Null when absent).
pub async fn sink_status(addr: SocketAddr, token: &str, name: &str) -> Value {
    let auth = format!("Bearer {token}");
    let (_, body) = http_get(addr, "/api/v1/notify", &[("Authorization", auth.as_str())]).await;
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    v["data"]["sinks"].as_array().into_iter().flatten().find(|s| s["name"] == name).cloned().unwrap_or(Value::Null)
}

/// A web page served from its own loopback origin (`http://127.0.0.1:<port>`), for
/// browser tests of what pages from other origins may do. Any path gets the page.
pub struct Site {
    pub origin: String,
    page: std::sync::Arc<std::sync::Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Site {
    pub async fn start() -> Site {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let page: std::sync::Arc<std::sync::Mutex<String>> = Default::default();
        let shared = page.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let page = shared.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let _ = s.read(&mut buf).await;
                    let body = page.lock().unwrap().clone();
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = s.write_all(head.as_bytes()).await;
                    let _ = s.write_all(body.as_bytes()).await;
                });
            }
        });
        Site { origin, page, task }
    }

    pub fn set_page(&self, html: &str) {
        *self.page.lock().unwrap() = html.to_string();
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.task.abort();
    }
}
