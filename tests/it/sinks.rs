//! Slack, Telegram and webhook sinks over real TLS (a test CA standing in for a plant
//! CA), configured with the Go MonServ's environment names; silences; storm digests;
//! every documented route answered. Receivers are real HTTP(S) servers on loopback.
//! Needs no root.

use std::collections::HashSet;
use std::io::Read;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::hosts::{closed_ports, free_port};
use crate::support::receiver::{Receiver, TestCa};
use crate::support::{self, TestDaemon};

const QUIET: &str = "disk_percent = 100\ncpu_percent = 100\nproc_ram_percent = 100\n";
const BIN: &str = env!("CARGO_BIN_EXE_monserv");
const TOKEN: &str = "sinks-token-1";
const AUTH: [(&str, &str); 1] = [("Authorization", "Bearer sinks-token-1")];

async fn sink_status(addr: SocketAddr, name: &str) -> Value {
    support::sink_status(addr, TOKEN, name).await
}

/// The binary with Go environment names; its log goes to a file the test reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_and_telegram_over_tls_from_go_environment_names() {
    let ca = TestCa::new();
    let slack = Receiver::start_with(0, &[], Some(ca.acceptor()), "ok").await;
    // Telegram refuses the first message (as it does for a chat the bot is not in).
    let refusal = r#"{"ok":false,"error_code":400,"description":"Bad Request: chat not found"}"#;
    let telegram = Receiver::start_with(0, &[400], Some(ca.acceptor()), refusal).await;
    let state = tempfile::tempdir().unwrap();
    let rules = state.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(rules.join("threshold.toml"), format!("memory_percent = 0.5\n{QUIET}")).unwrap();
    let port = free_port();
    let config = format!(
        "listen = \"127.0.0.1\"\nport = {port}\nstate_dir = {:?}\npoll_interval_seconds = 0.3\n[rules]\ndir = {:?}\n\
         [notify]\nca_file = {:?}\n",
        state.path().display().to_string(),
        rules.display().to_string(),
        ca.ca.display().to_string()
    );
    std::fs::write(state.path().join("monserv.toml"), config).unwrap();
    let log = state.path().join("monserv.log");
    let slack_url = format!("https://localhost:{}/services/T000/B000/slack-secret-path", slack.addr.port());
    let mut child = std::process::Command::new(BIN)
        .args(["--config", state.path().join("monserv.toml").to_str().unwrap()])
        .env_remove("SERVERS")
        .env("MONSERV_LOG", "debug")
        .env("MONSERV_AUTH_TOKEN", TOKEN)
        .env("SLACK_WEBHOOK_URL", &slack_url)
        .env("TELEGRAM_BOT_TOKEN", "123456:tg-secret-token")
        .env("TELEGRAM_CHAT_ID", "-100123")
        .env("TELEGRAM_API_URL", format!("https://127.0.0.1:{}", telegram.addr.port()))
        .stdin(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let host = support::machine_hostname();
    slack.wait_seen(Duration::from_secs(30), |s| !s.is_empty()).await;
    telegram.wait_seen(Duration::from_secs(30), |s| !s.is_empty()).await;
    let s = slack.seen()[0].clone();
    assert_eq!(s.path, "/services/T000/B000/slack-secret-path");
    let text = s.body["text"].as_str().unwrap();
    assert!(text.starts_with(&format!("*[ALERT] {host} memory high*\nMemory used ")), "{text}");
    assert!(text.contains("Host: local\nState: ALERT\n"), "{text}");
    let t = telegram.seen()[0].clone();
    assert_eq!(t.path, "/bot123456:tg-secret-token/sendMessage");
    assert_eq!(t.body["chat_id"], -100123);
    assert!(t.body["text"].as_str().unwrap().starts_with(&format!("[ALERT] {host} memory high\nMemory used ")));
    // The refusal is permanent (400), shown with Telegram's reason, token masked.
    let start = Instant::now();
    let tg = loop {
        let tg = sink_status(addr, "telegram").await;
        if tg["failed"] == 1 {
            break tg;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{tg:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let error = tg["last_error"].as_str().unwrap();
    assert!(error.contains("chat not found") && error.contains("/bot***/sendMessage"), "{error}");
    // The condition ends: both get the recovery.
    std::fs::write(rules.join("threshold.toml"), format!("memory_percent = 99.9\n{QUIET}")).unwrap();
    slack.wait_seen(Duration::from_secs(30), |s| s.len() == 2).await;
    telegram.wait_seen(Duration::from_secs(30), |s| s.len() == 2).await;
    assert!(slack.seen()[1].body["text"].as_str().unwrap().starts_with(&format!("*[RECOVERED] {host} memory")));
    assert!(telegram.seen()[1].body["text"].as_str().unwrap().starts_with(&format!("[RECOVERED] {host} memory")));
    let (_, api) = support::http_get(addr, "/api/v1/notify", &AUTH).await;
    let printed = std::process::Command::new(BIN)
        .args(["--config", state.path().join("monserv.toml").to_str().unwrap(), "--print-config"])
        .env("SLACK_WEBHOOK_URL", &slack_url)
        .env("TELEGRAM_BOT_TOKEN", "123456:tg-secret-token")
        .env("TELEGRAM_CHAT_ID", "-100123")
        .output()
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let mut logged = String::new();
    std::fs::File::open(&log).unwrap().read_to_string(&mut logged).unwrap();
    let printed = String::from_utf8_lossy(&printed.stdout).into_owned();
    assert!(printed.contains("[notify.telegram]") && printed.contains("chat_id = \"-100123\""), "{printed}");
    for secret in ["slack-secret-path", "tg-secret-token"] {
        assert!(!logged.contains(secret), "{secret} in the log:\n{logged}");
        assert!(!api.contains(secret), "{secret} in the API: {api}");
        assert!(!printed.contains(secret), "{secret} in --print-config:\n{printed}");
    }
}

/// A certificate from an unknown CA is refused (retried, nothing sent); with the
/// plant CA configured the webhook is delivered over TLS (RSA keys here, ECDSA in the
/// other tests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_tls_trusts_only_the_configured_ca() {
    let ca = TestCa::rsa();
    let hook = Receiver::start_with(0, &[], Some(ca.acceptor()), "{}").await;
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(rules.path().join("threshold.toml"), format!("memory_percent = 0.5\n{QUIET}")).unwrap();
    let base = format!(
        "poll_interval_seconds = 0.3\nauth_token = \"{TOKEN}\"\n[rules]\ndir = {:?}\n[notify.webhook]\nurl = \"https://localhost:{}/hook\"\n",
        rules.path().display().to_string(),
        hook.addr.port()
    );
    let d = TestDaemon::start(&["local".into()], &base).await;
    let start = Instant::now();
    loop {
        let s = sink_status(d.addr, "webhook").await;
        if s["retrying"] == true {
            let e = s["last_error"].as_str().unwrap_or_default();
            assert!(e.contains("certificate") || e.contains("UnknownIssuer"), "{e}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{s:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(hook.seen().is_empty(), "nothing reaches an unverified server");
    assert!(d.shutdown().await);
    let trusted = format!("{base}ca_file = {:?}\n", ca.ca.display().to_string());
    let d = TestDaemon::start(&["local".into()], &trusted).await;
    hook.wait(Duration::from_secs(20), |r| r.iter().any(|(s, k, st)| *s == 200 && k == "local/mem" && st == "firing"))
        .await;
    assert!(d.shutdown().await);
    // Only the loudly named option skips verification.
    let before = hook.seen().len();
    let reckless = format!("{base}danger_accept_invalid_certs = true\n");
    let d = TestDaemon::start(&["local".into()], &reckless).await;
    hook.wait_seen(Duration::from_secs(20), |s| s.len() > before).await;
    assert!(d.shutdown().await);
}

/// A silence on the host holds back the alert (recorded as silenced, not sent);
/// expired, the next alert goes out. Changing silences needs the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silences_hold_back_deliveries_and_are_recorded() {
    let hook = Receiver::start(0, &[]).await;
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(rules.path().join("threshold.toml"), format!("memory_percent = 99.9\n{QUIET}")).unwrap();
    let extra = format!(
        "poll_interval_seconds = 0.3\nauth_token = \"{TOKEN}\"\n[rules]\ndir = {:?}\n[notify.webhook]\nurl = \"http://{}/hook\"\n",
        rules.path().display().to_string(),
        hook.addr
    );
    let d = TestDaemon::start(&["local".into()], &extra).await;
    let new = br#"{"matchers":[{"name":"host","value":"lo*"},{"name":"rule","value":"threshold"}],"duration":"1h","comment":"maintenance"}"#;
    let (status, _) = support::http_send(d.addr, "POST", "/api/v1/silences", &[], new).await;
    assert_eq!(status, 401, "no token, no silence");
    let (status, body) = support::http_send(d.addr, "POST", "/api/v1/silences", &AUTH, new).await;
    assert_eq!(status, 201, "{body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["data"]["id"].as_u64().unwrap();
    let (_, list) = support::http_get(d.addr, "/api/v1/silences", &AUTH).await;
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["data"]["silences"][0]["state"], "active");
    // The alert fires while silenced.
    std::fs::write(rules.path().join("threshold.toml"), format!("memory_percent = 0.5\n{QUIET}")).unwrap();
    let start = Instant::now();
    let history = loop {
        let (_, h) = support::http_get(d.addr, "/api/v1/alerts/history", &AUTH).await;
        let h: Value = serde_json::from_str(&h).unwrap();
        if h["data"]["transitions"].as_array().is_some_and(|t| !t.is_empty()) {
            break h;
        }
        assert!(start.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(history["data"]["transitions"][0]["silenced"], true, "{history:#}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(hook.seen().is_empty(), "a silenced alert is not sent: {:#?}", hook.seen());
    // Expired, the recovery and the next alert go out.
    let (status, body) = support::http_request(d.addr, "DELETE", &format!("/api/v1/silences/{id}"), &AUTH).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["data"]["state"], "expired");
    let (status, _) = support::http_request(d.addr, "DELETE", "/api/v1/silences/999", &AUTH).await;
    assert_eq!(status, 404);
    std::fs::write(rules.path().join("threshold.toml"), format!("memory_percent = 99.9\n{QUIET}")).unwrap();
    hook.wait(Duration::from_secs(20), |r| r.len() == 1).await;
    std::fs::write(rules.path().join("threshold.toml"), format!("memory_percent = 0.5\n{QUIET}")).unwrap();
    hook.wait(Duration::from_secs(20), |r| r.len() == 2).await;
    let states: Vec<String> = hook.requests().into_iter().map(|(_, _, s)| s).collect();
    assert_eq!(states, ["resolved", "firing"]);
    assert!(d.shutdown().await);
}

/// 30 hosts go down at once and the sink takes 2 messages a minute: every alert
/// arrives, grouped into a digest, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_storm_becomes_a_digest_not_a_flood() {
    let hook = Receiver::start(0, &[]).await;
    let ports = closed_ports(30);
    let targets: Vec<String> = ports.iter().map(|p| format!("ssh://plc:pw@127.0.0.1:{p}")).collect();
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(
        rules.path().join("threshold.toml"),
        format!("unreachable_polls = 1\nmemory_percent = 100\n{QUIET}"),
    )
    .unwrap();
    let extra = format!(
        "poll_interval_seconds = 1\nhost_timeout_seconds = 1\nauth_token = \"{TOKEN}\"\n[rules]\ndir = {:?}\n\
         [notify.webhook]\nurl = \"http://{}/hook\"\nmax_per_minute = 2\n",
        rules.path().display().to_string(),
        hook.addr
    );
    let d = TestDaemon::start(&targets, &extra).await;
    let keys = |seen: &[crate::support::receiver::Seen]| -> Vec<String> {
        seen.iter()
            .flat_map(|s| s.body["alerts"].as_array().cloned().unwrap_or_default())
            .map(|a| a["labels"]["key"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    hook.wait_seen(Duration::from_secs(100), |s| keys(s).len() >= targets.len()).await;
    let seen = hook.seen();
    let all = keys(&seen);
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!((all.len(), unique.len()), (targets.len(), targets.len()), "each alert exactly once: {all:?}");
    assert!(seen.len() <= 3, "{} messages for a 2-a-minute sink", seen.len());
    let digest = seen.iter().find(|s| s.body["alerts"].as_array().is_some_and(|a| a.len() > 1)).unwrap();
    assert_eq!(digest.body["status"], "firing");
    let status = sink_status(d.addr, "webhook").await;
    assert_eq!(status["delivered"].as_u64(), Some(targets.len() as u64), "{status:#}");
    assert!(status["digests"].as_u64() >= Some(1), "{status:#}");
    assert!(d.shutdown().await);
}

/// Every route the OpenAPI document lists is served (no router 404 or 405), and the
/// document itself is public.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_is_served() {
    let d = TestDaemon::start(&["local".into()], &format!("auth_token = \"{TOKEN}\"\n")).await;
    let (status, doc) = support::http_get(d.addr, "/api/openapi.json", &[]).await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&doc).unwrap();
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            let concrete = path.replace("{id}", "424242").replace("{name}", "no-such-rule");
            let (status, body) = support::http_send(d.addr, &method.to_uppercase(), &concrete, &AUTH, b"{}").await;
            assert_ne!(status, 405, "{method} {path}: {body}");
            assert!(!(status == 404 && body.contains("\"not found\"")), "{method} {path} is not routed: {body}");
            assert_ne!(status, 0, "{method} {path}");
            checked += 1;
        }
    }
    assert_eq!(checked, monserv::http::openapi::ROUTES.len());
    let (status, body) = support::http_get(d.addr, "/api/v1/servers/metrics", &AUTH).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["success"], true);
    assert!(d.shutdown().await);
}

/// `repeat_interval`: an alert still firing a minute later is sent again, marked a
/// repeat; it is not a new transition (the history has one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_still_firing_is_repeated_after_repeat_interval() {
    let hook = Receiver::start(0, &[]).await;
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(rules.path().join("threshold.toml"), format!("memory_percent = 0.5\n{QUIET}")).unwrap();
    let extra = format!(
        "poll_interval_seconds = 1\nauth_token = \"{TOKEN}\"\n[rules]\ndir = {:?}\n[notify.webhook]\nurl = \"http://{}/hook\"\nrepeat_interval = \"1m\"\n",
        rules.path().display().to_string(),
        hook.addr
    );
    let d = TestDaemon::start(&["local".into()], &extra).await;
    hook.wait_seen(Duration::from_secs(20), |s| s.len() == 1).await;
    let fired = Instant::now();
    // The reminder is due 60 s after the alert; looked for every 30 s.
    hook.wait_seen(Duration::from_secs(120), |s| s.len() == 2).await;
    let waited = fired.elapsed();
    assert!(waited >= Duration::from_secs(55), "repeated after only {waited:?}");
    let seen = hook.seen();
    assert_eq!(seen[1].body["status"], "firing");
    assert_eq!(seen[1].body["alerts"][0]["labels"]["key"], "local/mem");
    assert_eq!(seen[1].body["monserv"]["alert_types"], serde_json::json!(["repeat"]));
    let status = sink_status(d.addr, "webhook").await;
    assert_eq!((status["delivered"].as_u64(), status["repeats"].as_u64()), (Some(1), Some(1)), "{status:#}");
    let (_, h) = support::http_get(d.addr, "/api/v1/alerts/history", &AUTH).await;
    let h: Value = serde_json::from_str(&h).unwrap();
    assert_eq!(h["data"]["transitions"].as_array().unwrap().len(), 1, "a reminder is not a transition");
    assert!(d.shutdown().await);
}

/// One sink down (nothing listens) delays no other: the Alertmanager-format sink gets
/// the alert at once while the webhook's queue waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_is_down_delays_no_other() {
    let up = Receiver::start(0, &[]).await;
    let down = closed_ports(1)[0];
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(rules.path().join("threshold.toml"), format!("memory_percent = 0.5\n{QUIET}")).unwrap();
    let extra = format!(
        "poll_interval_seconds = 0.3\nauth_token = \"{TOKEN}\"\n[rules]\ndir = {:?}\n\
         [notify.webhook]\nurl = \"http://127.0.0.1:{down}/hook\"\n[notify.alertmanager]\nurl = \"http://{}\"\n",
        rules.path().display().to_string(),
        up.addr
    );
    let d = TestDaemon::start(&["local".into()], &extra).await;
    up.wait_seen(Duration::from_secs(10), |s| s.iter().any(|r| r.path == "/api/v2/alerts")).await;
    let am = up.seen().into_iter().find(|r| r.path == "/api/v2/alerts").unwrap();
    assert_eq!(am.body[0]["labels"]["key"], "local/mem");
    let hook = sink_status(d.addr, "webhook").await;
    assert_eq!((hook["retrying"].as_bool(), hook["queued"].as_u64()), (Some(true), Some(1)), "{hook:#}");
    assert!(d.shutdown().await);
}
