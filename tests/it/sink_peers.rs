//! Sinks against the real programs they talk to in a plant: an SMTP server
//! (aiosmtpd, with STARTTLS or implicit TLS and AUTH), Alertmanager (Debian's
//! prometheus-alertmanager, checked through its own API) and a Kafka-protocol broker
//! (tansu, read back with kafka-python). All on loopback; needs no root.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::hosts::{free_port, wait_port, Peer};
use crate::support::receiver::TestCa;
use crate::support::{self, TestDaemon};

const QUIET: &str = "disk_percent = 100\ncpu_percent = 100\nproc_ram_percent = 100\n";

fn smtp_server(mode: &str, ca: &TestCa, out: &Path) -> (Peer, u16) {
    let port = free_port();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/smtp_server.py");
    let mut child = Command::new("python3")
        .arg(script)
        .args(["--port", &port.to_string(), "--mode", mode, "--user", "monserv@plant.test", "--password"])
        .arg("smtp-secret-pw")
        .args(["--cert", ca.cert.to_str().unwrap(), "--key", ca.key.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 with aiosmtpd (tests/run.sh installs it)");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "the SMTP server did not start");
    wait_port(port, &mut child, "smtp server");
    (Peer(child), port)
}

fn mails(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

async fn wait_mails(out: &Path, n: usize) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let m = mails(out);
        if m.len() >= n {
            return m;
        }
        assert!(start.elapsed() < Duration::from_secs(40), "{} of {n} mails arrived", m.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sink_status(addr: SocketAddr, name: &str) -> Value {
    support::sink_status(addr, "peers-token-1", name).await
}

fn email_config(rules: &Path, port: u16, ca: &TestCa, tls: &str) -> String {
    format!(
        "poll_interval_seconds = 0.3\nauth_token = \"peers-token-1\"\n[rules]\ndir = {:?}\n[notify.email]\n\
         smtp_host = \"localhost\"\nsmtp_port = {port}\ntls = \"{tls}\"\nfrom = \"monserv@plant.test\"\n\
         password = \"smtp-secret-pw\"\nto = \"ops@plant.test, oncall@plant.test\"\nca_file = {:?}\n",
        rules.display().to_string(),
        ca.ca.display().to_string()
    )
}

/// STARTTLS with AUTH: the alert and its recovery arrive as mails with the alert's
/// subject and a body naming host, state and time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_over_starttls_with_auth() {
    let ca = TestCa::new();
    let out = ca.dir.path().join("mails.jsonl");
    let (_smtp, port) = smtp_server("starttls", &ca, &out);
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(rules.path().join("threshold.toml"), format!("memory_percent = 0.5\n{QUIET}")).unwrap();
    let d = TestDaemon::start(&["local".into()], &email_config(rules.path(), port, &ca, "starttls")).await;
    let host = support::machine_hostname();
    let m = wait_mails(&out, 1).await;
    assert_eq!(m[0]["mail_from"], "monserv@plant.test");
    assert_eq!(m[0]["rcpt_tos"], serde_json::json!(["ops@plant.test", "oncall@plant.test"]));
    assert_eq!((m[0]["login"].as_str(), m[0]["tls"].as_bool()), (Some("monserv@plant.test"), Some(true)));
    assert_eq!(m[0]["subject"], format!("[ALERT] {host} memory high"));
    assert_eq!(m[0]["content_type"], "text/plain; charset=utf-8");
    let body = m[0]["body"].as_str().unwrap().replace("\r\n", "\n");
    assert!(!body.contains('\r'), "text lines end in CRLF, nothing else");
    assert!(body.starts_with("Memory used ") && body.contains("\nHost: local\nState: ALERT\nTime: 20"), "{body}");
    std::fs::write(rules.path().join("threshold.toml"), format!("memory_percent = 99.9\n{QUIET}")).unwrap();
    let m = wait_mails(&out, 2).await;
    assert_eq!(m[1]["subject"], format!("[RECOVERED] {host} memory"));
    assert!(m[1]["body"].as_str().unwrap().contains("State: RECOVERED"));
    let s = sink_status(d.addr, "email").await;
    assert_eq!((s["delivered"].as_u64(), s["failed"].as_u64()), (Some(2), Some(0)), "{s:#}");
    assert!(d.shutdown().await);
}

/// Implicit TLS (port 465's mode, here on a free port), and a server without
/// STARTTLS is refused rather than sent the password in clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_implicit_tls_and_no_downgrade() {
    let ca = TestCa::new();
    let out = ca.dir.path().join("mails.jsonl");
    let (_smtp, port) = smtp_server("implicit", &ca, &out);
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(rules.path().join("threshold.toml"), format!("memory_percent = 0.5\n{QUIET}")).unwrap();
    let d = TestDaemon::start(&["local".into()], &email_config(rules.path(), port, &ca, "implicit")).await;
    let m = wait_mails(&out, 1).await;
    assert_eq!((m[0]["tls"].as_bool(), m[0]["login"].as_str()), (Some(true), Some("monserv@plant.test")));
    assert!(d.shutdown().await);

    let plain_out = ca.dir.path().join("plain.jsonl");
    let (_plain, port) = smtp_server("plain", &ca, &plain_out);
    let d = TestDaemon::start(&["local".into()], &email_config(rules.path(), port, &ca, "starttls")).await;
    let start = Instant::now();
    let s = loop {
        let s = sink_status(d.addr, "email").await;
        if s["failed"].as_u64() >= Some(1) {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{s:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(s["last_error"].as_str().unwrap().contains("does not offer STARTTLS"), "{s:#}");
    assert!(mails(&plain_out).is_empty());
    assert!(!s.to_string().contains("smtp-secret-pw"));
    assert!(d.shutdown().await);
}

/// Alerts forwarded to a real Alertmanager show there (its own v2 API) with
/// monserv's labels, and disappear when they recover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_receives_and_resolves_forwarded_alerts() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("am.yml"), "route:\n  receiver: 'null'\nreceivers:\n  - name: 'null'\n").unwrap();
    let port = free_port();
    let mut child = Command::new("prometheus-alertmanager")
        .arg(format!("--config.file={}", dir.path().join("am.yml").display()))
        .arg(format!("--storage.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus-alertmanager (tests/run.sh installs it)");
    wait_port(port, &mut child, "alertmanager");
    let _am = Peer(child);
    let am: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(rules.path().join("threshold.toml"), format!("memory_percent = 0.5\n{QUIET}")).unwrap();
    let extra = format!(
        "poll_interval_seconds = 0.3\nauth_token = \"peers-token-1\"\n[rules]\ndir = {:?}\n[notify.alertmanager]\nurl = \"http://{am}\"\n",
        rules.path().display().to_string()
    );
    let d = TestDaemon::start(&["local".into()], &extra).await;
    let ours = |alerts: &Value| -> Vec<Value> {
        alerts
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["labels"]["source"] == "monserv" && a["labels"]["key"] == "local/mem")
            .cloned()
            .collect()
    };
    let start = Instant::now();
    let alert = loop {
        let (_, body) = support::http_get(am, "/api/v2/alerts", &[]).await;
        if let Some(a) = ours(&serde_json::from_str(&body).unwrap_or(Value::Null)).pop() {
            break a;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "not in Alertmanager: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let host = support::machine_hostname();
    assert_eq!(alert["labels"]["alertname"], "threshold");
    assert_eq!(alert["labels"]["host"], "local");
    assert_eq!(alert["annotations"]["subject"], format!("[ALERT] {host} memory high"));
    assert_eq!(alert["status"]["state"], "active");
    std::fs::write(rules.path().join("threshold.toml"), format!("memory_percent = 99.9\n{QUIET}")).unwrap();
    let start = Instant::now();
    loop {
        let (_, body) = support::http_get(am, "/api/v2/alerts?active=true", &[]).await;
        if ours(&serde_json::from_str(&body).unwrap_or(Value::Null)).is_empty() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "never resolved: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let s = sink_status(d.addr, "alertmanager").await;
    assert_eq!((s["delivered"].as_u64(), s["failed"].as_u64()), (Some(2), Some(0)), "{s:#}");
    assert!(d.shutdown().await);
}

fn tansu() -> String {
    let path = std::env::var("MONSERV_TEST_TANSU").unwrap_or_else(|_| "/opt/monserv-test-tools/tansu/bin/tansu".into());
    assert!(Path::new(&path).is_file(), "no tansu broker at {path}: tests/run.sh builds it (MONSERV_TEST_TANSU)");
    path
}

fn kafka_broker(port: u16) -> Peer {
    let url = format!("tcp://127.0.0.1:{port}");
    let mut child = Command::new(tansu())
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            "memory://tansu/",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_port(port, &mut child, "tansu");
    let out = Command::new(tansu())
        .args(["topic", "create", "plant-alerts", "--partitions", "3", "--broker", &url])
        .output()
        .unwrap();
    assert!(out.status.success(), "topic create: {}", String::from_utf8_lossy(&out.stderr));
    Peer(child)
}

/// Read `count` records back with kafka-python, a real consumer (it checks the CRC).
fn kafka_records(port: u16, count: usize) -> Vec<Value> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/kafka_read.py");
    let out = Command::new("python3")
        .arg(script)
        .args(["--bootstrap", &format!("127.0.0.1:{port}"), "--topic", "plant-alerts", "--count", &count.to_string()])
        .output()
        .expect("python3 with kafka-python (tests/run.sh installs it)");
    assert!(out.status.success(), "kafka_read: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The Go payload on a real Kafka-protocol broker, read back by a real consumer; the
/// broker goes away and comes back, and the queued recovery follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_gets_the_go_payload_and_survives_a_broker_restart() {
    let port = free_port();
    let broker = kafka_broker(port);
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(rules.path().join("threshold.toml"), format!("memory_percent = 0.5\n{QUIET}")).unwrap();
    let extra = format!(
        "poll_interval_seconds = 0.3\nauth_token = \"peers-token-1\"\n[rules]\ndir = {:?}\n[notify.kafka]\n\
         brokers = \"127.0.0.1:{port}\"\ntopic = \"plant-alerts\"\nclient_id = \"gw-7\"\n\
         [notify.kafka.payload]\nid_rtu = \"RTU-7\"\nchannel = 9\n[notify.kafka.jenis]\nmem_server = \"MEM_SRV\"\n",
        rules.path().display().to_string()
    );
    let d = TestDaemon::start(&["local".into()], &extra).await;
    let start = Instant::now();
    while sink_status(d.addr, "kafka").await["delivered"] != 1 {
        assert!(start.elapsed() < Duration::from_secs(30), "{:#}", sink_status(d.addr, "kafka").await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let host = support::machine_hostname();
    let first = kafka_records(port, 1);
    let r = &first[0];
    assert_eq!(r["key"], "local/mem");
    let v = &r["value"];
    let subject = format!("[ALERT] {host} memory high");
    assert_eq!(v["subject"], subject);
    assert_eq!(v["tag"], subject.replace(' ', "").to_uppercase());
    assert_eq!(
        (v["id_rtu"].as_str(), v["channel"].as_i64(), v["jenis"].as_str()),
        (Some("RTU-7"), Some(9), Some("MEM_SRV"))
    );
    assert_eq!(
        (v["protocol"].as_str(), v["action"].as_str(), v["type"].as_str()),
        (Some("TCP"), Some("SPONTANEUS"), Some("GROUP10_VAR2"))
    );
    assert_eq!(
        (v["alert_type"].as_str(), v["value"].to_string().as_str(), v["general_action"].as_i64()),
        (Some("alert"), "1", Some(1))
    );
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    assert!((now_ms - v["time"].as_i64().unwrap()).abs() < 120_000, "time in ms: {v}");
    // The broker goes away; the recovery waits in the queue.
    drop(broker);
    std::fs::write(rules.path().join("threshold.toml"), format!("memory_percent = 99.9\n{QUIET}")).unwrap();
    let start = Instant::now();
    loop {
        let s = sink_status(d.addr, "kafka").await;
        if s["retrying"] == true && s["queued"] == 1 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{s:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _broker = kafka_broker(port);
    let again = kafka_records(port, 1);
    assert_eq!(
        (again[0]["key"].as_str(), again[0]["value"]["alert_type"].as_str()),
        (Some("local/mem"), Some("recovery"))
    );
    assert_eq!(again[0]["partition"], r["partition"], "one key, one partition: order per key holds");
    let s = sink_status(d.addr, "kafka").await;
    assert_eq!((s["delivered"].as_u64(), s["failed"].as_u64()), (Some(2), Some(0)), "{s:#}");
    assert!(d.shutdown().await);
}

/// `KAFKA_TLS_ENABLE`: the broker behind a TLS terminator (socat with a plant CA's
/// certificate, advertised as the broker's address), as plants run it in front of
/// brokers without TLS; monserv verifies the certificate and produces through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_over_tls_verifies_the_broker() {
    let ca = TestCa::new();
    let (plain, tls_port) = (free_port(), free_port());
    let url = format!("tcp://127.0.0.1:{plain}");
    let advertised = format!("tcp://localhost:{tls_port}");
    let mut child = Command::new(tansu())
        .args(["broker", "--listener-url", &url, "--advertised-listener-url", &advertised])
        .args(["--storage-engine", "memory://tansu/"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_port(plain, &mut child, "tansu");
    let _broker = Peer(child);
    let out = Command::new(tansu()).args(["topic", "create", "plant-alerts", "--broker", &url]).output().unwrap();
    assert!(out.status.success(), "topic create: {}", String::from_utf8_lossy(&out.stderr));
    let listen = format!(
        "OPENSSL-LISTEN:{tls_port},bind=127.0.0.1,reuseaddr,fork,verify=0,cert={},key={}",
        ca.cert.display(),
        ca.key.display()
    );
    let mut child = Command::new("socat")
        .args([listen.as_str(), &format!("TCP:127.0.0.1:{plain}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("socat (tests/run.sh installs it)");
    wait_port(tls_port, &mut child, "socat");
    let _terminator = Peer(child);
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(rules.path().join("threshold.toml"), format!("memory_percent = 0.5\n{QUIET}")).unwrap();
    let extra = format!(
        "poll_interval_seconds = 0.3\nauth_token = \"peers-token-1\"\n[rules]\ndir = {:?}\n[notify.kafka]\n\
         brokers = \"localhost:{tls_port}\"\ntopic = \"plant-alerts\"\ntls = true\nca_file = {:?}\n",
        rules.path().display().to_string(),
        ca.ca.display().to_string()
    );
    let d = TestDaemon::start(&["local".into()], &extra).await;
    let start = Instant::now();
    while sink_status(d.addr, "kafka").await["delivered"] != 1 {
        assert!(start.elapsed() < Duration::from_secs(30), "{:#}", sink_status(d.addr, "kafka").await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(d.shutdown().await);
    // A real consumer reads it back over the same TLS hop.
    let out = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/kafka_read.py"))
        .args(["--bootstrap", &format!("localhost:{tls_port}"), "--topic", "plant-alerts", "--count", "1"])
        .args(["--cafile", ca.ca.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "kafka_read over TLS: {}", String::from_utf8_lossy(&out.stderr));
    let record: Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!((record["key"].as_str(), record["value"]["alert_type"].as_str()), (Some("local/mem"), Some("alert")));
    // Without the CA the same broker is refused.
    let untrusted = extra.replace(&format!("ca_file = {:?}\n", ca.ca.display().to_string()), "");
    let d = TestDaemon::start(&["local".into()], &untrusted).await;
    let start = Instant::now();
    loop {
        let s = sink_status(d.addr, "kafka").await;
        if s["retrying"] == true {
            assert!(s["last_error"].as_str().unwrap_or_default().contains("certificate"), "{s:#}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{s:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sink_status(d.addr, "kafka").await["delivered"], 0);
    assert!(d.shutdown().await);
}
