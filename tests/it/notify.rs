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
    let start_monserv = || {
        std::process::Command::new(BIN)
            .args(["--config", state.path().join("monserv.toml").to_str().unwrap()])
            .env_remove("SERVERS")
            .env("MONSERV_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
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
