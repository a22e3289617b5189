//! monserv as a Sparkplug B edge node on a real mosquitto, watched by a host
//! application (`tests/peers/sparkplug_host.py`) that decodes every message with the
//! Sparkplug protobuf schema: births and deaths with a matching `bdSeq` (the will on
//! `kill -9`), devices dying and being born with their hosts, `seq` in order,
//! rebirth, alerts, and a primary host that goes offline: nothing until it is back,
//! then the kept rounds as historical data.

use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::hosts::{free_port, wait_port, Peer};
use crate::support::{self, BusyBoxHost};

const BIN: &str = env!("CARGO_BIN_EXE_monserv");
const NODE: &str = "spBv1.0/it/";

struct HostApp {
    _peer: Peer,
    stdin: ChildStdin,
    lines: mpsc::Receiver<Value>,
    /// Every message seen, in order.
    seen: Vec<Value>,
}

impl HostApp {
    fn start(port: u16) -> HostApp {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/sparkplug_host.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 with paho-mqtt, protobuf and grpcio-tools (tests/run.sh installs them)");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            }
        });
        let mut app = HostApp { _peer: Peer(child), stdin, lines, seen: Vec::new() };
        app.wait(Duration::from_secs(60), "host app ready", |v| v["ready"] == true);
        app
    }

    fn command(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
        self.wait(Duration::from_secs(10), line, |v| v.get("done").is_some());
    }

    /// The next message for which `pred` holds (later ones stay queued).
    fn wait(&mut self, timeout: Duration, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Err(_) => {
                    panic!("{what}: not within {timeout:?}; saw {:#?}", &self.seen[self.seen.len().saturating_sub(8)..])
                }
            }
        }
    }

    fn topic(&mut self, topic: &str, timeout: Duration) -> Value {
        let t = topic.to_string();
        self.wait(timeout, topic, move |v| v["topic"] == t.as_str())
    }
}

fn metric<'a>(msg: &'a Value, name: &str) -> &'a Value {
    msg["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("no metric {name} in {msg:#}"))
}

fn monserv(state: &std::path::Path, port: u16, broker: u16, targets: &str, primary: Option<&str>) -> Peer {
    let primary = primary.map(|p| format!("primary_host_id = \"{p}\"\n")).unwrap_or_default();
    let sparkplug = format!(
        "broker = \"mqtt://127.0.0.1:{broker}\"\ngroup_id = \"it\"\nedge_node_id = \"gw-it\"\nkeep_alive_seconds = 10\n{primary}"
    );
    monserv_with(state, port, targets, &sparkplug)
}

fn monserv_with(state: &std::path::Path, port: u16, targets: &str, sparkplug: &str) -> Peer {
    let config = format!(
        "listen = \"127.0.0.1\"\nport = {port}\npoll_interval_seconds = 0.5\nstate_dir = {:?}\ntargets = [{targets}]\n\
         [export.sparkplug]\n{sparkplug}",
        state.display().to_string()
    );
    std::fs::write(state.join("monserv.toml"), config).unwrap();
    let mut child = Command::new(BIN)
        .args(["--config", state.join("monserv.toml").to_str().unwrap()])
        .env_remove("SERVERS")
        .env("MONSERV_LOG", "warn")
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(state.join("monserv.log")).unwrap())
        .spawn()
        .unwrap();
    wait_port(port, &mut child, "monserv");
    Peer(child)
}

#[test]
fn sparkplug_edge_node_on_a_real_broker() {
    let dir = tempfile::tempdir().unwrap();
    let broker = free_port();
    std::fs::write(dir.path().join("mosquitto.conf"), format!("listener {broker} 127.0.0.1\nallow_anonymous true\n"))
        .unwrap();
    let mut mosquitto = Command::new("mosquitto")
        .args(["-c", dir.path().join("mosquitto.conf").to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto (tests/run.sh installs it)");
    wait_port(broker, &mut mosquitto, "mosquitto");
    let _mosquitto = Peer(mosquitto);
    let mut app = HostApp::start(broker);

    let mut bb = BusyBoxHost::start("bb-spb-01");
    let bb_device = format!("127.0.0.1:{}", bb.port);
    let state = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(state.path().join("rules")).unwrap();
    std::fs::write(
        state.path().join("rules/threshold.toml"),
        "memory_percent = 100\ndisk_percent = 100\ncpu_percent = 100\nproc_ram_percent = 100\n",
    )
    .unwrap();
    let targets = format!("\"local\", {:?}", bb.url());
    let monserv_run = monserv(state.path(), free_port(), broker, &targets, None);
    let t = Duration::from_secs(30);

    // NBIRTH: seq 0, bdSeq, the rebirth control.
    let nbirth = app.topic(&format!("{NODE}NBIRTH/gw-it"), t);
    assert_eq!(nbirth["seq"], 0);
    let bd_seq = metric(&nbirth, "bdSeq")["value"].as_u64().unwrap();
    assert_eq!(metric(&nbirth, "bdSeq")["datatype"], 4, "Int64");
    assert_eq!(metric(&nbirth, "Node Control/Rebirth")["value"], false);
    // A DBIRTH per host, every metric named, typed and aliased.
    let dbirth = app.topic(&format!("{NODE}DBIRTH/gw-it/{bb_device}"), t);
    let total = metric(&dbirth, "Memory/Total");
    assert_eq!((total["datatype"].as_u64(), total["value"].as_u64()), (Some(8), Some(support::machine_mem_total())));
    assert_eq!(metric(&dbirth, "Hostname")["value"], "bb-spb-01");
    let aliases: Vec<u64> =
        dbirth["metrics"].as_array().unwrap().iter().map(|m| m["alias"].as_u64().unwrap()).collect();
    // Then data by exception: aliases only, no names.
    let ddata = app.topic(&format!("{NODE}DDATA/gw-it/local"), t);
    assert!(
        ddata["metrics"].as_array().unwrap().iter().all(|m| m["name"].is_null() && m["alias"].is_u64()),
        "{ddata:#}"
    );
    let bb_data = app.topic(&format!("{NODE}DDATA/gw-it/{bb_device}"), t);
    assert!(bb_data["metrics"].as_array().unwrap().iter().all(|m| aliases.contains(&m["alias"].as_u64().unwrap())));

    // A host going offline is a DDEATH.
    bb.kill();
    app.topic(&format!("{NODE}DDEATH/gw-it/{bb_device}"), t);
    // Rebirth keeps the bdSeq and restarts seq at 0.
    app.command("rebirth it gw-it");
    let reborn = app.topic(&format!("{NODE}NBIRTH/gw-it"), t);
    assert_eq!((reborn["seq"].as_u64(), metric(&reborn, "bdSeq")["value"].as_u64()), (Some(0), Some(bd_seq)));
    app.topic(&format!("{NODE}DBIRTH/gw-it/local"), t);
    // An alert is published for the SCADA side.
    std::fs::write(
        state.path().join("rules/threshold.toml"),
        "memory_percent = 0.5\ndisk_percent = 100\ncpu_percent = 100\nproc_ram_percent = 100\n",
    )
    .unwrap();
    let ndata = app.wait(t, "alert NDATA", |v| v["topic"] == format!("{NODE}NDATA/gw-it").as_str());
    let last = metric(&ndata, "Alerts/Last")["value"].as_str().unwrap().to_string();
    assert!(last.contains("memory high") && last.contains("\"alert_type\":\"alert\""), "{last}");

    // seq: every message of the node after NBIRTH counts up by one, wrapping at 255.
    let node_messages: Vec<&Value> = app
        .seen
        .iter()
        .filter(|v| v["topic"].as_str().is_some_and(|t| t.contains("/gw-it") && !t.contains("/NCMD/")))
        .collect();
    let mut previous: Option<u64> = None;
    for m in &node_messages {
        let seq = m["seq"].as_u64().unwrap();
        if m["topic"].as_str().unwrap().contains("/NBIRTH/") {
            assert_eq!(seq, 0);
        } else if let Some(p) = previous {
            assert_eq!(seq, (p + 1) % 256, "{m:#}");
        }
        previous = Some(seq);
    }

    // kill -9: the broker publishes the will, NDEATH with this session's bdSeq.
    drop(monserv_run);
    let death = app.topic(&format!("{NODE}NDEATH/gw-it"), t);
    assert_eq!(metric(&death, "bdSeq")["value"].as_u64(), Some(bd_seq));
    assert!(death["seq"].is_null(), "NDEATH has no seq");

    // A primary host that is offline: the next session publishes nothing until it
    // is back, then births (the next bdSeq) and the kept rounds, flagged historical.
    app.command("state scada offline");
    let monserv_run = monserv(state.path(), free_port(), broker, "\"local\"", Some("scada"));
    std::thread::sleep(Duration::from_secs(3));
    while let Ok(v) = app.lines.try_recv() {
        assert!(
            !v["topic"].as_str().is_some_and(|t| t.contains("/gw-it") && !t.contains("/NCMD/")),
            "published while the primary host was offline: {v:#}"
        );
    }
    app.command("state scada online");
    let nbirth = app.topic(&format!("{NODE}NBIRTH/gw-it"), t);
    assert_eq!(
        metric(&nbirth, "bdSeq")["value"].as_u64(),
        Some((bd_seq + 1) % 256),
        "bdSeq persisted across the restart"
    );
    app.topic(&format!("{NODE}DBIRTH/gw-it/local"), t);
    let historical = app.topic(&format!("{NODE}DDATA/gw-it/local"), t);
    let flags: Vec<bool> =
        historical["metrics"].as_array().unwrap().iter().map(|m| m["historical"].as_bool().unwrap()).collect();
    assert!(!flags.is_empty() && flags.iter().all(|h| *h), "{historical:#}");
    let first_ts = historical["metrics"][0]["timestamp"].as_u64().unwrap();
    assert!(first_ts < nbirth["timestamp"].as_u64().unwrap(), "historical data carries the time it was collected");
    // The primary host going offline again: an NDEATH, then silence.
    app.command("state scada offline");
    let death = app.topic(&format!("{NODE}NDEATH/gw-it"), t);
    assert_eq!(metric(&death, "bdSeq")["value"].as_u64(), Some((bd_seq + 1) % 256));
    drop(monserv_run);
}

fn start_mosquitto(dir: &std::path::Path, config: &str, ports: &[u16]) -> Peer {
    std::fs::write(dir.join("mosquitto.conf"), config).unwrap();
    let mut child = Command::new("mosquitto")
        .args(["-c", dir.join("mosquitto.conf").to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto (tests/run.sh installs it)");
    for port in ports {
        wait_port(*port, &mut child, "mosquitto");
    }
    Peer(child)
}

/// MQTT over TLS with a client certificate and a password: births arrive; a wrong
/// password gets the node nowhere.
#[test]
fn sparkplug_over_tls_with_a_client_certificate_and_password() {
    use std::os::unix::fs::PermissionsExt;
    let ca = crate::support::receiver::TestCa::new();
    let (client_cert, client_key) = ca.issue("client", "gw-tls", "extendedKeyUsage=clientAuth\n");
    let dir = ca.dir.path();
    let passwords = dir.join("passwords");
    let status = Command::new("mosquitto_passwd").arg("-b").arg("-c").arg(&passwords).args(["gw", "s3cret"]).status();
    assert!(status.is_ok_and(|s| s.success()), "mosquitto_passwd");
    // mosquitto drops to its own user when started as root: let it read the files.
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let _ = std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o644));
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (plain, tls) = (free_port(), free_port());
    let config = format!(
        "per_listener_settings true\nlistener {plain} 127.0.0.1\nallow_anonymous true\n\
         listener {tls} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\nallow_anonymous false\npassword_file {}\n",
        ca.ca.display(),
        ca.cert.display(),
        ca.key.display(),
        passwords.display()
    );
    let _mosquitto = start_mosquitto(dir, &config, &[plain, tls]);
    let mut app = HostApp::start(plain);
    let sparkplug = |node: &str, password: &str| {
        format!(
            "broker = \"mqtts://127.0.0.1:{tls}\"\ngroup_id = \"it\"\nedge_node_id = \"{node}\"\nca_file = {:?}\n\
             client_cert = {:?}\nclient_key = {:?}\nusername = \"gw\"\npassword = \"{password}\"\n",
            ca.ca.display().to_string(),
            client_cert.display().to_string(),
            client_key.display().to_string()
        )
    };
    let state = tempfile::tempdir().unwrap();
    let good = monserv_with(state.path(), free_port(), "\"local\"", &sparkplug("gw-tls", "s3cret"));
    let nbirth = app.topic(&format!("{NODE}NBIRTH/gw-tls"), Duration::from_secs(30));
    assert_eq!(nbirth["seq"], 0);
    app.topic(&format!("{NODE}DBIRTH/gw-tls/local"), Duration::from_secs(30));
    drop(good);
    let state = tempfile::tempdir().unwrap();
    let _bad = monserv_with(state.path(), free_port(), "\"local\"", &sparkplug("gw-badpw", "wrong"));
    std::thread::sleep(Duration::from_secs(4));
    while let Ok(v) = app.lines.try_recv() {
        assert!(!v["topic"].as_str().is_some_and(|t| t.contains("gw-badpw")), "a wrong password was let in: {v:#}");
    }
    // It says why, once, without the password.
    let log = std::fs::read_to_string(state.path().join("monserv.log")).unwrap();
    assert_eq!(log.matches("sparkplug session lost").count(), 1, "{log}");
    assert!(log.contains("the broker refused the connection: "), "{log}");
    assert!(!log.contains("wrong"), "the password is not logged: {log}");
}
