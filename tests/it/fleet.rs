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
    let (status, body) = support::http_get(prom, &format!("/api/v1/query?query={q}"), &[]).await;
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
