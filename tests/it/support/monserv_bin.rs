//! The real `monserv` binary as a child process with its own state directory:
//! for what only a real process shows (restarts after `kill -9`, exit codes,
//! descriptor limits, first-boot files). Dropping it kills it (SIGKILL).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::hosts::free_port;

/// Set for integration tests only (the benchmarks include this module too).
const BIN: Option<&str> = option_env!("CARGO_BIN_EXE_monserv");

/// The real binary, its stderr kept in a file.
pub struct Monserv {
    child: Child,
    pub addr: SocketAddr,
    log: std::path::PathBuf,
}

impl Monserv {
    pub fn start(state: &std::path::Path, extra: &str, wrapper: &[&str]) -> Monserv {
        let port = free_port();
        let config = format!(
            "listen = \"127.0.0.1\"\nport = {port}\npoll_interval_seconds = 0.3\nstate_dir = {:?}\n{extra}\n",
            state.display().to_string()
        );
        std::fs::write(state.join("monserv.toml"), config).unwrap();
        let log = state.join("stderr.log");
        let bin = BIN.expect("the monserv binary (integration tests only)");
        let (program, args) = match wrapper.split_first() {
            Some((p, rest)) => (p.to_string(), [rest, &[bin]].concat()),
            None => (bin.to_string(), vec![]),
        };
        let child = Command::new(program)
            .args(args)
            .args(["--config", state.join("monserv.toml").to_str().unwrap()])
            .env_remove("SERVERS")
            .env_remove("MONSERV_AUTH_TOKEN")
            .env("MONSERV_LOG", "info")
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        let start = Instant::now();
        // Serving, not only bound: the health answer comes once start-up is done.
        let healthy = || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(addr).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            s.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
            let mut answer = String::new();
            s.read_to_string(&mut answer).ok()?;
            // ... and the rules loaded (they compile beside the first rounds).
            (answer.starts_with("HTTP/1.1 200") && answer.contains("\"rules_loaded\":true")).then_some(())
        };
        while healthy().is_none() {
            assert!(start.elapsed() < Duration::from_secs(20), "monserv never served");
            std::thread::sleep(Duration::from_millis(20));
        }
        Monserv { child, addr, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }
}

impl Drop for Monserv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Monserv {
    /// `GET path` with a token (if any): the status and the answer's `data`.
    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let (status, body) = super::http_get(self.addr, path, &headers).await;
        (status, serde_json::from_str::<Value>(&body).unwrap_or(Value::Null)["data"].clone())
    }

    /// Wait until rule `name` has evaluated `n` more rounds.
    pub async fn rounds(&self, name: &str, n: u64, token: Option<&str>) {
        let evaluations = |v: &Value| {
            v["rules"]
                .as_array()
                .and_then(|r| r.iter().find(|r| r["name"] == name))
                .map_or(0, |r| r["evaluations"].as_u64().unwrap_or(0))
        };
        let first = evaluations(&self.get("/api/v1/rules", token).await.1);
        let start = Instant::now();
        while evaluations(&self.get("/api/v1/rules", token).await.1) < first + n {
            assert!(start.elapsed() < Duration::from_secs(30), "rule {name} stopped evaluating");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL and wait: no shutdown path runs.
    pub fn kill_9(self) {}
}
