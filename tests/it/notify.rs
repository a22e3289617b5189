//! Alert delivery to a webhook (Alertmanager v4 JSON) at least once and in order,
//! through receiver failures and a `kill -9`. The receiver is a real HTTP server on
//! loopback with scripted answers. Needs no root.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{self, hosts::free_port, TestDaemon};

const QUIET: &str = "disk_percent = 100\ncpu_percent = 100\nproc_ram_percent = 100\n";

use crate::support::receiver::Receiver;

fn accepted(r: &[(u16, String, String)]) -> Vec<(String, String)> {
    r.iter().filter(|(s, _, _)| *s == 200).map(|(_, k, st)| (k.clone(), st.clone())).collect()
}

fn config(hook: SocketAddr, rules_dir: &std::path::Path) -> String {
    format!(
        "poll_interval_seconds = 0.3\nauth_token = \"notify-token-1\"\n[rules]\ndir = {:?}\n\
         [notify.webhook]\nurl = \"http://{hook}/hook\"\nheaders = {{ X-Hook-Token = \"hook-secret-1\" }}\n",
        rules_dir.display().to_string()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_gets_every_transition_in_order_through_failures() {
    let hook = Receiver::start(0, &[500, 500, 429]).await;
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(rules.path().join("threshold.toml"), format!("memory_percent = 0.5\n{QUIET}")).unwrap();
    let d = TestDaemon::start(&["local".into()], &config(hook.addr, rules.path())).await;
    let fired = vec![("local/mem".to_string(), "firing".to_string())];
    hook.wait(Duration::from_secs(40), |r| accepted(r) == fired).await;
    // Three refusals worth retrying, then the same delivery again.
    let statuses: Vec<u16> = hook.requests().iter().map(|r| r.0).collect();
    assert_eq!(statuses, vec![500, 500, 429, 200]);
    let seen = hook.seen()[3].clone();
    assert_eq!(seen.header("x-hook-token"), Some("hook-secret-1"));
    let body = seen.body;
    let host = support::machine_hostname();
    assert_eq!(body["version"], "4");
    assert_eq!(body["alerts"][0]["annotations"]["subject"], format!("[ALERT] {host} memory high"));
    assert_eq!(body["alerts"][0]["labels"]["alertname"], "threshold");
    // The condition ends: the recovery follows, in order.
    std::fs::write(rules.path().join("threshold.toml"), format!("memory_percent = 99.9\n{QUIET}")).unwrap();
    hook.wait(Duration::from_secs(30), |r| accepted(r).len() == 2).await;
    assert_eq!(accepted(&hook.requests())[1], ("local/mem".to_string(), "resolved".to_string()));
    let auth = [("Authorization", "Bearer notify-token-1")];
    let (_, body) = support::http_get(d.addr, "/api/v1/notify", &auth).await;
    let sink = serde_json::from_str::<Value>(&body).unwrap()["data"]["sinks"][0].clone();
    assert_eq!(
        (sink["name"].as_str(), sink["delivered"].as_u64(), sink["failed"].as_u64()),
        (Some("webhook"), Some(2), Some(0))
    );
    assert_eq!((sink["queued"].as_u64(), sink["retrying"].as_bool()), (Some(0), Some(false)));
    assert!(sink["last_error"].as_str().unwrap().contains("429"), "{sink}");
    assert!(!body.contains("hook-secret-1"), "a header secret in the API: {body}");
    assert!(d.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_delivery_is_counted_not_retried() {
    let hook = Receiver::start(0, &[400]).await;
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(rules.path().join("threshold.toml"), format!("memory_percent = 0.5\n{QUIET}")).unwrap();
    let d = TestDaemon::start(&["local".into()], &config(hook.addr, rules.path())).await;
    hook.wait(Duration::from_secs(20), |r| r.len() == 1).await;
    std::fs::write(rules.path().join("threshold.toml"), format!("memory_percent = 99.9\n{QUIET}")).unwrap();
    hook.wait(Duration::from_secs(20), |r| r.len() == 2).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = hook.requests();
    assert_eq!(r, vec![(400, "local/mem".into(), "firing".into()), (200, "local/mem".into(), "resolved".into())]);
    let (_, body) = support::http_get(d.addr, "/api/v1/notify", &[("Authorization", "Bearer notify-token-1")]).await;
    let sink = serde_json::from_str::<Value>(&body).unwrap()["data"]["sinks"][0].clone();
    assert_eq!((sink["delivered"].as_u64(), sink["failed"].as_u64()), (Some(1), Some(1)), "{sink}");
    assert!(d.shutdown().await);
}

const BIN: &str = env!("CARGO_BIN_EXE_monserv");

/// The real binary on `<state>/monserv.toml`, once it listens on `port`.
fn spawn_monserv(state: &std::path::Path, port: u16) -> std::process::Child {
    let child = std::process::Command::new(BIN)
        .args(["--config", state.join("monserv.toml").to_str().unwrap()])
        .env_remove("SERVERS")
        .env("MONSERV_LOG", "error")
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "monserv did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// The receiver is down when the alert fires and monserv is killed (-9) before it
/// comes up: after a restart the queued alert is delivered, and not re-fired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_deliveries_survive_kill_9() {
    let hook_port = free_port();
    let state = tempfile::tempdir().unwrap();
    let rules = state.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(rules.join("threshold.toml"), format!("memory_percent = 0.5\n{QUIET}")).unwrap();
    let port = free_port();
    let hook: SocketAddr = format!("127.0.0.1:{hook_port}").parse().unwrap();
    let text = format!(
        "listen = \"127.0.0.1\"\nport = {port}\nstate_dir = {:?}\n{}",
        state.path().display().to_string(),
        config(hook, &rules)
    );
    std::fs::write(state.path().join("monserv.toml"), text).unwrap();
    let start_monserv = || spawn_monserv(state.path(), port);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let auth = [("Authorization", "Bearer notify-token-1")];
    let mut child = start_monserv();
    let start = Instant::now();
    loop {
        if std::net::TcpStream::connect(addr).is_ok() {
            let (_, body) = support::http_get(addr, "/api/v1/notify", &auth).await;
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            if v["data"]["sinks"][0]["retrying"] == true && v["data"]["sinks"][0]["queued"] == 1 {
                break;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(30), "the alert was never queued");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let receiver = Receiver::start(hook_port, &[]).await;
    let mut child = start_monserv();
    receiver.wait(Duration::from_secs(30), |r| !accepted(r).is_empty()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        accepted(&receiver.requests()),
        vec![("local/mem".to_string(), "firing".to_string())],
        "exactly the queued alert"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

/// An alert storm (20 hosts down at once, one alert flapping) while the webhook is
/// down and monserv is killed with SIGKILL six times. When the receiver comes up,
/// every transition in the store's history arrives, in order per key; nothing was
/// re-fired by a restart (per key the history alternates alert, recovery), and
/// duplicates stay within at-least-once (none while the sink was down).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transition_survives_repeated_kill_9_during_a_storm() {
    let hook_port = free_port();
    let state = tempfile::tempdir().unwrap();
    let rules = state.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    let threshold = |mem: &str| format!("unreachable_polls = 1\nmemory_percent = {mem}\n{QUIET}");
    support::write_atomically(&rules.join("threshold.toml"), threshold("0.5").as_bytes());
    let port = free_port();
    let down = crate::support::hosts::closed_ports(20);
    let targets: Vec<String> = std::iter::once("\"local\"".to_string())
        .chain(down.iter().map(|p| format!("\"ssh://plc:pw@127.0.0.1:{p}\"")))
        .collect();
    let hook: SocketAddr = format!("127.0.0.1:{hook_port}").parse().unwrap();
    let text = format!(
        "listen = \"127.0.0.1\"\nport = {port}\nstate_dir = {:?}\ntargets = [{}]\nhost_timeout_seconds = 0.3\n{}",
        state.path().display().to_string(),
        targets.join(", "),
        config(hook, &rules)
    );
    std::fs::write(state.path().join("monserv.toml"), text).unwrap();
    let start_monserv = || spawn_monserv(state.path(), port);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let auth = [("Authorization", "Bearer notify-token-1")];
    let mem_changes = || async {
        let (_, body) = support::http_get(addr, "/api/v1/alerts/history", &auth).await;
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        v["data"]["transitions"].as_array().map_or(0, |t| t.iter().filter(|t| t["key"] == "local/mem").count())
    };
    // Up, with its rules loaded and three more rounds polled since (the runner then
    // evaluates the newest: what the rules file said at the start is committed).
    let wait_rounds = || async {
        let start = Instant::now();
        let mut loaded_at: Option<u64> = None;
        loop {
            let (_, body) = support::http_get(addr, "/api/v1/health", &[]).await;
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            let rounds = v["data"]["poll_rounds"].as_u64();
            if loaded_at.is_none() && v["data"]["rules_loaded"] == true {
                loaded_at = rounds;
            }
            if let (Some(at), Some(now)) = (loaded_at, rounds) {
                if now >= at + 3 {
                    return;
                }
            }
            assert!(start.elapsed() < Duration::from_secs(30), "monserv made no rounds: {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let mut child = start_monserv();
    wait_rounds().await;
    let mut high = false;
    for round in 0..12 {
        let before = mem_changes().await;
        high = !high;
        support::write_atomically(
            &rules.join("threshold.toml"),
            threshold(if high { "99.9" } else { "0.5" }).as_bytes(),
        );
        let start = Instant::now();
        while mem_changes().await == before {
            assert!(start.elapsed() < Duration::from_secs(30), "round {round}: the change never became a transition");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if round % 2 == 1 {
            // Just after the commit, while the notifier is trying the dead sink.
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            child = start_monserv();
            wait_rounds().await;
        }
    }
    // Let the last change land, then bring the receiver up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let receiver = Receiver::start(hook_port, &[]).await;
    let start = Instant::now();
    loop {
        let (_, body) = support::http_get(addr, "/api/v1/notify", &auth).await;
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let sink = &v["data"]["sinks"][0];
        if sink["queued"] == 0 && sink["delivered"].as_u64() > Some(0) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "queue never drained: {sink:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, body) = support::http_get(addr, "/api/v1/alerts/history", &auth).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let history: Vec<Value> =
        serde_json::from_str::<Value>(&body).unwrap()["data"]["transitions"].as_array().unwrap().clone();
    // (seq, key, kind) received, in arrival order (digests flattened in order).
    let mut received: Vec<(u64, String, String)> = Vec::new();
    for s in receiver.seen() {
        let seqs = s.body["monserv"]["seqs"].as_array().unwrap().clone();
        for (alert, seq) in s.body["alerts"].as_array().unwrap().iter().zip(seqs) {
            let kind = if alert["status"] == "resolved" { "recovery" } else { "alert" };
            received.push((seq.as_u64().unwrap(), alert["labels"]["key"].as_str().unwrap().into(), kind.into()));
        }
    }
    let flaps = history.iter().filter(|t| t["key"] == "local/mem").count();
    assert!(history.len() >= 20 + 6, "a storm and a flapping alert: {history:#?}");
    assert!(flaps >= 6, "local/mem changed {flaps} times");
    let mut unique: Vec<(u64, String, String)> = Vec::new();
    for r in &received {
        if !unique.contains(r) {
            unique.push(r.clone());
        }
    }
    let duplicates = received.len() - unique.len();
    assert_eq!(duplicates, 0, "nothing was accepted before a kill, so nothing repeats: {received:?}");
    for t in &history {
        let want = (
            t["seq"].as_u64().unwrap(),
            t["key"].as_str().unwrap().to_string(),
            t["alert_type"].as_str().unwrap().to_string(),
        );
        assert!(unique.contains(&want), "transition {want:?} never arrived");
    }
    assert_eq!(unique.len(), history.len(), "nothing arrived that the history lacks");
    let mut keys: Vec<&str> = history.iter().map(|t| t["key"].as_str().unwrap()).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        let stored: Vec<&str> =
            history.iter().filter(|t| t["key"] == key).map(|t| t["alert_type"].as_str().unwrap()).collect();
        let got: Vec<&str> = unique.iter().filter(|r| r.1 == key).map(|r| r.2.as_str()).collect();
        assert_eq!(got, stored, "order for {key}");
        for pair in stored.windows(2) {
            assert_ne!(pair[0], pair[1], "{key} re-fired or re-recovered across a restart: {stored:?}");
        }
        assert_eq!(stored[0], "alert", "{key}");
    }
}
