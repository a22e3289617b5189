//! `/ws` as PROTOCOL.md defines it, checked with a real WebSocket client.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{self, fixtures, Sshd, TestDaemon};

async fn wait_first_round(d: &TestDaemon) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        let (_, body) = support::http_get(d.addr, "/api/v1/health", &[]).await;
        let v: Value = serde_json::from_str(&body).unwrap();
        if v["data"]["poll_rounds"].as_u64().unwrap() >= 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no poll round within 15 s");
}

fn assert_type(v: &Value, path: &str, check: fn(&Value) -> bool, what: &str) {
    let mut cur = v;
    for part in path.split('.') {
        cur = &cur[part];
    }
    assert!(check(cur), "{path} should be {what}, got {cur}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_on_connect_with_protocol_fields_and_masked_keys() {
    let sshd = Sshd::start();
    // A long interval: the only message a new client can get at once is the snapshot.
    let d = TestDaemon::start(&[sshd.url_password(), "local".into()], "poll_interval_seconds = 60").await;
    wait_first_round(&d).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(d.ws_url()).await.unwrap();
    let raw = tokio::time::timeout(Duration::from_secs(2), ws.next())
        .await
        .expect("no snapshot on connect")
        .unwrap()
        .unwrap();
    let Message::Text(text) = raw else { panic!("expected a text frame, got {raw:?}") };
    assert!(
        !text.contains(fixtures::PASSWORD) && !text.contains(fixtures::PASSWORD_ENCODED),
        "password leaked: {text}"
    );
    let msg: Value = serde_json::from_str(&text).expect("one JSON object per frame");
    assert_eq!(msg["type"], "metrics_update");
    let data = msg["data"].as_object().unwrap();
    assert_eq!(data.len(), 2);
    let key = format!("ssh://{}:***@127.0.0.1:{}", fixtures::PW_USER, sshd.port);
    assert!(data.contains_key(&key), "{:?}", data.keys());
    for m in data.values() {
        assert_eq!(m["status"], "online", "{m}");
        let s = |v: &Value| v.is_string();
        let u = |v: &Value| v.is_u64();
        let n = |v: &Value| v.is_number();
        let a = |v: &Value| v.is_array();
        assert_type(m, "hostname", s, "string");
        assert_type(m, "uptimeSeconds", u, "integer");
        for f in ["total", "used", "free"] {
            assert_type(m, &format!("memory.{f}"), u, "integer");
        }
        assert_type(m, "memory.usedPercent", n, "number");
        assert_eq!(
            m["memory"]["used"].as_u64().unwrap() + m["memory"]["free"].as_u64().unwrap(),
            m["memory"]["total"].as_u64().unwrap()
        );
        assert_type(m, "disks", a, "array");
        for disk in m["disks"].as_array().unwrap() {
            for f in ["device", "mountpoint", "fstype"] {
                assert_type(disk, f, s, "string");
            }
            for f in ["total", "used", "free"] {
                assert_type(disk, f, u, "integer");
            }
            assert_type(disk, "usedPercent", n, "number");
        }
        assert_type(m, "topProcsByMem", a, "array");
        for p in m["topProcsByMem"].as_array().unwrap() {
            for f in ["pid", "rssBytes"] {
                assert_type(p, f, u, "integer");
            }
            for f in ["name", "username", "cmdline"] {
                assert_type(p, f, s, "string");
            }
            assert_type(p, "percentRAM", n, "number");
        }
        let ts = m["generatedAtUtc"].as_str().unwrap();
        assert!(ts.ends_with('Z') && ts.len() == 20 && &ts[10..11] == "T", "{ts}");
        assert_type(m, "cpu.cores", u, "integer");
        assert_type(m, "cpu.usedPercent", n, "number");
        assert_type(m, "cpu.modelName", s, "string");
    }
    // A second client gets the same snapshot bytes.
    let mut ws2 = d.connect().await;
    let Message::Text(text2) = ws2.next().await.unwrap().unwrap() else { panic!() };
    assert_eq!(text, text2);
    assert!(d.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_is_closed_and_responsive_client_stays() {
    let d = TestDaemon::start(
        &["local".into()],
        "poll_interval_seconds = 0.5\n[websocket]\nping_interval_seconds = 0.3\nread_timeout_seconds = 1.0\nwrite_timeout_seconds = 1.0",
    )
    .await;
    let mut silent = raw_client(d.addr, None).await;
    let mut live = d.connect().await;
    // The live client reads (and so answers pings) for 3 s: three read timeouts.
    let start = Instant::now();
    let mut pings = 0;
    while start.elapsed() < Duration::from_secs(3) {
        match tokio::time::timeout(Duration::from_secs(2), live.next()).await.unwrap() {
            Some(Ok(Message::Ping(_))) => pings += 1,
            Some(Ok(Message::Text(_))) => {}
            other => panic!("live client lost its connection: {other:?}"),
        }
    }
    assert!(pings >= 5, "expected a ping every 0.3 s, got {pings}");
    // The silent client never answered: the server has closed it with a close frame.
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut bytes))
        .await
        .expect("server did not close")
        .unwrap();
    let frames = server_frames(&bytes);
    assert!(frames.iter().any(|(op, _)| *op == 0x9), "no ping before the close");
    let (op, payload) = frames.last().unwrap();
    assert_eq!(*op, 0x8, "last frame should be a close frame");
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1000);
    assert!(String::from_utf8_lossy(&payload[2..]).contains("read timeout"));
    assert!(d.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_frame_over_512_bytes_closes_with_1009() {
    let d = TestDaemon::start(&["local".into()], "poll_interval_seconds = 0.5").await;
    let mut ws = d.connect().await;
    // 512 bytes is allowed and ignored.
    ws.send(Message::Text("x".repeat(512).into())).await.unwrap();
    support::wait_metrics(&mut ws, Duration::from_secs(5), |_| true).await;
    ws.send(Message::Text("x".repeat(600).into())).await.unwrap();
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap() {
            Some(Ok(Message::Close(f))) => break f.expect("close frame has a code"),
            Some(Ok(_)) => continue,
            other => panic!("expected close 1009, got {other:?}"),
        }
    };
    assert_eq!(close.code, CloseCode::Size);
    assert!(d.shutdown().await);
}

/// Split what a server sent into (opcode, payload) frames (server frames are unmasked).
fn server_frames(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while b.len() >= 2 {
        let op = b[0] & 0x0f;
        let (len, head) = match b[1] & 0x7f {
            126 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 => (u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize, 10),
            n => (n as usize, 2),
        };
        if b.len() < head + len {
            break;
        }
        out.push((op, b[head..head + len].to_vec()));
        b = &b[head + len..];
    }
    out
}

/// Open a WebSocket by hand (optionally with a tiny receive buffer); the caller
/// decides whether it ever reads again.
async fn raw_client(addr: std::net::SocketAddr, recv_buffer: Option<u32>) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    let mut s = socket.connect(addr).await.unwrap();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_client_never_delays_a_live_one() {
    let d = TestDaemon::start(
        &["local".into()],
        "poll_interval_seconds = 30\n[websocket]\nwrite_timeout_seconds = 1.0\n[rules]\nbuiltin = false",
    )
    .await;
    wait_first_round(&d).await;
    let _stalled = raw_client(d.addr, Some(4096)).await;
    let mut live = d.connect().await;
    support::wait_metrics(&mut live, Duration::from_secs(5), |_| true).await;
    assert_eq!(d.hub().client_count(), 2);

    // 40 alerts of 256 KiB: far more than the stalled client's socket buffers hold.
    let big = "y".repeat(256 * 1024);
    let reader = tokio::spawn(async move {
        let start = Instant::now();
        let mut got = Vec::new();
        while got.len() < 40 {
            let msg = support::next_json(&mut live, Duration::from_secs(10)).await;
            if msg["type"] == "alert" {
                got.push(msg["subject"].as_str().unwrap().to_string());
            }
        }
        (got, start.elapsed())
    });
    for i in 0..40 {
        let alert = monserv::model::AlertMessage::new(monserv::model::AlertKind::Alert, format!("a{i}"), big.clone());
        d.hub().publish_alert(&alert);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (got, took) = reader.await.unwrap();
    let expected: Vec<String> = (0..40).map(|i| format!("a{i}")).collect();
    assert_eq!(got, expected, "live client lost or reordered messages");
    // Had the stalled client held the fan-out, each frame would wait for its 1 s write timeout.
    assert!(took < Duration::from_secs(8), "live client took {took:?}");
    // The stalled client is dropped after its write timeout.
    let start = Instant::now();
    while d.hub().client_count() > 1 && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(d.hub().client_count(), 1, "stalled client was not dropped");
    assert!(d.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_a_whole_alert_ring_behind_is_closed_with_1013() {
    let d = TestDaemon::start(&["local".into()], "poll_interval_seconds = 30\n[rules]\nbuiltin = false").await;
    wait_first_round(&d).await;
    let mut slow = raw_client(d.addr, Some(4096)).await;
    let mut live = d.connect().await;
    support::wait_metrics(&mut live, Duration::from_secs(5), |_| true).await;
    // More alerts than the ring holds plus what the kernel buffers for the slow client,
    // in bursts of 256 (a large outage's worth per round): a healthy client keeps up,
    // the slow one cannot.
    let n = monserv::hub::ALERT_RING_CAPACITY + 2500;
    let reader = tokio::spawn(async move {
        let mut bytes = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout(Duration::from_secs(30), slow.read(&mut buf)).await {
                Ok(Ok(0)) | Err(_) => break,
                Ok(Ok(k)) => bytes.extend_from_slice(&buf[..k]),
                Ok(Err(e)) => panic!("{e}"),
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        bytes
    });
    let body = "z".repeat(4 * 1024);
    let live_reader = tokio::spawn(async move {
        for i in 0..n {
            let msg = support::next_json(&mut live, Duration::from_secs(10)).await;
            assert_eq!(msg["subject"], format!("b{i}"), "the live client must get every alert in order");
        }
    });
    for i in 0..n {
        d.hub().publish_alert(&monserv::model::AlertMessage::new(
            monserv::model::AlertKind::Alert,
            format!("b{i}"),
            body.clone(),
        ));
        if i % 256 == 255 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    live_reader.await.unwrap();
    let bytes = reader.await.unwrap();
    let frames = server_frames(&bytes);
    let (op, payload) = frames.last().expect("frames");
    assert_eq!(*op, 0x8, "the slow client must end with a close frame");
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1013);
    let texts = frames.iter().filter(|(op, _)| *op == 0x1).count();
    assert!(texts < n, "the slow client was cut off early ({texts} of {n} messages)");
    assert!(d.shutdown().await);
}

/// A text frame that is not UTF-8 closes with 1007 (Invalid frame payload data), not
/// a bare TCP close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_closes_with_1007() {
    let d = TestDaemon::start(&["local".into()], "poll_interval_seconds = 0.5").await;
    let mut s = raw_client(d.addr, None).await;
    // FIN + text, masked, 2 bytes: 0xC3 0x28 is not UTF-8.
    let mask = [1u8, 2, 3, 4];
    let payload: Vec<u8> = [0xC3u8, 0x28].iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m).collect();
    let mut frame = vec![0x81, 0x80 | 2];
    frame.extend_from_slice(&mask);
    frame.extend_from_slice(&payload);
    s.write_all(&frame).await.unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut bytes))
        .await
        .expect("server did not close")
        .unwrap();
    let frames = server_frames(&bytes);
    let (op, payload) = frames.last().expect("a close frame");
    assert_eq!(*op, 0x8, "last frame should be a close frame: {frames:?}");
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1007);
    assert!(d.shutdown().await);
}

/// `max_clients` counts WebSockets for their whole life: with 3 allowed and 3
/// WebSockets open, the next connection gets 503 with Retry-After; closing one frees
/// its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_hold_their_slot_until_they_close() {
    let d = TestDaemon::start(&["local".into()], "poll_interval_seconds = 0.5\nmax_clients = 3").await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut ws = d.connect().await;
        support::wait_metrics(&mut ws, Duration::from_secs(5), |_| true).await;
        clients.push(ws);
    }
    // Any connection, REST or WebSocket, is refused before it sends a byte.
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(d.addr).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await.unwrap().unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{answer}");
        assert!(answer.contains("Retry-After: 5\r\n") && answer.ends_with("too many connections\"}\n"), "{answer}");
    }
    let mut first = clients.remove(0);
    first.close(None).await.unwrap();
    while let Some(Ok(_)) = first.next().await {}
    // Freed: a new connection is served (no refusal waiting for it).
    let start = Instant::now();
    let mut s = loop {
        let mut s = tokio::net::TcpStream::connect(d.addr).await.unwrap();
        let mut byte = [0u8; 1];
        if tokio::time::timeout(Duration::from_millis(300), s.read(&mut byte)).await.is_err() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "the closed WebSocket's slot was not freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    s.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    assert!(d.shutdown().await);
}
