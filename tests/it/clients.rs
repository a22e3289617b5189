//! The seed document's own clients (Python `websockets`, Node.js `ws`, the browser
//! page) and monserv's built-in page, unchanged but for the URL, against a daemon
//! watching an OpenSSH host and a BusyBox host.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::support::{self, BusyBoxHost, Sshd, TestDaemon};

const SEED_URL: &str = "ws://localhost:18904/ws";

pub(crate) fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// The seed file with only its URL pointed at the test daemon.
pub(crate) fn seed_copy(name: &str, url: &str, dir: &tempfile::TempDir) -> PathBuf {
    let text = std::fs::read_to_string(clients_dir().join(name)).unwrap();
    assert!(text.contains(SEED_URL), "{name} no longer holds the seed URL");
    let path = dir.path().join(name);
    std::fs::write(&path, text.replace(SEED_URL, url)).unwrap();
    path
}

/// Lines of a child's stdout, read on a thread so the test can time out.
pub(crate) struct Lines {
    child: Child,
    rx: mpsc::Receiver<String>,
}

impl Lines {
    pub(crate) fn spawn(cmd: &mut Command) -> Lines {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        let out: ChildStdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines { child, rx }
    }

    /// Wait for a line satisfying `pred`; all lines seen are returned on failure.
    pub(crate) fn wait_for(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + timeout;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.rx.recv_timeout(left) {
                Ok(line) if pred(&line) => return line,
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        panic!("no matching line within {timeout:?}; saw {seen:#?}; exit: {:?}", self.child.try_wait());
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn daemon_with_two_hosts() -> (Sshd, BusyBoxHost, TestDaemon) {
    daemon_with_two_hosts_and("").await
}

/// As above, with extra top-level configuration lines.
async fn daemon_with_two_hosts_and(extra: &str) -> (Sshd, BusyBoxHost, TestDaemon) {
    let sshd = Sshd::start();
    let bb = BusyBoxHost::start("bb-plc-03");
    let config = format!("poll_interval_seconds = 1\n{extra}\n[rules]\nbuiltin = false");
    let d = TestDaemon::start(&[sshd.url_password(), bb.url()], &config).await;
    let mut ws = d.connect().await;
    support::wait_metrics(&mut ws, Duration::from_secs(20), |d| {
        d.as_object().is_some_and(|o| o.values().all(|m| m["status"] == "online"))
    })
    .await;
    (sshd, bb, d)
}

fn alert(d: &TestDaemon, subject: &str) {
    let a = monserv::model::AlertMessage::new(
        monserv::model::AlertKind::Alert,
        subject,
        "Memory used 85.0% (threshold 80.0%)",
    );
    d.hub().publish_alert(&a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_python_client() {
    let (_sshd, _bb, d) = daemon_with_two_hosts().await;
    let dir = tempfile::tempdir().unwrap();
    let script = seed_copy("seed_client.py", &d.ws_url(), &dir);
    let mut lines = Lines::spawn(Command::new("python3").arg("-u").arg(&script));
    lines.wait_for(Duration::from_secs(20), |l| l == "Connected to WebSocket");
    lines.wait_for(Duration::from_secs(10), |l| l == "Metrics update: 2 servers");
    lines.wait_for(Duration::from_secs(10), |l| l == "Metrics update: 2 servers");
    alert(&d, "[ALERT] bb-plc-03 memory high");
    lines.wait_for(Duration::from_secs(10), |l| l == "Alert: [ALERT] bb-plc-03 memory high");
    drop(lines);
    assert!(d.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_node_client() {
    let (_sshd, _bb, d) = daemon_with_two_hosts().await;
    let dir = tempfile::tempdir().unwrap();
    let script = seed_copy("seed_client.js", &d.ws_url(), &dir);
    let mut lines =
        Lines::spawn(Command::new("node").arg(&script).env("NODE_PATH", clients_dir().join("node_modules")));
    lines.wait_for(Duration::from_secs(20), |l| l == "Connected to WebSocket");
    lines.wait_for(Duration::from_secs(10), |l| l == "Metrics update: 2 servers");
    alert(&d, "[ALERT] scadanas disk / high");
    lines.wait_for(Duration::from_secs(10), |l| l == "Alert: [ALERT] scadanas disk / high");
    drop(lines);
    assert!(d.shutdown().await);
}

/// The browser's first report: one card (or fleet row) per host, named by the hosts'
/// real names, and the page's connection `status`.
pub(crate) fn wait_for_cards(b: &mut Lines, status: &str) -> Value {
    let line = b.wait_for(Duration::from_secs(60), |l| l.contains("\"metrics\""));
    let v: Value = serde_json::from_str(&line).unwrap();
    let mut names: Vec<String> =
        v["names"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_string()).collect();
    names.sort();
    assert_eq!(names, vec!["bb-plc-03".to_string(), support::machine_hostname()]);
    assert_eq!(v["status"], status);
    assert_eq!(v["errors"], serde_json::json!([]), "the page threw");
    v
}

fn wait_for_alert(b: &mut Lines) -> Value {
    let line = b.wait_for(Duration::from_secs(20), |l| l.contains("\"alert\""));
    serde_json::from_str(&line).unwrap()
}

fn browser(mode: &str, url: &str) -> Lines {
    browser_with(mode, url, 2, &[])
}

/// The Chromium driver expecting `hosts` cards, with extra environment (`SPKI`: a
/// server key to trust).
pub(crate) fn browser_with(mode: &str, url: &str, hosts: usize, env: &[(&str, &str)]) -> Lines {
    Lines::spawn(
        Command::new("node")
            .arg(clients_dir().join("browser.js"))
            .args([mode, url, &hosts.to_string()])
            .envs(env.iter().copied())
            .env("NODE_PATH", clients_dir().join("node_modules")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_browser_page_in_chromium() {
    // The page as an operator would host it: on its own web server, an origin listed
    // in allowed_origins (a page from any other origin is refused: tests/it/perimeter.rs).
    let site = support::Site::start().await;
    let (_sshd, _bb, d) = daemon_with_two_hosts_and(&format!("allowed_origins = [{:?}]", site.origin)).await;
    let dir = tempfile::tempdir().unwrap();
    let page = seed_copy("seed_page.html", &d.ws_url(), &dir);
    site.set_page(&std::fs::read_to_string(&page).unwrap());
    let mut b = browser("seed", &format!("{}/seed_page.html", site.origin));
    let v = wait_for_cards(&mut b, "Connected");
    assert!(v["extra"].as_array().unwrap().iter().any(|p| p.as_str().unwrap().starts_with("Memory: ")), "{v}");
    alert(&d, "[ALERT] bb-plc-03 CPU high");
    let v = wait_for_alert(&mut b);
    assert_eq!(v["subject"], "[ALERT] bb-plc-03 CPU high");
    drop(b);
    assert!(d.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_page_in_chromium() {
    let (_sshd, _bb, d) = daemon_with_two_hosts().await;
    let mut b = browser("builtin", &d.http_url("/"));
    let v = wait_for_cards(&mut b, "Live");
    assert!(v["extra"].as_u64().unwrap() >= 2, "the first host's process table should have rows: {v}");
    // Untrusted text is shown as text, never parsed as HTML.
    alert(&d, "<img src=x onerror=alert(1)>");
    let v = wait_for_alert(&mut b);
    assert_eq!(v["subject"], "<img src=x onerror=alert(1)>");
    drop(b);
    assert!(d.shutdown().await);
}

/// An alert that fired before the page was opened is listed as active on load (the
/// page reads `GET /api/v1/alerts/active`, with the token from its URL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_page_lists_alerts_that_fired_before_it_opened() {
    let d = TestDaemon::start(
        &["local".into()],
        "poll_interval_seconds = 0.3\nauth_token = \"page-token-1\"\n[thresholds]\nmemory_percent = 0.5\ndisk_percent = 100\ncpu_percent = 100\nproc_ram_percent = 100",
    )
    .await;
    let auth = [("Authorization", "Bearer page-token-1")];
    let start = std::time::Instant::now();
    while !support::http_get(d.addr, "/api/v1/alerts/active", &auth).await.1.contains("memory high") {
        assert!(start.elapsed() < Duration::from_secs(20), "the alert never fired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut b = Lines::spawn(
        Command::new("node")
            .arg(clients_dir().join("browser.js"))
            .args(["active", &d.http_url("/?token=page-token-1"), "1"])
            .env("NODE_PATH", clients_dir().join("node_modules")),
    );
    let v: Value = serde_json::from_str(&b.wait_for(Duration::from_secs(30), |l| l.contains("\"active\""))).unwrap();
    let host = support::machine_hostname();
    assert_eq!(v["subjects"], serde_json::json!([format!("[ALERT] {host} memory high")]), "{v}");
    assert_eq!(v["errors"], serde_json::json!([]), "{v}");
    drop(b);
    assert!(d.shutdown().await);
}
