//! The network perimeter (issue #10), tried as hostile network peers would: pages
//! from other origins in a real Chromium, DNS rebinding, many connections from one
//! address, clients that never read, token guessing, descriptor exhaustion. All on
//! loopback (127.0.0.0/8 gives each "client machine" its own source address); the
//! `local` target only, so no root is needed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::clients::browser_with;
use crate::support::monserv_bin::Monserv;
use crate::support::{self, TestDaemon};

/// A TCP connection from `source` (e.g. 127.0.0.2) to `addr`.
async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// A WebSocket handshake from `source`: Ok(ws) or Err(the HTTP refusal's text).
async fn ws_from(source: &str, addr: SocketAddr, path: &str) -> Result<support::Ws, String> {
    let tcp = connect_from(source, addr).await;
    let url = format!("ws://{addr}{path}");
    match tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(tcp)).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            let body = r.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default().into_owned();
            let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
            Err(format!("{} retry-after={retry} {body}", r.status().as_u16()))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// A raw request from `source`, whole answer back.
async fn raw_from(source: &str, addr: SocketAddr, request: &str) -> String {
    let mut s = connect_from(source, addr).await;
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

fn probe_page(addr: SocketAddr) -> String {
    format!(
        r#"<!doctype html><title>probe</title><script>
const out = {{}};
function done() {{ if (out.ws && out.rest) window.__result = out; }}
const ws = new WebSocket("ws://{addr}/ws");
ws.onmessage = (e) => {{ out.ws = "message:" + JSON.parse(e.data).type; ws.close(); done(); }};
ws.onerror = () => {{ out.ws = out.ws || "refused"; done(); }};
fetch("http://{addr}/api/v1/servers").then((r) => r.json()).then(
  (j) => {{ out.rest = "read:" + j.data.total; done(); }},
  () => {{ out.rest = "refused"; done(); }});
</script>"#
    )
}

fn probe(url: &str) -> Value {
    let mut b = browser_with("probe", url, 0, &[]);
    let line = b.wait_for(Duration::from_secs(60), |l| l.contains("\"probe\""));
    serde_json::from_str::<Value>(&line).unwrap()["result"].clone()
}

/// Finding 3: with no token (the default), a page from another origin could read
/// everything. Now Chromium on a page from another loopback origin is refused on `/ws`
/// and REST; the same page from an `allowed_origins` entry works (with CORS); a name
/// that resolves to us but is not ours (DNS rebinding) gets 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_origins_and_rebinding_are_refused_in_chromium() {
    let site = support::Site::start().await;
    let d = TestDaemon::start(&["local".into()], "poll_interval_seconds = 0.5").await;
    site.set_page(&probe_page(d.addr));
    let refused = probe(&format!("{}/probe.html", site.origin));
    assert_eq!(refused["ws"], "refused", "{refused}");
    assert_eq!(refused["rest"], "refused", "{refused}");
    // What Chromium sent, as a raw request: refused by us, not only by CORS.
    let (status, body) = support::http_get(d.addr, "/api/v1/servers", &[("Origin", &site.origin)]).await;
    assert_eq!((status, body.contains("allowed_origins")), (403, true), "{body}");

    let allowed = TestDaemon::start(
        &["local".into()],
        &format!("poll_interval_seconds = 0.5\nallowed_origins = [{:?}]", site.origin),
    )
    .await;
    site.set_page(&probe_page(allowed.addr));
    let ok = probe(&format!("{}/probe.html", site.origin));
    assert_eq!(ok["ws"], "message:metrics_update", "{ok}");
    assert_eq!(ok["rest"], "read:1", "{ok}");

    // DNS rebinding: rebind.test resolves to 127.0.0.1 in this browser.
    let port = d.addr.port();
    let mut b = browser_with("status", &format!("http://rebind.test:{port}/api/v1/servers"), 0, &[]);
    let v: Value = serde_json::from_str(&b.wait_for(Duration::from_secs(60), |l| l.contains("status"))).unwrap();
    assert_eq!(v["status"], 403, "{v}");
    assert!(v["body"].as_str().unwrap().contains("allowed_hosts"), "{v}");
    let mut b = browser_with("status", &format!("http://localhost:{port}/api/v1/servers"), 0, &[]);
    let v: Value = serde_json::from_str(&b.wait_for(Duration::from_secs(60), |l| l.contains("status"))).unwrap();
    assert_eq!(v["status"], 200, "{v}");
    assert!(d.shutdown().await);
    assert!(allowed.shutdown().await);
}

/// `max_clients_per_ip`: a fourth connection from 127.0.0.2 is refused with 503 and
/// Retry-After before any upgrade, 127.0.0.3 is not affected, and a closed connection
/// gives its place back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped_per_address() {
    let d = TestDaemon::start(&["local".into()], "max_clients = 10\nmax_clients_per_ip = 3").await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(ws_from("127.0.0.2", d.addr, "/ws").await.unwrap());
    }
    let refused = ws_from("127.0.0.2", d.addr, "/ws").await.err().unwrap();
    assert!(refused.starts_with("503 retry-after=5"), "{refused}");
    assert!(refused.contains("too many connections from your address"), "{refused}");
    // Plain REST from the same address is refused too: every connection counts.
    let answer = raw_from("127.0.0.2", d.addr, "GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let mut other = ws_from("127.0.0.3", d.addr, "/ws").await.unwrap();
    assert_eq!(support::next_json(&mut other, Duration::from_secs(10)).await["type"], "metrics_update");
    drop(held.pop());
    let start = Instant::now();
    loop {
        match ws_from("127.0.0.2", d.addr, "/ws").await {
            Ok(_) => break,
            Err(e) => assert!(start.elapsed() < Duration::from_secs(10), "the place never came back: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(d.shutdown().await);
}

/// Finding 2: clients that pipeline requests and never read their answers held every
/// slot. Now a write that makes no progress for `http.write_timeout_seconds` ends the
/// connection, and the API answers again; an idle keep-alive connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_are_freed() {
    let d = TestDaemon::start(
        &["local".into()],
        "max_clients = 20\nmax_clients_per_ip = 20\n[http]\nwrite_timeout_seconds = 1\nidle_timeout_seconds = 1",
    )
    .await;
    let request = "GET /api/openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".repeat(2000);
    let mut hogs = Vec::new();
    for _ in 0..20 {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut s = socket.connect(d.addr).await.unwrap();
        // Written on its own task: the server stops reading once its answers back up.
        let request = request.clone();
        hogs.push(tokio::spawn(async move {
            let _ = s.write_all(request.as_bytes()).await;
            tokio::time::sleep(Duration::from_secs(120)).await;
            drop(s);
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = Instant::now();
    loop {
        let answer = raw_from(
            "127.0.0.1",
            d.addr,
            "GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
        .await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "the API stayed refused: {answer}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for h in hogs {
        h.abort();
    }
    // Keep-alive: one answered request, then silence; the server closes.
    let mut s = TcpStream::connect(d.addr).await.unwrap();
    s.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "an idle keep-alive connection was kept open");
    assert!(d.shutdown().await);
}

/// Wrong tokens from 127.0.0.2 get it 429 (even with the right token, until its minute
/// is over); 127.0.0.3 is not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_tokens_are_slowed_per_address() {
    let d =
        TestDaemon::start(&["local".into()], "auth_token = \"right-token-1\"\n[http]\nauth_failures_per_minute = 5")
            .await;
    let get = |source: &'static str, token: &'static str| {
        let addr = d.addr;
        async move {
            let req = format!("GET /api/v1/servers HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n");
            raw_from(source, addr, &req).await
        }
    };
    for i in 0..5 {
        let a = get("127.0.0.2", "guess").await;
        assert!(a.starts_with("HTTP/1.1 401"), "guess {i}: {a}");
    }
    let a = get("127.0.0.2", "right-token-1").await;
    assert!(a.starts_with("HTTP/1.1 429"), "{a}");
    let retry: u64 = a
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("retry-after: ").map(|v| v.trim().parse().unwrap()))
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let refused = ws_from("127.0.0.2", d.addr, "/ws?token=right-token-1").await.err().unwrap();
    assert!(refused.starts_with("429"), "{refused}");
    assert!(get("127.0.0.3", "right-token-1").await.starts_with("HTTP/1.1 200"));
    assert!(ws_from("127.0.0.3", d.addr, "/ws?token=right-token-1").await.is_ok());
    // No token at all is not a guess: it does not count.
    for _ in 0..10 {
        assert!(raw_from(
            "127.0.0.4",
            d.addr,
            "GET /api/v1/servers HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .await
        .starts_with("HTTP/1.1 401"));
    }
    assert!(get("127.0.0.4", "right-token-1").await.starts_with("HTTP/1.1 200"));
    assert!(d.shutdown().await);
}

/// The appliance's first boot: no token configured, `generate_auth_token = true`. A
/// random token is written 0600 to the state directory and required from then on; the
/// log says where it is and never what it is. Changes made with it are audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_token_guards_the_api_and_changes_are_audited() {
    use std::os::unix::fs::PermissionsExt;
    let state = tempfile::tempdir().unwrap();
    let m = Monserv::start(state.path(), "generate_auth_token = true", &[]);
    let path = state.path().join("auth_token");
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let token = std::fs::read_to_string(&path).unwrap().trim().to_string();
    assert_eq!(token.len(), 48);
    assert_eq!(support::http_get(m.addr, "/api/v1/servers", &[]).await.0, 401);
    let auth = format!("Bearer {token}");
    let auth = [("Authorization", auth.as_str())];
    assert_eq!(support::http_get(m.addr, "/api/v1/servers", &auth).await.0, 200);

    let wasm = support::dist("examples/reboot.wasm");
    let (status, body) = support::http_send(m.addr, "PUT", "/api/v1/rules/load", &auth, &wasm).await;
    assert!(status == 200 || status == 201, "{status} {body}");
    let silence = br#"{"matchers":[{"name":"host","value":"plc-*"}],"duration":"1h","comment":"maintenance"}"#;
    let (status, body) = support::http_send(m.addr, "POST", "/api/v1/silences", &auth, silence).await;
    assert_eq!(status, 201, "{body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["data"]["id"].as_u64().unwrap();
    let (status, _) = support::http_request(m.addr, "DELETE", &format!("/api/v1/silences/{id}"), &auth).await;
    assert_eq!(status, 200);
    let (status, _) =
        support::http_send(m.addr, "PUT", "/api/v1/rules/evil", &[("Authorization", "Bearer nope")], &wasm).await;
    assert_eq!(status, 401);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = m.log();
    assert!(!log.contains(&token), "the token was logged");
    assert!(log.contains(&path.display().to_string()), "{log}");
    let audit: Vec<&str> = log.lines().filter(|l| l.contains("monserv::audit")).collect();
    for expected in [
        "PUT /api/v1/rules/load",
        "POST /api/v1/silences",
        &format!("DELETE /api/v1/silences/{id}"),
        "PUT /api/v1/rules/evil",
    ] {
        let line = audit
            .iter()
            .find(|l| l.contains(expected))
            .unwrap_or_else(|| panic!("no audit line for {expected}: {audit:#?}"));
        assert!(line.contains("from=127.0.0.1"), "{line}");
        if expected.contains("evil") {
            assert!(line.contains("status=401"), "{line}");
        } else {
            assert!(line.contains("who=token"), "{line}");
        }
    }
    drop(m);
    // The same token after a restart.
    let again = Monserv::start(state.path(), "generate_auth_token = true", &[]);
    assert_eq!(support::http_get(again.addr, "/api/v1/servers", &auth).await.0, 200);
}

/// Finding 1's second half: under a low `RLIMIT_NOFILE`, hundreds of silent WebSocket
/// clients made `local` go offline ("Too many open files"). Now max_clients is fitted
/// to the descriptors with a reserve: the surplus is refused with 503, `local` stays
/// online and the rules directory stays readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptor_exhaustion_leaves_local_online() {
    let state = tempfile::tempdir().unwrap();
    let m = Monserv::start(state.path(), "max_clients_per_ip = 4096", &["prlimit", "--nofile=256:256", "--"]);
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..400 {
        match ws_from("127.0.0.1", m.addr, "/ws").await {
            Ok(ws) => held.push(ws),
            Err(e) if e.starts_with("503") => refused += 1,
            Err(e) => panic!("neither served nor refused cleanly: {e}"),
        }
    }
    assert!(refused > 0 && held.len() > 50 && held.len() < 256, "served {}, refused {refused}", held.len());
    // A rule change while every client slot is taken: the file is read, the alert fires.
    let rules = state.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("threshold.toml"),
        "memory_percent = 0.5\ndisk_percent = 100\ncpu_percent = 100\nproc_ram_percent = 100\n",
    )
    .unwrap();
    let ws = held.last_mut().unwrap();
    let mut online_rounds = 0;
    let mut alerted = false;
    let start = Instant::now();
    while online_rounds < 5 || !alerted {
        assert!(start.elapsed() < Duration::from_secs(30), "online rounds {online_rounds}, alerted {alerted}");
        let msg = match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(m))) => m,
            other => panic!("client lost: {other:?}"),
        };
        let Ok(text) = msg.to_text() else { continue };
        let v: Value = serde_json::from_str(text).unwrap();
        match v["type"].as_str() {
            Some("metrics_update") => {
                let local = v["data"].as_object().unwrap().values().next().unwrap().clone();
                assert_eq!(local["status"], "online", "{local}");
                online_rounds += 1;
            }
            Some("alert") => alerted |= v["subject"].as_str().unwrap_or_default().contains("memory"),
            _ => {}
        }
    }
    let log = m.log();
    assert!(!log.contains("Too many open files"), "{log}");
    assert!(log.contains("max_clients lowered"), "{log}");
}
