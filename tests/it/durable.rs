//! Alert state survives `kill -9`: a restart re-fires no active alert, and an alert
//! whose condition ended while monserv was down recovers once it is back. The real
//! binary, this machine as the target; needs no root.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{self, hosts::free_port};

const BIN: &str = env!("CARGO_BIN_EXE_monserv");
const TOKEN: &str = "durable-token-1";
const QUIET: &str = "disk_percent = 100\ncpu_percent = 100\nproc_ram_percent = 100\n";

struct Monserv {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Monserv {
    fn start(state: &std::path::Path) -> Monserv {
        let port = free_port();
        let config = format!(
            "listen = \"127.0.0.1\"\nport = {port}\npoll_interval_seconds = 0.3\nstate_dir = {:?}\nauth_token = \"{TOKEN}\"\n",
            state.display().to_string()
        );
        std::fs::write(state.join("monserv.toml"), config).unwrap();
        let child = Command::new(BIN)
            .args(["--config", state.join("monserv.toml").to_str().unwrap()])
            .env_remove("SERVERS")
            .env("MONSERV_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        let start = Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(start.elapsed() < Duration::from_secs(20), "monserv never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        Monserv { child, addr }
    }

    async fn get(&self, path: &str) -> Value {
        let auth = format!("Bearer {TOKEN}");
        let (status, body) = support::http_get(self.addr, path, &[("Authorization", &auth)]).await;
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str::<Value>(&body).unwrap()["data"].clone()
    }

    /// Wait until the built-in rule has evaluated `n` more rounds.
    async fn rounds(&self, n: u64) {
        let evaluations = |v: &Value| v["rules"][0]["evaluations"].as_u64().unwrap_or(0);
        let first = evaluations(&self.get("/api/v1/rules").await);
        let start = Instant::now();
        while evaluations(&self.get("/api/v1/rules").await) < first + n {
            assert!(start.elapsed() < Duration::from_secs(30), "the rule stopped evaluating");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn kill_9(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }
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
    let m = Monserv::start(state.path());
    let start = Instant::now();
    let fired = loop {
        let active = keys(&m.get("/api/v1/alerts/active").await);
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
        let history = m.get("/api/v1/alerts/history").await;
        if !history["transitions"][0].is_null() || start.elapsed() > Duration::from_secs(20) {
            break history;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(history["transitions"][0]["subject"], format!("[ALERT] {host} memory high"));
    m.kill_9();

    // Back after kill -9 with the condition still there: active since the same time,
    // and no second alert in the history (nothing was re-fired).
    let m = Monserv::start(state.path());
    m.rounds(2).await;
    let store = state.path().join("alerts.redb");
    let written = std::fs::metadata(&store).unwrap().modified().unwrap();
    m.rounds(5).await;
    assert_eq!(keys(&m.get("/api/v1/alerts/active").await), fired, "the restart forgot or re-fired the alert");
    // Flash: rounds without transitions write nothing.
    assert_eq!(std::fs::metadata(&store).unwrap().modified().unwrap(), written, "written without a transition");
    assert_eq!(transitions(&m.get("/api/v1/alerts/history").await), vec![("local/mem".into(), "alert".into())]);
    m.kill_9();

    // The condition ends while monserv is down: the restart sends the recovery.
    std::fs::write(rules.join("threshold.toml"), format!("memory_percent = 99.9\n{QUIET}")).unwrap();
    let m = Monserv::start(state.path());
    m.rounds(3).await;
    assert!(keys(&m.get("/api/v1/alerts/active").await).is_empty());
    let history = m.get("/api/v1/alerts/history?since=0&limit=10").await;
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
