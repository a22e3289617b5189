//! Hosts that die, hang, change keys or attack: each affects only itself.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{self, fixtures, BusyBoxHost, Sshd, TestDaemon};

fn status<'a>(data: &'a Value, key: &str) -> &'a str {
    data[key]["status"].as_str().unwrap_or("missing")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_host_goes_offline_and_comes_back() {
    let mut bb = BusyBoxHost::start("bb-plc-02");
    let key = format!("ssh://scada:***@127.0.0.1:{}", bb.port);
    let d =
        TestDaemon::start(&[bb.url(), "local".into()], "poll_interval_seconds = 0.5\nreconnect_max_seconds = 1").await;
    let mut ws = d.connect().await;
    let data = support::wait_metrics(&mut ws, Duration::from_secs(15), |d| status(d, &key) == "online").await;
    let uptime_before = data[&key]["uptimeSeconds"].as_u64().unwrap();

    bb.kill();
    let data = support::wait_metrics(&mut ws, Duration::from_secs(15), |d| status(d, &key) == "offline").await;
    let off = &data[&key];
    assert_eq!(off["hostname"], "bb-plc-02", "last known metrics are kept");
    assert!(!off["error"].as_str().unwrap().is_empty());
    assert_eq!(status(&data, "local"), "online", "the other host is unaffected");

    bb.restart();
    let data = support::wait_metrics(&mut ws, Duration::from_secs(20), |d| status(d, &key) == "online").await;
    assert!(data[&key]["error"].is_null());
    assert!(data[&key]["uptimeSeconds"].as_u64().unwrap() >= uptime_before);
    assert!(d.shutdown().await);
}

/// A "host" that accepts TCP and never says a word, like a hung sshd.
async fn black_hole() -> (u16, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    (port, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_host_never_delays_the_broadcast() {
    let (port, hole) = black_hole().await;
    let sshd = Sshd::start();
    let hung = format!("ssh://x:y@127.0.0.1:{port}");
    let d = TestDaemon::start(
        &[hung, sshd.url_password()],
        "poll_interval_seconds = 0.5\nhost_timeout_seconds = 0.4\nreconnect_max_seconds = 1",
    )
    .await;
    let mut ws = d.connect().await;
    let good = format!("ssh://{}:***@127.0.0.1:{}", fixtures::PW_USER, sshd.port);
    let hung_key = format!("ssh://x:***@127.0.0.1:{port}");
    support::wait_metrics(&mut ws, Duration::from_secs(10), |d| status(d, &good) == "online").await;
    let start = Instant::now();
    let mut stamps = Vec::new();
    for _ in 0..8 {
        let data = support::wait_metrics(&mut ws, Duration::from_secs(3), |_| true).await;
        assert_eq!(status(&data, &good), "online");
        assert_eq!(status(&data, &hung_key), "offline");
        stamps.push(data[&good]["generatedAtUtc"].as_str().unwrap().to_string());
    }
    // Eight rounds at 0.5 s with a 0.4 s deadline: about 4 s, never stalled by the hung host.
    assert!(start.elapsed() < Duration::from_secs(7), "rounds took {:?}", start.elapsed());
    assert!(stamps.first() < stamps.last(), "the good host's metrics must be fresh each round");
    let (_, body) = support::http_get(d.addr, "/api/v1/servers", &[]).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    let kinds: Vec<&str> =
        v["data"]["servers"].as_array().unwrap().iter().filter_map(|s| s["last_error_kind"].as_str()).collect();
    assert_eq!(kinds, vec!["timeout"], "{v:#}");
    hole.abort();
    assert!(d.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_host_key_is_refused_and_reported() {
    let f = fixtures();
    let mut sshd = Sshd::start();
    let key = format!("ssh://{}:***@127.0.0.1:{}", fixtures::PW_USER, sshd.port);
    let d = TestDaemon::start(&[sshd.url_password()], "poll_interval_seconds = 0.5\nreconnect_max_seconds = 1").await;
    let mut ws = d.connect().await;
    support::wait_metrics(&mut ws, Duration::from_secs(10), |d| status(d, &key) == "online").await;
    let known_hosts = d.state_dir.path().join("known_hosts");
    let pinned = std::fs::read_to_string(&known_hosts).unwrap();
    let expected_key = std::fs::read_to_string(f.host_key_a.with_extension("pub")).unwrap();
    let expected_key: Vec<&str> = expected_key.split_whitespace().take(2).collect();
    assert_eq!(pinned.trim(), format!("[127.0.0.1]:{} {}", sshd.port, expected_key.join(" ")), "TOFU must pin the key");

    sshd.restart_with_key(f.host_key_b.clone());
    let data = support::wait_metrics(&mut ws, Duration::from_secs(15), |d| {
        d[&key]["error"].as_str().is_some_and(|e| e.contains("host key changed"))
    })
    .await;
    assert_eq!(status(&data, &key), "offline");
    assert_eq!(std::fs::read_to_string(&known_hosts).unwrap(), pinned, "the pin must not be replaced");
    assert!(d.shutdown().await);

    // Strict policy with no pin: refused before authenticating.
    let d =
        TestDaemon::start(&[sshd.url_password()], "poll_interval_seconds = 0.5\nhost_key_policy = \"strict\"").await;
    let mut ws = d.connect().await;
    let data = support::wait_metrics(&mut ws, Duration::from_secs(10), |d| d[&key]["error"].is_string()).await;
    assert!(data[&key]["error"].as_str().unwrap().contains("not in known_hosts"), "{}", data[&key]);
    assert!(!d.state_dir.path().join("known_hosts").exists());
    assert_eq!(sshd.accepted_logins(fixtures::PW_USER), 1, "no login may happen with an unverified key");
    assert!(d.shutdown().await);
}

fn vm_rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_hosts_are_contained() {
    let sshd = Sshd::start();
    let garbage = sshd.url_user(fixtures::GARBAGE_USER);
    let flood = sshd.url_user(fixtures::FLOOD_USER);
    let d = TestDaemon::start(
        &[garbage, flood, sshd.url_password()],
        "poll_interval_seconds = 0.5\nreconnect_max_seconds = 1\nmax_output_bytes = 1048576",
    )
    .await;
    let masked = |u: &str| format!("ssh://{u}:***@127.0.0.1:{}", sshd.port);
    let (g, fl, good) = (masked(fixtures::GARBAGE_USER), masked(fixtures::FLOOD_USER), masked(fixtures::PW_USER));
    let mut ws = d.connect().await;
    let rss_start = vm_rss_bytes();
    let data = support::wait_metrics(&mut ws, Duration::from_secs(15), |d| {
        status(d, &good) == "online"
            && d[&g]["error"].is_string()
            && d[&fl]["error"].as_str().is_some_and(|e| e.contains("exceeded"))
    })
    .await;
    let cause = |k: &str| support::error_cause(data[k]["error"].as_str().unwrap()).to_string();
    assert!(cause(&g).starts_with("unusable output"), "{}", data[&g]);
    assert_eq!(cause(&fl), "output exceeded 1048576 bytes; closed the session");
    // Several more rounds: the good host stays online, memory stays bounded.
    for _ in 0..6 {
        let data = support::wait_metrics(&mut ws, Duration::from_secs(5), |_| true).await;
        assert_eq!(status(&data, &good), "online");
        assert_eq!(status(&data, &g), "offline");
        assert_eq!(status(&data, &fl), "offline");
    }
    let grown = vm_rss_bytes().saturating_sub(rss_start);
    assert!(grown < 40 << 20, "RSS grew by {} MiB while a host sent 100 MB per poll", grown >> 20);
    assert!(d.shutdown().await);
}
