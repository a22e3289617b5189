//! Rules are compiled in a child process of the monserv binary, so the daemon keeps
//! none of the compiler's memory; a child that cannot run falls back to compiling
//! in-process. Needs no root.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use monserv::config::{CompileIn, RuleLimits};
use monserv::rules::sandbox::{wit, RuleCtx, Sandbox};

use crate::support::{self, hosts::free_port};

const BIN: &str = env!("CARGO_BIN_EXE_monserv");

fn snapshot() -> wit::Snapshot {
    let metrics = wit::Metrics {
        hostname: "plc-9".into(),
        uptime_seconds: 10,
        memory: wit::Memory { total: 100, used: 95, free: 5, used_percent: 95.0 },
        disks: vec![],
        top_procs_by_mem: vec![],
        cpu: wit::Cpu { cores: 1, used_percent: 1.0, model_name: String::new() },
        generated_at_utc: "2026-12-02T00:00:00Z".into(),
    };
    let target = wit::Target {
        key: "local".into(),
        hostname: "plc-9".into(),
        status: wit::Reachability::Online,
        consecutive_failures: 0,
        last_error_kind: None,
        metrics: Some(metrics),
    };
    wit::Snapshot { round: 1, unix_time: 0, targets: vec![target] }
}

fn ctx() -> RuleCtx {
    RuleCtx::new("threshold", Arc::new(HashMap::new()))
}

#[test]
fn the_monserv_binary_compiles_rules_for_the_daemon() {
    let sb = Sandbox::with_compiler(RuleLimits::default(), CompileIn::Child(BIN.into())).unwrap();
    let c = sb.compile(&support::dist("threshold.wasm")).unwrap();
    assert_eq!(c.info.name, "threshold");
    let events = sb.evaluate(&c, &ctx(), &snapshot(), &[]).unwrap();
    assert_eq!(events[0].subject, "[ALERT] plc-9 memory high");
    // The child's refusal reads like the in-process one.
    let child = sb.compile(b"\0asm\x0d\0\x01\0\x01\x05junk").err().unwrap().to_string();
    let here = Sandbox::new(RuleLimits::default()).unwrap().compile(b"\0asm\x0d\0\x01\0\x01\x05junk").err().unwrap();
    assert!(child.starts_with("not a valid WebAssembly component"), "{child}");
    assert_eq!(child, here.to_string());
    // Hostile rules behave the same when compiled by the child.
    let spin = sb.compile(&support::dist("test/spin.wasm")).unwrap();
    assert!(sb.evaluate(&spin, &ctx(), &snapshot(), &[]).unwrap_err().to_string().starts_with("exceeded its"));
}

/// The compiler child is background work: it lowers its own priority before it
/// reads the candidate, so a compile on a one-core box cannot hold back the rounds.
#[test]
fn the_compiler_child_runs_at_a_lower_priority() {
    let mut child = Command::new(BIN)
        .arg(monserv::rules::compiler::CHILD_ARG)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ours = nice_of(std::process::id());
    let start = Instant::now();
    // It waits on stdin, which stays open until it has been looked at.
    let theirs = loop {
        let n = nice_of(child.id());
        if n != ours || start.elapsed() > Duration::from_secs(10) {
            break n;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(theirs, (ours + 10).min(19), "nice of the compiler child (ours: {ours})");
}

/// Field 19 of /proc/PID/stat, after the command name (which may hold spaces).
fn nice_of(pid: u32) -> i64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    fields[16].parse().unwrap()
}

#[test]
fn a_child_that_cannot_run_falls_back_to_compiling_here() {
    for exe in ["/nonexistent/monserv", "/bin/false"] {
        let sb = Sandbox::with_compiler(RuleLimits::default(), CompileIn::Child(exe.into())).unwrap();
        let c = sb.compile(&support::dist("threshold.wasm")).unwrap_or_else(|e| panic!("{exe}: {e}"));
        assert_eq!(sb.evaluate(&c, &ctx(), &snapshot(), &[]).unwrap().len(), 1, "{exe}");
    }
}

/// Anonymous resident memory: the heap and mappings, not the binary's own pages (a
/// debug build's code pages vary with what ran; the compiler's leftovers do not).
fn rss_anon_of(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// Run the daemon (this machine only) until its rules have evaluated a few rounds;
/// returns its RSS then.
async fn idle_rss(builtin: bool, upload: Option<&[u8]>) -> u64 {
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = format!(
        "listen = \"127.0.0.1\"\nport = {port}\npoll_interval_seconds = 0.2\nstate_dir = {:?}\nauth_token = \"rss-token-1\"\n[rules]\nbuiltin = {builtin}\n",
        state.path().display().to_string()
    );
    std::fs::write(state.path().join("monserv.toml"), config).unwrap();
    let mut child = Command::new(BIN)
        .args(["--config", state.path().join("monserv.toml").to_str().unwrap()])
        .env_remove("SERVERS")
        .env("MONSERV_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let auth = [("Authorization", "Bearer rss-token-1")];
    let start = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "monserv never listened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Some(wasm) = upload {
        let (status, body) = support::http_send(addr, "PUT", "/api/v1/rules/reboot", &auth, wasm).await;
        assert_eq!(status, 200, "{body}");
    }
    // Let the rules run a few rounds.
    loop {
        let (_, body) = support::http_get(addr, "/api/v1/rules", &auth).await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let rules = v["data"]["rules"].as_array().unwrap().clone();
        if rules.len() == usize::from(builtin) + usize::from(upload.is_some())
            && rules.iter().all(|r| r["evaluations"].as_u64() >= Some(5))
        {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "rules never ran: {v:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rss = rss_anon_of(child.id());
    child.kill().unwrap();
    child.wait().unwrap();
    rss
}

/// Loading two rules costs the daemon little memory: the compiler ran elsewhere.
/// (Compiled in the daemon, the built-in rule alone cost it 14 MB; BENCHMARKS.md.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiling_rules_leaves_the_daemons_memory_alone() {
    let without = idle_rss(false, None).await;
    let with = idle_rss(true, Some(&support::dist("examples/reboot.wasm"))).await;
    let cost = with.saturating_sub(without);
    assert!(cost < 5 << 20, "two rules cost the daemon {} KiB ({without} -> {with})", cost >> 10);
}

/// Issue #15, defect 5: the rule builder says what is wrong with a crate before it
/// builds (no Cargo.toml; not a cdylib, which used to package a stale `.wasm` and say
/// "wrote"), with the fix.
#[test]
fn the_rule_builder_names_what_is_wrong_with_a_crate() {
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules-wasm/Cargo.toml");
    let builder = |dir: &std::path::Path| {
        let out = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["run", "--quiet", "--manifest-path"])
            .arg(&workspace)
            .args(["-p", "builder", "--", "--crate"])
            .arg(dir)
            .args(["--out", "/dev/null"])
            .env_remove("RUSTFLAGS")
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let empty = tempfile::tempdir().unwrap();
    let (ok, err) = builder(empty.path());
    assert!(!ok && err.contains("no Cargo.toml here"), "{err}");
    let rlib = tempfile::tempdir().unwrap();
    std::fs::write(
        rlib.path().join("Cargo.toml"),
        "[package]\nname = \"busy-host\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n",
    )
    .unwrap();
    std::fs::create_dir_all(rlib.path().join("src")).unwrap();
    std::fs::write(rlib.path().join("src/lib.rs"), "").unwrap();
    let (ok, err) = builder(rlib.path());
    assert!(!ok, "{err}");
    assert!(
        err.contains("busy-host: a rule crate must build a cdylib") && err.contains("crate-type = [\"cdylib\"]"),
        "{err}"
    );
    assert!(!err.contains("wrote"), "{err}");
}
