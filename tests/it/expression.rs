//! Issue #15: writing a rule. Expression rules (a `when` in a settings file, run by
//! the built-in expression component in the sandbox) against real hosts, their
//! errors in the daemon, over REST and in the CLI; rule test files; and a rule
//! scaffolded, built and loaded from outside the checkout.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{self, BusyBoxHost, Sshd, TestDaemon, Ws};

const BIN: &str = env!("CARGO_BIN_EXE_monserv");
/// Keep the built-in rule quiet: only the expression rules under test alert.
const QUIET_THRESHOLDS: &str =
    "[thresholds]\ndisk_percent = 100\ncpu_percent = 100\nproc_ram_percent = 100\nmemory_percent = 100";

/// The next alert message, with the latest metrics before it.
async fn next_alert(ws: &mut Ws, last: &mut Value, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Ok(msg) = tokio::time::timeout(left, support::next_json(ws, left + Duration::from_millis(5))).await else {
            break;
        };
        match msg["type"].as_str() {
            Some("metrics_update") => *last = msg["data"].clone(),
            Some("alert") => return msg,
            _ => {}
        }
    }
    panic!("no alert within {timeout:?}");
}

fn find<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list.as_array().and_then(|l| l.iter().find(|r| r["name"] == name))
}

/// The issue's done-when: "root disk above X and memory above Y for N" is a 3-line
/// settings file; it alerts once per host after `for`, with the values it saw, and
/// recovers once, on an OpenSSH host and a BusyBox host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_line_expression_rule_alerts_and_recovers_on_real_hosts() {
    let sshd = Sshd::start();
    let bb = BusyBoxHost::start("bb-expr-01");
    let d = TestDaemon::start(
        &[sshd.url_password(), bb.url()],
        &format!("poll_interval_seconds = 0.4\n{QUIET_THRESHOLDS}"),
    )
    .await;
    let mut ws = d.connect().await;
    let host = support::machine_hostname();
    let bb_key = format!("ssh://scada:***@127.0.0.1:{}", bb.port);
    let rules = d.rules_dir();
    let condition = r#"disk("/").used_percent > 1 and memory.used_percent > 0.5"#;
    let written = Instant::now();
    support::write_atomically(
        &rules.join("disk-mem.toml"),
        format!("# root disk and memory\nwhen = '{condition}'\nfor = \"2s\"\n").as_bytes(),
    );
    let mut last = Value::Null;
    let mut alerted = Vec::new();
    while alerted.len() < 2 {
        let alert = next_alert(&mut ws, &mut last, Duration::from_secs(20)).await;
        assert_eq!(alert["alert_type"], "alert", "{alert}");
        // Held for `for`: not before 2 s of the condition holding.
        assert!(written.elapsed() >= Duration::from_secs(2), "fired before `for` passed: {alert}");
        let name =
            if alert["subject"] == format!("[ALERT] {host}: {condition}") { host.clone() } else { "bb-expr-01".into() };
        assert_eq!(alert["subject"], format!("[ALERT] {name}: {condition}"));
        assert!(!alerted.contains(&name), "{name} alerted twice");
        if name == "bb-expr-01" {
            let m = &last[&bb_key];
            let disk = m["disks"].as_array().unwrap().iter().find(|d| d["mountpoint"] == "/").unwrap();
            let show = |v: f64| if v.fract() == 0.0 { format!("{v:.0}") } else { format!("{v:.1}") };
            assert_eq!(
                alert["message"],
                format!(
                    r#"disk("/").used_percent {}, memory.used_percent {}"#,
                    show(disk["usedPercent"].as_f64().unwrap()),
                    show(m["memory"]["usedPercent"].as_f64().unwrap())
                )
            );
        }
        alerted.push(name);
    }
    let (again, _) = support::collect_for(&mut ws, Duration::from_secs(2)).await;
    assert!(again.is_empty(), "alerts must not repeat: {again:#?}");
    let list = d.rules(None).await;
    let rule = find(&list["rules"], "disk-mem").expect("listed");
    assert_eq!((rule["source"].as_str(), rule["firing"].as_u64()), (Some("expression"), Some(2)), "{rule:#}");
    assert!(rule["warning"].is_null(), "{rule:#}");

    // A condition that no longer holds: one recovery per host.
    let raised = r#"disk("/").used_percent > 1 and memory.used_percent > 99.99"#;
    support::write_atomically(&rules.join("disk-mem.toml"), format!("when = '{raised}'\nfor = \"2s\"\n").as_bytes());
    let mut recovered = Vec::new();
    while recovered.len() < 2 {
        let rec = next_alert(&mut ws, &mut last, Duration::from_secs(20)).await;
        assert_eq!(rec["alert_type"], "recovery", "{rec}");
        let subject = rec["subject"].as_str().unwrap().to_string();
        assert!(
            subject == format!("[RECOVERED] {host}: {raised}")
                || subject == format!("[RECOVERED] bb-expr-01: {raised}"),
            "{subject}"
        );
        assert!(rec["message"].as_str().unwrap().starts_with("back to normal: disk(\"/\").used_percent "), "{rec}");
        assert!(!recovered.contains(&subject), "recovered twice");
        recovered.push(subject);
    }
    assert!(d.shutdown().await);
}

/// Per-disk evaluation with templates, and a mistake in the condition named with the
/// file's line and column: in the daemon's rule list, over REST (422), and in
/// `rule check`. A REST upload of a good file makes a live rule; DELETE removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expression_errors_name_the_line_and_column_everywhere() {
    let d = TestDaemon::start(
        &["local".into()],
        &format!("poll_interval_seconds = 0.3\nauth_token = \"expr-token\"\n{QUIET_THRESHOLDS}"),
    )
    .await;
    let auth = [("Authorization", "Bearer expr-token")];
    let rules = d.rules_dir();
    let bad = "# disks\nwhen = 'disk(\"/\").used_percent > 80 and memory.usd_percent > 90'\n";
    let expected =
        "line 2, column 48 (in when): memory has no field `usd_percent` (fields: total, used, free, used_percent)";
    std::fs::write(rules.join("bad.toml"), bad).unwrap();
    let reason = d.wait_rejected("bad", Some("expr-token")).await;
    assert_eq!(reason, format!("{}: {expected}", rules.join("bad.toml").display()));

    // REST: the same message, nothing saved.
    let (status, body) = support::http_send(d.addr, "PUT", "/api/v1/rules/bad2", &auth, bad.as_bytes()).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains(expected), "{body}");
    assert!(!rules.join("bad2.toml").exists());
    // A TOML syntax error is placed too.
    let (status, body) = support::http_send(d.addr, "PUT", "/api/v1/rules/bad3", &auth, b"when = 'x > 1\n").await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("line 1, column"), "{body}");

    // A good one over REST: per disk, with templates; saved and live.
    let good = "when = 'disk.used_percent >= 0'\neach = \"disk\"\nsubject = '[ALERT] {hostname} disk {disk.mountpoint} at {disk.used_percent}%'\n";
    let mut ws = support::connect_retry(&format!("{}?token=expr-token", d.ws_url())).await;
    let (status, body) = support::http_send(d.addr, "PUT", "/api/v1/rules/disks", &auth, good.as_bytes()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(std::fs::read_to_string(rules.join("disks.toml")).unwrap(), good);
    let mut last = Value::Null;
    let alert = next_alert(&mut ws, &mut last, Duration::from_secs(20)).await;
    let subject = alert["subject"].as_str().unwrap();
    let host = support::machine_hostname();
    assert!(subject.starts_with(&format!("[ALERT] {host} disk /")) && subject.ends_with('%'), "{subject}");
    let list = d.rules(Some("expr-token")).await;
    assert_eq!(find(&list["rules"], "disks").unwrap()["source"], "expression");
    let (status, body) = support::http_send(d.addr, "DELETE", "/api/v1/rules/disks", &auth, b"").await;
    assert_eq!(status, 200, "{body}");
    assert!(!rules.join("disks.toml").exists(), "an expression rule is its file");
    let list = d.rules(Some("expr-token")).await;
    assert!(find(&list["rules"], "disks").is_none(), "{list:#}");
    // A broken expression rule (never loaded) is its file too: DELETE removes it.
    let (status, body) = support::http_send(d.addr, "DELETE", "/api/v1/rules/bad", &auth, b"").await;
    assert_eq!(status, 200, "{body}");
    assert!(!rules.join("bad.toml").exists());
    // Settings with no rule to apply them to are refused, not saved.
    let (status, body) =
        support::http_send(d.addr, "PUT", "/api/v1/rules/lonely", &auth, b"memory_percent = 5\n").await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("upload lonely.wasm first, or add a `when` condition"), "{body}");
    assert!(!rules.join("lonely.toml").exists());

    // Typed settings: the API shows what each setting accepts; a value outside it is
    // refused with its line before the rule runs, over REST and in the directory.
    let list = d.rules(Some("expr-token")).await;
    let info = &find(&list["rules"], "threshold").unwrap()["info"];
    assert_eq!(info["contract"], "0.3.0");
    let memory = info["config"].as_array().unwrap().iter().find(|k| k["name"] == "memory_percent").unwrap();
    assert_eq!(memory["kind"], serde_json::json!({"type": "number", "min": 0.0, "max": 100.0}));
    let (status, body) =
        support::http_send(d.addr, "PUT", "/api/v1/rules/threshold", &auth, b"# memory\nmemory_percent = 150\n").await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("line 2: memory_percent = 150 is out of range: expects a number from 0 to 100"), "{body}");
    assert!(!rules.join("threshold.toml").exists());
    std::fs::write(rules.join("typed.toml"), "when = 'memory.used_percent > 90'\neach = \"disks\"\n").unwrap();
    let reason = d.wait_rejected("typed", Some("expr-token")).await;
    assert_eq!(
        reason,
        format!(
            "{}: line 2: each = \"disks\" is not allowed: expects one of host, disk, process",
            rules.join("typed.toml").display()
        )
    );
    assert!(d.shutdown().await);

    // The CLI, on the same file.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.toml"), bad).unwrap();
    let out = Command::new(BIN).args(["rule", "check"]).arg(dir.path().join("bad.toml")).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.trim_end().ends_with(expected), "{err}");
}

/// `rule test --cases`: steps through the sandbox and the daemon's alert state, with
/// the `for` hold on a simulated clock; a wrong expectation fails with exit 1.
#[test]
fn rule_test_files_check_alerts_over_time() {
    let dir = tempfile::tempdir().unwrap();
    let rule = dir.path().join("disk-mem.toml");
    std::fs::write(&rule, "when = 'disk(\"/\").used_percent > 80 and memory.used_percent > 90'\nfor = \"2m\"\n")
        .unwrap();
    let cases = |expect_at_3: &str| {
        format!(
            r#"interval = "1m"
[[step]]
hosts.web1 = {{ memory = 95, disk = {{ "/" = 85 }} }}
hosts.db = {{ memory = 95, disk = {{ "/" = 50 }} }}
expect = []
[[step]]
expect = []
[[step]]
expect = [{expect_at_3}]
[[step]]
repeat = 2
expect = []
[[step]]
hosts.web1 = {{ memory = 40, disk = {{ "/" = 85 }} }}
expect = [{{ recovery = "web1/when", message = 'back to normal: disk("/").used_percent 85, memory.used_percent 40' }}]
"#
        )
    };
    let file = dir.path().join("cases.toml");
    std::fs::write(&file, cases(r#""alert web1/when""#)).unwrap();
    let out = Command::new(BIN).args(["rule", "test"]).arg(&rule).arg("--cases").arg(&file).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("step 3 (t=120s): ok\n  alert web1/when  [ALERT] web1: "), "{stdout}");
    assert!(stdout.ends_with("PASS\n"), "{stdout}");
    // Expecting it a step early is a failure, and says what happened instead.
    std::fs::write(&file, cases(r#""alert db/when""#)).unwrap();
    let out = Command::new(BIN).args(["rule", "test"]).arg(&rule).arg("--cases").arg(&file).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("step 3 (t=120s): FAILED: expected alert db/when"), "{stdout}");
    assert!(stdout.contains("    alert web1/when"), "{stdout}");
    assert!(stdout.ends_with("FAIL\n"), "{stdout}");
    // A FIFO where the test file should be is refused at once, not waited on.
    let fifo = dir.path().join("fifo.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let out = Command::new(BIN).args(["rule", "test"]).arg(&rule).arg("--cases").arg(&fifo).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a regular file"), "{out:?}");
}

/// `rule snapshot` captures this machine without a daemon; `rule test --snapshot`
/// runs a rule on it.
#[test]
fn rule_snapshot_feeds_rule_test() {
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("snap.json");
    let out = Command::new(BIN).args(["rule", "snapshot", "--out"]).arg(&snap).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&std::fs::read(&snap).unwrap()).unwrap();
    assert_eq!(v["local"]["hostname"], support::machine_hostname());
    assert_eq!(v["local"]["memory"]["total"].as_u64(), Some(support::machine_mem_total()));
    let rule = dir.path().join("mem.toml");
    std::fs::write(&rule, "when = 'memory.total > 0'\nsubject = '{hostname} has {memory.total} bytes'\n").unwrap();
    let out = Command::new(BIN).args(["rule", "test"]).arg(&rule).arg("--snapshot").arg(&snap).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let line =
        format!("alert    local/when  {} has {} bytes", support::machine_hostname(), support::machine_mem_total());
    assert!(stdout.contains(&line), "{stdout}");
}

/// `rule snapshot --target` polls one SSH host (here the BusyBox one) with the
/// settings of a monserv.toml (its state directory's known_hosts), password masked.
#[test]
fn rule_snapshot_of_a_busybox_target() {
    let bb = BusyBoxHost::start("bb-snap-01");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("monserv.toml");
    std::fs::write(&config, format!("state_dir = {:?}\n", dir.path().display().to_string())).unwrap();
    let out =
        Command::new(BIN).args(["rule", "snapshot", "-c"]).arg(&config).args(["--target", &bb.url()]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_str(&stdout).unwrap();
    let key = format!("ssh://scada:***@127.0.0.1:{}", bb.port);
    assert_eq!(v[&key]["hostname"], "bb-snap-01", "{v:#}");
    assert_eq!(v[&key]["status"], "online");
    assert!(v[&key]["memory"]["total"].as_u64().unwrap() > 0);
    assert!(!stdout.contains(&bb.url()), "the password must not be printed");
    assert!(dir.path().join("known_hosts").is_file(), "the host key is pinned where the config says");
}

/// `rule new` writes a standalone crate outside the checkout; `rule build` makes a
/// component; its own test file passes; the daemon loads it and it alerts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scaffolded_rule_builds_tests_and_loads_outside_the_checkout() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN).args(["rule", "new", "mem-watch"]).current_dir(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let crate_dir = dir.path().join("mem-watch");
    assert!(crate_dir.join("sdk/wit/rules.wit").is_file());
    // A name that is not a rule name is refused before anything is written.
    let out = Command::new(BIN).args(["rule", "new", "Mem.Watch"]).current_dir(dir.path()).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("lowercase"));

    let out = Command::new(BIN)
        .args(["rule", "build"])
        .current_dir(&crate_dir)
        .env("CARGO_TARGET_DIR", dir.path().join("target"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("wrote"), "{}", String::from_utf8_lossy(&out.stdout));
    // Cargo's progress is shown, for the build tool and for the rule: no silent minute.
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(
        progress.contains("Compiling monserv-rule-build") && progress.contains("Compiling mem-watch"),
        "{progress}"
    );
    let wasm = crate_dir.join("mem-watch.wasm");
    let out = Command::new(BIN)
        .args(["rule", "test"])
        .arg(&wasm)
        .args(["--cases", "tests/cases.toml"])
        .current_dir(&crate_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let out = Command::new(BIN).args(["rule", "check"]).arg(&wasm).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("OK, rule mem-watch") && stdout.contains("contract 0.3.0"), "{stdout}");
    let row = stdout.lines().find(|l| l.starts_with("memory_percent ")).unwrap_or_else(|| panic!("{stdout}"));
    let cells: Vec<&str> = row.split("  ").map(str::trim).filter(|c| !c.is_empty()).collect();
    assert_eq!(cells[..3], ["memory_percent", "a number from 0 to 100", "90"], "{stdout}");

    // Hot-loaded by the daemon, with a settings file; it alerts on this machine.
    let d = TestDaemon::start(&["local".into()], &format!("poll_interval_seconds = 0.3\n{QUIET_THRESHOLDS}")).await;
    let mut ws = d.connect().await;
    std::fs::write(d.rules_dir().join("mem-watch.toml"), "memory_percent = 0.1\n").unwrap();
    support::write_atomically(&d.rules_dir().join("mem-watch.wasm"), &std::fs::read(&wasm).unwrap());
    let mut last = Value::Null;
    let alert = next_alert(&mut ws, &mut last, Duration::from_secs(20)).await;
    assert_eq!(alert["subject"], format!("[ALERT] {} memory high", support::machine_hostname()));
    assert!(alert["message"].as_str().unwrap().ends_with("(limit 0.1%)"), "{alert}");
    assert!(d.shutdown().await);
}
