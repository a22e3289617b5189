//! Alert state survives `kill -9`: a restart re-fires no active alert, and an alert
//! whose condition ended while monserv was down recovers once it is back. The real
//! binary, this machine as the target; needs no root.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support;
use crate::support::monserv_bin::Monserv;

const TOKEN: &str = "durable-token-1";
const QUIET: &str = "disk_percent = 100\ncpu_percent = 100\nproc_ram_percent = 100\n";

fn spawn(state: &std::path::Path) -> Monserv {
    Monserv::start(state, &format!("auth_token = \"{TOKEN}\""), &[])
}

/// `GET path`'s `data`, which must answer 200.
async fn data(m: &Monserv, path: &str) -> Value {
    let (status, data) = m.get(path, Some(TOKEN)).await;
    assert_eq!(status, 200, "{path}");
    data
}

fn keys(active: &Value) -> Vec<(String, String, u64)> {
    active["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["rule"].as_str().unwrap().into(), a["key"].as_str().unwrap().into(), a["since"].as_u64().unwrap()))
        .collect()
}

fn transitions(history: &Value) -> Vec<(String, String)> {
    history["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["key"].as_str().unwrap().into(), t["alert_type"].as_str().unwrap().into()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_alerts_survive_kill_9_and_recover_after_downtime() {
    let state = tempfile::tempdir().unwrap();
    let rules = state.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(rules.join("threshold.toml"), format!("memory_percent = 0.5\n{QUIET}")).unwrap();
    let host = support::machine_hostname();

    // It fires once.
    let m = spawn(state.path());
    let start = Instant::now();
    let fired = loop {
        let active = keys(&data(&m, "/api/v1/alerts/active").await);
        if !active.is_empty() {
            break active;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "the memory alert never fired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(fired.len(), 1);
    assert_eq!((fired[0].0.as_str(), fired[0].1.as_str()), ("threshold", "local/mem"));
    // The history is written in batches: the transition may land a moment after the
    // active list shows it.
    let history = loop {
        let history = data(&m, "/api/v1/alerts/history").await;
        if !history["transitions"][0].is_null() || start.elapsed() > Duration::from_secs(20) {
            break history;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(history["transitions"][0]["subject"], format!("[ALERT] {host} memory high"));
    m.kill_9();

    // Back after kill -9 with the condition still there: active since the same time,
    // and no second alert in the history (nothing was re-fired).
    let m = spawn(state.path());
    m.rounds("threshold", 2, Some(TOKEN)).await;
    let store = state.path().join("alerts.redb");
    let written = std::fs::metadata(&store).unwrap().modified().unwrap();
    m.rounds("threshold", 5, Some(TOKEN)).await;
    assert_eq!(keys(&data(&m, "/api/v1/alerts/active").await), fired, "the restart forgot or re-fired the alert");
    // Flash: rounds without transitions write nothing.
    assert_eq!(std::fs::metadata(&store).unwrap().modified().unwrap(), written, "written without a transition");
    assert_eq!(transitions(&data(&m, "/api/v1/alerts/history").await), vec![("local/mem".into(), "alert".into())]);
    m.kill_9();

    // The condition ends while monserv is down: the restart sends the recovery.
    std::fs::write(rules.join("threshold.toml"), format!("memory_percent = 99.9\n{QUIET}")).unwrap();
    let m = spawn(state.path());
    m.rounds("threshold", 3, Some(TOKEN)).await;
    assert!(keys(&data(&m, "/api/v1/alerts/active").await).is_empty());
    let history = data(&m, "/api/v1/alerts/history?since=0&limit=10").await;
    assert_eq!(
        transitions(&history),
        vec![("local/mem".into(), "alert".into()), ("local/mem".into(), "recovery".into())]
    );
    assert_eq!(history["transitions"][1]["subject"], format!("[RECOVERED] {host} memory"));
    // A bad query is a clear 400.
    let auth = format!("Bearer {TOKEN}");
    let (status, body) =
        support::http_get(m.addr, "/api/v1/alerts/history?limit=lots", &[("Authorization", &auth)]).await;
    assert_eq!((status, body.contains("limit must be a non-negative integer")), (400, true), "{body}");
    let (status, _) = support::http_get(m.addr, "/api/v1/alerts/active", &[]).await;
    assert_eq!(status, 401, "the token rules apply");
    m.kill_9();
}
