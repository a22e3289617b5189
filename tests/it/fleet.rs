//! The fleet's engines against a real monserv: a real Prometheus (Debian's) scrapes
//! `/metrics` with the API token, and its own query API must return monserv's series
//! with the values the hosts reported; `promtool check metrics` lints the exposition.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::hosts::{free_port, wait_port, Peer};
use crate::support::{self, BusyBoxHost, TestDaemon};

const TOKEN: &str = "fleet-token-1";

/// An instant query against Prometheus's HTTP API: the `result` vector.
async fn query(prom: SocketAddr, promql: &str) -> Vec<Value> {
    let q = percent_encoding::utf8_percent_encode(promql, percent_encoding::NON_ALPHANUMERIC);
    let start = Instant::now();
    let (status, body) = loop {
        // 503 until Prometheus has opened its storage (it listens before that).
        let (status, body) = support::http_get(prom, &format!("/api/v1/query?query={q}"), &[]).await;
        if status != 503 || start.elapsed() > Duration::from_secs(60) {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status, 200, "{promql}: {body}");
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{promql}: {e}: {body}"));
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// The value of a one-sample result, as a number.
fn value(sample: &Value) -> f64 {
    sample["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
}

/// Query until `done` holds for the result (Prometheus scrapes every second).
async fn query_until(prom: SocketAddr, promql: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let result = query(prom, promql).await;
        if done(&result) {
            return result;
        }
        assert!(start.elapsed() < Duration::from_secs(40), "{promql}: still {result:#?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn scrape(d: &TestDaemon) -> String {
    let (status, body) = support::http_get(d.addr, "/metrics", &[("Authorization", &format!("Bearer {TOKEN}"))]).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_targets_and_monserv_itself() {
    let mut bb = BusyBoxHost::start("bb-prom-01");
    let d = TestDaemon::start(
        &["local".into(), bb.url()],
        &format!("poll_interval_seconds = 0.5\nauth_token = \"{TOKEN}\"\n"),
    )
    .await;
    let bb_key = format!("ssh://{}:***@127.0.0.1:{}", support::fixtures::BB_USER, bb.port);

    // The same token rules as the REST API.
    let (status, _) = support::http_get(d.addr, "/metrics", &[]).await;
    assert_eq!(status, 401);
    let start = Instant::now();
    let text = loop {
        let text = scrape(&d).await;
        let bb_up = format!("monserv_up{{target=\"{bb_key}\",hostname=\"bb-prom-01\"}} 1\n");
        if text.contains(&bb_up) && text.contains("monserv_up{target=\"local\",") {
            break text;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "targets never up:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // promtool's linter has nothing to say about names, units, types or HELP.
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (tests/run.sh installs Debian's prometheus)");
    std::io::Write::write_all(&mut lint.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let out = lint.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics: {said}\n{text}");

    // A real Prometheus scrapes it every second, with the token.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: monserv\n    authorization:\n      credentials: {TOKEN}\n    static_configs:\n      - targets: ['{}']\n",
            d.addr
        ),
    )
    .unwrap();
    let port = free_port();
    let mut child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (tests/run.sh installs it)");
    wait_port(port, &mut child, "prometheus");
    let _prometheus = Peer(child);
    let prom: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    let up = query_until(prom, "monserv_up", |r| r.len() == 2 && r.iter().all(|s| value(s) == 1.0)).await;
    let mut targets: Vec<&str> = up.iter().map(|s| s["metric"]["target"].as_str().unwrap()).collect();
    targets.sort_unstable();
    assert_eq!(targets, ["local", bb_key.as_str()]);
    assert!(up.iter().all(|s| s["metric"]["job"] == "monserv"));

    // Values as the hosts reported them: the BusyBox host shares this kernel's memory.
    let mem = query(prom, "monserv_memory_total_bytes{hostname=\"bb-prom-01\"}").await;
    assert_eq!(mem.len(), 1, "{mem:#?}");
    assert_eq!(value(&mem[0]), support::machine_mem_total() as f64);
    let (_, servers) =
        support::http_get(d.addr, "/api/v1/servers", &[("Authorization", &format!("Bearer {TOKEN}"))]).await;
    let servers: Value = serde_json::from_str(&servers).unwrap();
    let bb_server =
        servers["data"]["servers"].as_array().unwrap().iter().find(|s| s["url"] == bb_key.as_str()).unwrap();
    let disk = &bb_server["metrics"]["disks"][0];
    let promql = format!(
        "monserv_disk_total_bytes{{target=\"{bb_key}\",mountpoint=\"{}\"}}",
        disk["mountpoint"].as_str().unwrap()
    );
    let total = query(prom, &promql).await;
    assert_eq!(total.len(), 1, "{promql}: {total:#?}");
    assert_eq!(value(&total[0]), disk["total"].as_f64().unwrap());
    assert_eq!(total[0]["metric"]["fstype"], disk["fstype"]);
    let ratio = query(prom, "monserv_memory_used_ratio{target=\"local\"}").await;
    assert!((0.0..=1.0).contains(&value(&ratio[0])), "{ratio:#?}");

    // monserv itself: rounds advancing, the built-in rule evaluated, a /ws client seen.
    let _ws = support::connect_retry(&format!("{}?token={TOKEN}", d.ws_url())).await;
    let rounds = query_until(prom, "rate(monserv_poll_rounds_total[5s])", |r| r.len() == 1 && value(&r[0]) > 0.5).await;
    assert!(value(&rounds[0]) < 3.0, "rounds every 0.5 s: {rounds:#?}");
    query_until(prom, "monserv_rule_evaluations_total{rule=\"threshold\"}", |r| r.len() == 1 && value(&r[0]) > 0.0)
        .await;
    query_until(prom, "monserv_websocket_clients", |r| r.len() == 1 && value(&r[0]) == 1.0).await;

    // A host that goes down: up 0, and its values end instead of going stale-flat.
    bb.kill();
    let promql = format!("monserv_up{{target=\"{bb_key}\"}}");
    query_until(prom, &promql, |r| r.len() == 1 && value(&r[0]) == 0.0).await;
    query_until(prom, "monserv_memory_total_bytes{hostname=\"bb-prom-01\"}", |r| r.is_empty()).await;
    let failures = query(prom, &format!("monserv_target_consecutive_failures{{target=\"{bb_key}\"}}")).await;
    assert!(value(&failures[0]) >= 1.0, "{failures:#?}");
    assert!(d.shutdown().await);
}

const BIN: &str = env!("CARGO_BIN_EXE_monserv");

/// Stop a peer the polite way (SIGTERM) and wait: a receiver going away mid-stream.
fn terminate(mut peer: Peer) {
    let child = &mut peer.0;
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let start = Instant::now();
    while child.try_wait().ok().flatten().is_none() {
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.wait();
}

fn prometheus_receiver(dir: &std::path::Path, port: u16) -> Peer {
    std::fs::write(dir.join("receiver.yml"), "global:\n  scrape_interval: 1m\n").unwrap();
    let mut child = Command::new("prometheus")
        .arg(format!("--config.file={}", dir.join("receiver.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--web.enable-remote-write-receiver")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (tests/run.sh installs it)");
    wait_port(port, &mut child, "prometheus");
    Peer(child)
}

fn victoria_metrics(dir: &std::path::Path, port: u16) -> Peer {
    let mut child = Command::new("victoria-metrics")
        .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        .arg(format!("-storageDataPath={}", dir.join("vm").display()))
        .arg("-search.latencyOffset=0s")
        .arg("-search.disableCache")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("victoria-metrics (tests/run.sh installs it)");
    wait_port(port, &mut child, "victoria-metrics");
    Peer(child)
}

/// monserv's own counters for its (first) remote_write receiver.
async fn receiver_counters(addr: SocketAddr) -> (f64, f64, f64) {
    let (status, text) = support::http_get(addr, "/metrics", &[("Authorization", &format!("Bearer {TOKEN}"))]).await;
    assert_eq!(status, 200, "{text}");
    let counter = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(&format!("{name}{{")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1.0)
    };
    (
        counter("monserv_remote_write_failed_sends_total"),
        counter("monserv_remote_write_backlog_bytes"),
        counter("monserv_remote_write_samples_dropped_total"),
    )
}

/// Wait until monserv's /metrics counters for the receiver satisfy `done`.
async fn counters_until(addr: SocketAddr, what: &str, done: impl Fn((f64, f64, f64)) -> bool) -> (f64, f64, f64) {
    let start = Instant::now();
    loop {
        let c = receiver_counters(addr).await;
        if done(c) {
            return c;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{what}: (failed sends, backlog bytes, dropped) = {c:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every value of `monserv_poll_rounds_total` Prometheus holds for `gateway`, in time order.
async fn prometheus_rounds(prom: SocketAddr, gateway: &str) -> Vec<u64> {
    let result = query(prom, &format!("monserv_poll_rounds_total{{gateway=\"{gateway}\",site=\"it\"}}[30m]")).await;
    result
        .first()
        .map(|series| {
            series["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v[1].as_str().unwrap().parse::<f64>().unwrap() as u64)
                .collect()
        })
        .unwrap_or_default()
}

/// The rounds monserv produced: 1, 2, 3 ... with none missing.
fn assert_contiguous(rounds: &[u64], what: &str) {
    let expected: Vec<u64> = (1..=rounds.len() as u64).collect();
    assert_eq!(rounds, expected.as_slice(), "{what}: rounds missing or out of order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_write_into_prometheus_survives_the_receiver_going_away() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let receiver = prometheus_receiver(dir.path(), port);
    let prom: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let d = TestDaemon::start(
        &["local".into()],
        &format!(
            "poll_interval_seconds = 0.5\nauth_token = \"{TOKEN}\"\n[export]\nexternal_labels = {{ site = \"it\", gateway = \"gw-prom\" }}\n\
             [[export.remote_write]]\nurl = \"http://{prom}/api/v1/write\"\nflush_interval_seconds = 0.5\n"
        ),
    )
    .await;
    let start = Instant::now();
    while prometheus_rounds(prom, "gw-prom").await.len() < 4 {
        assert!(start.elapsed() < Duration::from_secs(30), "no rounds arrived");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The receiver goes away for a while: monserv queues (and writes the backlog).
    terminate(receiver);
    counters_until(d.addr, "queueing", |(failed, backlog, _)| failed >= 2.0 && backlog > 0.0).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let receiver = prometheus_receiver(dir.path(), port);
    let (_, _, dropped) = counters_until(d.addr, "replayed", |(_, backlog, _)| backlog == 0.0).await;
    assert_eq!(dropped, 0.0, "nothing refused (no out-of-order samples), nothing over the cap");
    // Every round is there, the queued ones included, in order, up to a current one.
    let target = support::http_get(d.addr, "/api/v1/health", &[]).await.1;
    let now: u64 = serde_json::from_str::<Value>(&target).unwrap()["data"]["poll_rounds"].as_u64().unwrap();
    let start = Instant::now();
    let rounds = loop {
        let rounds = prometheus_rounds(prom, "gw-prom").await;
        if rounds.len() as u64 >= now {
            break rounds;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "only {} of {now} rounds: {rounds:?}", rounds.len());
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_contiguous(&rounds, "prometheus");
    // Series carry the external labels and monserv's own.
    let up = query(prom, "monserv_up{gateway=\"gw-prom\"}").await;
    assert_eq!((up[0]["metric"]["target"].as_str(), up[0]["metric"]["site"].as_str()), (Some("local"), Some("it")));
    assert!(d.shutdown().await);
    drop(receiver);
}

/// A spawned monserv pushing to `url` with `gateway` as its external label.
fn spawn_monserv(state: &std::path::Path, port: u16, url: &str, gateway: &str) -> Peer {
    let config = format!(
        "listen = \"127.0.0.1\"\nport = {port}\npoll_interval_seconds = 0.5\nstate_dir = {:?}\nauth_token = \"{TOKEN}\"\ntargets = [\"local\"]\n\
         [export]\nexternal_labels = {{ site = \"it\", gateway = \"{gateway}\" }}\n[[export.remote_write]]\nurl = \"{url}\"\nflush_interval_seconds = 0.5\n",
        state.display().to_string()
    );
    std::fs::write(state.join("monserv.toml"), config).unwrap();
    let mut child = Command::new(BIN)
        .args(["--config", state.join("monserv.toml").to_str().unwrap()])
        .env_remove("SERVERS")
        .env("MONSERV_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    wait_port(port, &mut child, "monserv");
    Peer(child)
}

/// Every `monserv_poll_rounds_total` value VictoriaMetrics holds for `gateway`.
async fn vm_rounds(vm: SocketAddr, gateway: &str) -> Vec<u64> {
    let selector = format!("monserv_poll_rounds_total{{gateway=\"{gateway}\"}}");
    let q = percent_encoding::utf8_percent_encode(&selector, percent_encoding::NON_ALPHANUMERIC);
    let (status, body) = support::http_get(vm, &format!("/api/v1/export?match[]={q}"), &[]).await;
    assert_eq!(status, 200, "{body}");
    let Some(line) = body.lines().find(|l| l.starts_with('{')) else { return Vec::new() };
    let v: Value = serde_json::from_str(line).unwrap();
    let mut points: Vec<(i64, u64)> = v["timestamps"]
        .as_array()
        .unwrap()
        .iter()
        .zip(v["values"].as_array().unwrap())
        .map(|(t, v)| (t.as_i64().unwrap(), v.as_f64().unwrap() as u64))
        .collect();
    points.sort_unstable();
    points.into_iter().map(|(_, v)| v).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_write_backlog_survives_kill_9_and_reaches_victoria_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let vm_port = free_port();
    let vm: SocketAddr = format!("127.0.0.1:{vm_port}").parse().unwrap();
    let receiver = victoria_metrics(dir.path(), vm_port);
    let url = format!("http://{vm}/api/v1/write");
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let monserv = spawn_monserv(state.path(), port, &url, "gw-vm-1");
    let start = Instant::now();
    while vm_rounds(vm, "gw-vm-1").await.len() < 3 {
        assert!(start.elapsed() < Duration::from_secs(30), "no rounds reached VictoriaMetrics");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The receiver goes away; monserv queues on flash, then is killed with -9.
    terminate(receiver);
    let health = |body: String| serde_json::from_str::<Value>(&body).unwrap()["data"]["poll_rounds"].as_u64().unwrap();
    let at_outage = health(support::http_get(addr, "/api/v1/health", &[]).await.1);
    counters_until(addr, "queueing", |(failed, backlog, _)| failed >= 2.0 && backlog > 0.0).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let at_kill = health(support::http_get(addr, "/api/v1/health", &[]).await.1);
    assert!(at_kill >= at_outage + 6, "rounds kept coming while queueing: {at_outage} -> {at_kill}");
    drop(monserv); // SIGKILL

    // Back: a new run (another label, so the two runs are told apart) and the receiver.
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let monserv = spawn_monserv(state.path(), port, &url, "gw-vm-2");
    let receiver = victoria_metrics(dir.path(), vm_port);
    counters_until(addr, "replayed", |(_, backlog, _)| backlog == 0.0).await;
    let start = Instant::now();
    let first_run = loop {
        let rounds = vm_rounds(vm, "gw-vm-1").await;
        // At most the last flush interval (0.5 s, one round or two) is lost to kill -9.
        if rounds.len() as u64 + 2 >= at_kill {
            break rounds;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "first run: {} of {at_kill} rounds", rounds.len());
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_contiguous(&first_run, "first run, queued rounds replayed after kill -9");
    assert!(first_run.len() as u64 > at_outage + 4, "the queued rounds arrived: {first_run:?}");
    let start = Instant::now();
    while vm_rounds(vm, "gw-vm-2").await.len() < 3 {
        assert!(start.elapsed() < Duration::from_secs(30), "the second run's rounds never arrived");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_contiguous(&vm_rounds(vm, "gw-vm-2").await, "second run");
    let (_, _, dropped) = receiver_counters(addr).await;
    assert_eq!(dropped, 0.0);
    drop((monserv, receiver));
}

/// The remote_write protocol's rules at an HTTP receiver that answers 503, 429, 400,
/// then 200: the headers the spec requires, 5xx and 429 retried (counted as failed
/// sends), 400 not retried (its samples dropped and counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_write_retries_5xx_and_429_and_drops_on_other_4xx() {
    let receiver = crate::support::receiver::Receiver::start(0, &[503, 429, 400]).await;
    let d = TestDaemon::start(
        &["local".into()],
        &format!(
            "poll_interval_seconds = 0.5\nauth_token = \"{TOKEN}\"\n[[export.remote_write]]\nurl = \"http://{}/api/v1/write\"\nbearer_token = \"rw-t0k\"\n",
            receiver.addr
        ),
    )
    .await;
    receiver.wait_seen(Duration::from_secs(30), |s| s.len() >= 5).await;
    let seen = receiver.seen();
    let statuses: Vec<u16> = seen.iter().map(|s| s.status).collect();
    assert_eq!(statuses[..5], [503, 429, 400, 200, 200]);
    for s in &seen {
        assert_eq!(s.path, "/api/v1/write");
        assert_eq!(s.header("content-encoding"), Some("snappy"));
        assert_eq!(s.header("content-type"), Some("application/x-protobuf"));
        assert_eq!(s.header("x-prometheus-remote-write-version"), Some("0.1.0"));
        assert_eq!(s.header("authorization"), Some("Bearer rw-t0k"));
    }
    let (failed, _, dropped) = receiver_counters(d.addr).await;
    assert_eq!(failed, 2.0, "503 and 429 are retried");
    assert!(dropped > 0.0, "the 400's samples are dropped, not retried");
    assert!(d.shutdown().await);
}
