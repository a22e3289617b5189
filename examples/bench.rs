//! The benchmark command behind BENCHMARKS.md. Needs root (it starts a real sshd
//! with the test fixtures, like the test suite) and a release build:
//!
//! ```sh
//! cargo build --release --bins --examples
//! target/release/examples/bench fanout 100 1000   # snapshot-ready -> frame-received latency
//! target/release/examples/bench idle-rss 1000     # RSS per idle connected client (real binary)
//! target/release/examples/bench idle-rss-tls 1000 # the same over wss:// (ECDSA P-256 certificate)
//! target/release/examples/bench tls-handshake 500 # full handshakes: latency and daemon CPU each
//! target/release/examples/bench poll 1 50         # wall and CPU per host per poll, both sides
//! target/release/examples/bench compile-bomb stack # peak RSS compiling a worst-case function
//! target/release/examples/bench cadence ws://127.0.0.1:18904/ws 60  # metrics_update gaps at a client
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/it/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use monserv::collect::sample::build_metrics;
use monserv::collect::{backoff::Backoff, known_hosts, ssh::SshCollector, FsFilter, SampleSpec};
use monserv::config::{parse_target, TargetKind};

const ROUNDS: usize = 50;

/// Hosts per snapshot in the fan-out benchmark (BENCH_HOSTS, default 10).
fn hosts() -> usize {
    std::env::var("BENCH_HOSTS").ok().and_then(|v| v.parse().ok()).unwrap_or(10)
}

fn raise_fd_limit() {
    use nix::sys::resource::{setrlimit, Resource};
    let _ = setrlimit(Resource::RLIMIT_NOFILE, 65536, 65536);
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    raise_fd_limit();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let numbers = || args[1..].iter().map(|a| a.parse::<usize>().expect("numbers"));
    match args.first().map(String::as_str) {
        Some("fanout") => {
            for n in numbers() {
                fanout(n).await
            }
        }
        Some("fanout-clients") => fanout_clients(&args[1], args[2].parse().unwrap()).await,
        Some("idle-rss") => {
            for n in numbers() {
                idle_rss(n).await
            }
        }
        Some("idle-rss-tls") => {
            for n in numbers() {
                tls::idle_rss(n).await
            }
        }
        Some("tls-handshake") => {
            for n in numbers() {
                tls::handshakes(n).await
            }
        }
        Some("rules") => {
            for n in numbers() {
                rules(n, None).await
            }
        }
        Some("rules-expression") => {
            for n in numbers() {
                for (each, when) in EXPRESSIONS {
                    rules(n, Some((each, when))).await
                }
            }
        }
        Some("rules-history") => {
            for n in numbers() {
                rules_history(n).await
            }
        }
        Some("poll-facts") => {
            for n in numbers() {
                poll_with(n, true).await
            }
        }
        Some("fleet") => {
            for n in numbers() {
                fleet(n).await
            }
        }
        Some("swap") => swap().await,
        Some("compile-bomb") => compile_bomb(&args[1]),
        Some("cadence") => cadence(&args[1], args[2].parse().unwrap()).await,
        Some("poll") => {
            for n in numbers() {
                poll_with(n, false).await
            }
        }
        _ => eprintln!(
            "usage: bench fanout N... | fleet TARGETS... | rules-history HOSTS... | poll-facts TARGETS... | idle-rss N... | idle-rss-tls N... | tls-handshake N... | poll TARGETS... | rules HOSTS... | swap | compile-bomb SHAPE | cadence WS_URL SECONDS"
        ),
    }
}

fn unix_nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

/// The daemon in this process; N clients in a child process (`fanout-clients`), so
/// client work does not share the daemon's runtime. Each round publishes a snapshot
/// of `BENCH_HOSTS` hosts through the hub (serialized once, as in production) whose
/// first hostname carries the publish time; clients subtract it on arrival.
async fn fanout(clients: usize) {
    let d = support::TestDaemon::start(&["local".into()], "poll_interval_seconds = 86400\nmax_clients = 60000").await;
    let mut first = d.connect().await;
    support::wait_metrics(&mut first, Duration::from_secs(10), |_| true).await;
    drop(first);
    let template = d.hub().latest().snapshot.expect("first round");
    let mut snapshot = (*template).clone();
    let one = snapshot.targets[0].clone();
    snapshot.targets = (0..hosts())
        .map(|i| {
            let mut t = one.clone();
            t.url = format!("ssh://scada:***@192.168.4.{i}:22");
            t
        })
        .collect();
    let frame_bytes = snapshot.data_json().len();
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["fanout-clients", &d.addr.to_string(), &clients.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    use tokio::io::AsyncBufReadExt;
    out.read_line(&mut line).await.unwrap();
    assert_eq!(line.trim(), "ready", "{line}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu0 = self_cpu();
    for _ in 0..ROUNDS {
        let mut s = snapshot.clone();
        s.targets[0].metrics.hostname = format!("t={}", unix_nanos());
        d.hub().publish_metrics(std::sync::Arc::new(s));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    line.clear();
    out.read_line(&mut line).await.unwrap();
    // The daemon's CPU per broadcast (the 100 ms sleeps cost nothing).
    let cpu = Duration::from_secs_f64((self_cpu() - cpu0) / ROUNDS as f64);
    child.wait().await.unwrap();
    println!(
        "| fan-out | {clients} clients | {frame_bytes} B frame | {} | daemon CPU {} per broadcast |",
        line.trim(),
        ms(cpu)
    );
    d.shutdown().await;
}

/// Child side of `fanout`: connect, say ready, time ROUNDS frames per client.
async fn fanout_clients(addr: &str, clients: usize) {
    let url = format!("ws://{addr}/ws");
    let samples = Arc::new(Mutex::new(Vec::with_capacity(clients * ROUNDS)));
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        let _snapshot = ws.next().await;
        conns.push(ws);
    }
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut ws| {
            let samples = samples.clone();
            tokio::spawn(async move {
                let mut mine = Vec::with_capacity(ROUNDS);
                while mine.len() < ROUNDS {
                    let Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) = ws.next().await else { continue };
                    let now = unix_nanos();
                    let at = t.find("\"hostname\":\"t=").expect("stamped frame") + 14;
                    let end = at + t[at..].find('"').unwrap();
                    let sent: u128 = t[at..end].parse().unwrap();
                    mine.push(Duration::from_nanos(now.saturating_sub(sent) as u64));
                }
                samples.lock().unwrap().extend(mine);
            })
        })
        .collect();
    println!("ready");
    for t in tasks {
        t.await.unwrap();
    }
    let mut all = samples.lock().unwrap().clone();
    all.sort();
    println!(
        "p50 {} | p99 {} | max {} | {} samples",
        ms(percentile(&all, 0.5)),
        ms(percentile(&all, 0.99)),
        ms(*all.last().unwrap()),
        all.len()
    );
}

fn rss_of(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// The real release binary beside this example, watching `local` on a free port, with
/// `env` added. Returns it and its port.
fn spawn_daemon(env: &[(&str, &std::ffi::OsStr)]) -> (std::process::Child, u16) {
    let bin = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join("monserv");
    let port = support::hosts::free_port();
    let child = std::process::Command::new(&bin)
        .env("SERVER_PORT", port.to_string())
        .env("LISTEN_ADDRESS", "127.0.0.1")
        .env("MONSERV_LOG", "warn")
        .env("MAX_CLIENTS_PER_IP", "4096")
        .envs(env.iter().copied())
        .env_remove("SERVERS")
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (cargo build --release first)", bin.display()));
    (child, port)
}

/// The real binary watching `local`; RSS before and after N idle clients connect.
async fn idle_rss(clients: usize) {
    let (child, port) = spawn_daemon(&[]);
    let url = format!("ws://127.0.0.1:{port}/ws");
    let mut warm = Vec::new();
    for _ in 0..20 {
        loop {
            if let Ok((ws, _)) = tokio_tungstenite::connect_async(&url).await {
                warm.push(ws);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    drop(warm);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = rss_of(child.id());
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(tokio_tungstenite::connect_async(&url).await.unwrap().0);
    }
    settle_and_report("idle clients", &mut conns, before, child).await;
}

/// Let a poll round or two go out to every client (draining each), print the RSS per
/// client, stop the daemon.
async fn settle_and_report<S: futures_util::Stream + Unpin>(
    label: &str,
    conns: &mut [S],
    before: u64,
    mut child: std::process::Child,
) {
    let end = Instant::now() + Duration::from_secs(9);
    while Instant::now() < end {
        for c in conns.iter_mut() {
            while let Ok(Some(_)) = tokio::time::timeout(Duration::from_micros(10), c.next()).await {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = rss_of(child.id());
    println!(
        "| {label} | {} | RSS before {:.1} MiB | after {:.1} MiB | {:.1} KiB per client |",
        conns.len(),
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        (after.saturating_sub(before)) as f64 / conns.len() as f64 / 1024.0
    );
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
    let _ = child.wait();
}

/// CPU seconds (user+sys, including reaped children) of `root` and its descendants.
fn tree_cpu(root: u32) -> f64 {
    let tck = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).unwrap().unwrap() as f64;
    let mut stats: HashMap<u32, (u32, u64)> = HashMap::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some(rest) = s.rfind(')').map(|i| &s[i + 2..]) else { continue };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ppid = f[1].parse().unwrap_or(0);
        let ticks: u64 = f[11..15].iter().map(|v| v.parse::<u64>().unwrap_or(0)).sum();
        stats.insert(pid, (ppid, ticks));
    }
    let mut total = 0u64;
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        total += stats.get(&p).map_or(0, |s| s.1);
        frontier.extend(stats.iter().filter(|(_, s)| s.0 == p).map(|(pid, _)| *pid));
    }
    total as f64 / tck
}

fn self_cpu() -> f64 {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).unwrap();
    let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
    t(u.user_time()) + t(u.system_time())
}

/// N sessions to one real sshd; ROUNDS polls of all of them at once; with `facts`,
/// each poll also answers three declared facts (a process count, a file age, a
/// unit state), as a rule needing them would ask.
async fn poll_with(targets: usize, facts: bool) {
    let sshd = support::Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let kh = Arc::new(known_hosts::KnownHosts::new(dir.path().join("known_hosts"), known_hosts::HostKeyPolicy::Tofu));
    use monserv::facts::Fact;
    // BENCH_FACTS=process,file,unit picks which (default: all three).
    let which = std::env::var("BENCH_FACTS").unwrap_or_else(|_| "process,file,unit".into());
    let wanted: Arc<[Fact]> = if facts {
        let mut v = Vec::new();
        for w in which.split(',') {
            match w {
                "process" => v.push(Fact::ProcessCount("sshd".into())),
                "file" => v.push(Fact::FileAge("/etc/hostname".into())),
                "unit" => v.push(Fact::UnitState("ssh.service".into())),
                other => panic!("BENCH_FACTS: {other}?"),
            }
        }
        v.into()
    } else {
        Arc::from([])
    };
    let spec = SampleSpec { top_n: 5, fs_filter: FsFilter::new(&[]), max_output_bytes: 1 << 20, facts: wanted };
    let TargetKind::Ssh(ssh) = parse_target(&sshd.url_password(), None).unwrap().kind else { unreachable!() };
    let mut collectors: Vec<SshCollector> = (0..targets)
        .map(|_| {
            SshCollector::new(ssh.clone(), kh.clone(), Backoff::new(Duration::from_secs(1), Duration::from_secs(60)))
                .unwrap()
        })
        .collect();
    // Connect everyone first: the steady state is what a poll costs.
    for c in collectors.iter_mut() {
        c.sample(&spec).await.expect("first sample");
    }
    let root = sshd.pid().unwrap();
    let (target_cpu0, self_cpu0) = (tree_cpu(root), self_cpu());
    let mut per_host = Vec::new();
    let mut rounds = Vec::new();
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let times = futures_util::future::join_all(collectors.iter_mut().map(|c| {
            let spec = &spec;
            async move {
                let t = Instant::now();
                let raw = c.sample(spec).await.expect("sample");
                build_metrics(&raw, None, 5, &spec.fs_filter, std::time::SystemTime::now()).expect("metrics");
                t.elapsed()
            }
        }))
        .await;
        rounds.push(start.elapsed());
        per_host.extend(times);
    }
    let polls = (ROUNDS * targets) as f64;
    let target_cpu = (tree_cpu(root) - target_cpu0) / polls;
    let own_cpu = (self_cpu() - self_cpu0) / polls;
    per_host.sort();
    rounds.sort();
    println!(
        "| poll{} | {targets} targets | per host p50 {} p99 {} | round p50 {} | monserv CPU {} per host-poll | target CPU {} per host-poll | logins {} |",
        if facts { format!(" with facts {which}") } else { String::new() },
        ms(percentile(&per_host, 0.5)),
        ms(percentile(&per_host, 0.99)),
        ms(percentile(&rounds, 0.5)),
        ms(Duration::from_secs_f64(own_cpu)),
        ms(Duration::from_secs_f64(target_cpu)),
        sshd.accepted_logins(support::fixtures::PW_USER)
    );
}

/// The expression rules measured: the issue's two-condition rule per host, and a
/// per-disk rule with a template.
const EXPRESSIONS: [(&str, &str); 2] = [
    ("host", r#"disk("/").used_percent > 80 and memory.used_percent > 90"#),
    ("disk", "disk.used_percent > 101 or (disk.free < 1GiB and disk.fstype != 'tmpfs')"),
];

/// The built-in rule (or an expression rule: `each`, `when`) on a snapshot of N hosts
/// (copies of this machine's metrics): convert + evaluate + alert bookkeeping per
/// round, and the compile time.
async fn rules(hosts: usize, expression: Option<(&str, &str)>) {
    use monserv::rules::{expression as expr, loader, sandbox::Sandbox, Limits, RuleEngine, RuleSettings, Source};
    let mut snapshot = support::snapshot_of_hosts(hosts).await;
    let sandbox = Sandbox::new(Limits::default()).unwrap();
    let (code, source, settings, label) = match expression {
        None => (loader::builtin_threshold(), Source::Builtin, RuleSettings::default(), "built-in rule".to_string()),
        Some((each, when)) => {
            let values = [("each".to_string(), each.to_string()), ("when".to_string(), when.to_string())].into();
            let settings = RuleSettings { values, ..RuleSettings::default() };
            (expr::component(), Source::Expression, settings, format!("expression, each {each}"))
        }
    };
    let mut compile = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        sandbox.compile(code).unwrap();
        compile.push(t.elapsed());
    }
    compile.sort();
    let engine = RuleEngine::new(sandbox);
    engine.install("bench", code.to_vec(), settings, source).await.unwrap();
    let mut times = Vec::new();
    for round in 0..200u64 {
        snapshot.round = round;
        let t = Instant::now();
        engine.evaluate_round(&snapshot).await;
        times.push(t.elapsed());
    }
    times.sort();
    let status = &engine.status()[0];
    println!(
        "| {label} | {hosts} hosts | round p50 {} | p99 {} | rule alone (last) {} us | compile p50 {} |",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99)),
        status.last_eval_micros,
        ms(percentile(&compile, 0.5))
    );
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 4096
}

/// Rules with history queries on N hosts with an hour of history each (900 rounds
/// at 4 s): disk-fill (a count and a slope per disk) and sustained-cpu (an hour's
/// CPU points per host, bucketed by minute), and the history's memory per host-hour.
async fn rules_history(hosts: usize) {
    use monserv::history::{History, Sizing};
    use monserv::rules::{sandbox::Sandbox, Limits, RuleEngine, RuleSettings, Source};
    let mut snapshot = support::snapshot_of_hosts(hosts).await;
    let history =
        Arc::new(History::new(Sizing { window: Duration::from_secs(3600), interval: Duration::from_secs(4) }));
    let t0 = 1_764_000_000_000u64;
    let rss0 = rss_bytes();
    let fill = Instant::now();
    let round = |i: u64, snapshot: &mut monserv::model::Snapshot| {
        snapshot.round = i + 1;
        snapshot.unix_ms = t0 + i * 4000;
        for (n, t) in snapshot.targets.iter_mut().enumerate() {
            // Values that change every round, as a busy host's do.
            t.metrics.cpu.used_percent = ((i + n as u64) % 100) as f64;
            t.metrics.memory.used = (4u64 << 30) + i * 4096;
            t.metrics.uptime_seconds = 100_000 + i * 4;
            if let Some(d) = t.metrics.disks.first_mut() {
                d.used += 1 << 20;
                d.free -= 1 << 20;
            }
        }
    };
    for i in 0..900 {
        round(i, &mut snapshot);
        history.record(&snapshot);
    }
    let (samples, bytes) = history.footprint();
    let rss = rss_bytes().saturating_sub(rss0);
    println!(
        "| history | {hosts} hosts | {samples} samples | {} KiB per host-hour counted, {} KiB by RSS | filled in {} |",
        bytes / hosts / 1024,
        rss / hosts as u64 / 1024,
        ms(fill.elapsed())
    );
    // `GET /api/v1/history`: the whole fleet (what `rule test --history` takes), and
    // one host (what the console's host page asks for), built as the handler does.
    let now = t0 + 900 * 4000;
    let first_key = snapshot.targets[0].url.clone();
    for (what, only) in [("all hosts", None), ("one host", Some(vec![first_key]))] {
        let mut times = Vec::new();
        let mut size = 0;
        for _ in 0..5 {
            let t = Instant::now();
            let export = history.export(only.as_deref(), 3600, now);
            let body = serde_json::to_vec(&export).unwrap();
            times.push(t.elapsed());
            size = body.len();
        }
        times.sort();
        println!(
            "| GET /api/v1/history, {what} | {hosts} hosts | {} bytes | p50 {} |",
            size,
            ms(percentile(&times, 0.5))
        );
    }
    for rule in ["disk-fill", "sustained-cpu"] {
        let engine = RuleEngine::new(Sandbox::new(Limits::default()).unwrap()).with_history(history.clone());
        let code = support::dist(&format!("examples/{rule}.wasm"));
        engine.install(rule, code, RuleSettings::default(), Source::File).await.unwrap();
        let mut times = Vec::new();
        for i in 900..1100u64 {
            round(i, &mut snapshot);
            history.record(&snapshot);
            let t = Instant::now();
            engine.evaluate_round(&snapshot).await;
            times.push(t.elapsed());
        }
        times.sort();
        let status = &engine.status()[0];
        println!(
            "| {rule} | {hosts} hosts | round p50 {} | p99 {} | rule alone (last) {} us | failures {} |",
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.99)),
            status.last_eval_micros,
            status.failures
        );
    }
}

/// File lands in the rules directory -> the new version is loaded (swap count
/// changes in GET /api/v1/rules). Includes the watcher's 300 ms quiet period.
async fn swap() {
    let d = support::TestDaemon::start(&["local".into()], "poll_interval_seconds = 1\n[rules]\nbuiltin = false").await;
    let dir = d.rules_dir();
    let reboot = support::dist("examples/reboot.wasm");
    let mut latencies = Vec::new();
    for i in 0..11usize {
        let mut bytes = reboot.clone();
        let name = format!("bench-{i}");
        bytes.push(0);
        bytes.push((name.len() + 1) as u8);
        bytes.push(name.len() as u8);
        bytes.extend_from_slice(name.as_bytes());
        let t = Instant::now();
        support::write_atomically(&dir.join("reboot.wasm"), &bytes);
        loop {
            let rules = d.rules(None).await;
            let swaps =
                rules["rules"].as_array().unwrap().first().map(|r| r["swaps"].as_u64().unwrap() as i64).unwrap_or(-1);
            if swaps == i as i64 - 1 + 1 && !(i == 0 && rules["rules"].as_array().unwrap().is_empty()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if i > 0 {
            latencies.push(t.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    latencies.sort();
    println!(
        "| swap | file landed -> new version live | p50 {} | max {} | {} swaps |",
        ms(percentile(&latencies, 0.5)),
        ms(*latencies.last().unwrap()),
        latencies.len()
    );
    d.shutdown().await;
}

/// Peak RSS of this process so far (VmHWM), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// The worst function shapes that fit `rules::validate::MAX` (64 KiB body, 2000
/// locals): compile each in the daemon's engine configuration and report the peak
/// RSS it cost. Run one shape per process (`compile-bomb SHAPE`).
fn compile_bomb(shape: &str) {
    use monserv::rules::validate::craft::leb;
    let budget = monserv::rules::validate::MAX.function_body_bytes - 16;
    let mut code = Vec::new();
    let mut locals = monserv::rules::validate::MAX.locals_per_function as u32;
    match shape {
        // Every value live at once: K pushes, then K-1 adds.
        "stack" => {
            let k = budget / 3;
            for _ in 0..k {
                code.extend([0x20, 0x00]);
            }
            code.extend(std::iter::repeat_n(0x6a, k - 1));
            code.push(0x1a);
        }
        // Nested blocks, each a branch target.
        "blocks" => {
            let k = budget / 3;
            for _ in 0..k {
                code.extend([0x02, 0x40]);
            }
            code.extend(std::iter::repeat_n(0x0b, k));
        }
        // Every local read and written: long live ranges for the register allocator.
        "locals" => {
            let mut i = 0u64;
            while code.len() + 8 < budget {
                code.push(0x20);
                leb(i % u64::from(locals), &mut code);
                code.push(0x21);
                leb((i * 7 + 1) % u64::from(locals), &mut code);
                i += 1;
            }
        }
        // One br_table with as many targets as fit.
        "brtable" => {
            let depth = 1000u64;
            for _ in 0..depth {
                code.extend([0x02, 0x40]);
            }
            code.extend([0x20, 0x00, 0x0e]);
            let targets = (budget - code.len() - depth as usize - 8) / 2;
            leb(targets as u64, &mut code);
            for t in 0..targets as u64 {
                leb(t % depth, &mut code);
            }
            code.push(0x00);
            code.extend(std::iter::repeat_n(0x0b, depth as usize));
        }
        // Loops nested around code that updates every local: each loop header needs a
        // block parameter per live local (SSA phis = loops x locals).
        "loops" | "loops100" => {
            if shape == "loops100" {
                locals = 100;
            }
            let inner = locals as usize * 9;
            let max = monserv::rules::validate::MAX.control_times_variables as usize / (locals as usize + 1);
            let depth = ((budget - inner - 8) / 3).min(max);
            for _ in 0..depth {
                code.extend([0x03, 0x40]);
            }
            for i in 0..u64::from(locals) {
                code.push(0x20);
                leb(i, &mut code);
                code.extend([0x41, 0x01, 0x6a, 0x21]);
                leb(i, &mut code);
            }
            code.extend(std::iter::repeat_n(0x0b, depth));
        }
        other => panic!("unknown shape {other}: stack | blocks | locals | brtable | loops | loops100"),
    }
    let module = monserv::rules::validate::craft::module_with_code(locals, &code);
    let checked = monserv::rules::validate::check(&module, &monserv::config::RuleLimits::default());
    let mut config = wasmtime::Config::new();
    config.epoch_interruption(true);
    config.max_wasm_stack(512 * 1024);
    let engine = wasmtime::Engine::new(&config).unwrap();
    let before = peak_rss();
    let started = Instant::now();
    let result = wasmtime::Module::new(&engine, &module);
    println!(
        "{shape}: {} bytes, validate {:?}, compile {} in {}, peak RSS +{:.1} MiB",
        module.len(),
        checked.map(|m| (m.largest_function, m.most_locals, m.most_control_times_variables)),
        if result.is_ok() { "ok" } else { "refused" },
        ms(started.elapsed()),
        (peak_rss() - before) as f64 / (1 << 20) as f64
    );
}

/// Gaps between consecutive `metrics_update` frames at one client of a running monserv
/// (any version), for `seconds`: what a dashboard sees of the cadence.
async fn cadence(url: &str, seconds: u64) {
    let mut ws = support::connect_retry(url).await;
    let end = Instant::now() + Duration::from_secs(seconds);
    let (mut last, mut gaps, mut alerts) = (None::<Instant>, Vec::new(), 0usize);
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        let Ok(Some(Ok(msg))) = tokio::time::timeout(left, ws.next()).await else { break };
        let tokio_tungstenite::tungstenite::Message::Text(text) = msg else { continue };
        if text.starts_with(r#"{"type":"metrics_update""#) {
            let now = Instant::now();
            if let Some(prev) = last.replace(now) {
                gaps.push(now - prev);
            }
        } else {
            alerts += 1;
        }
    }
    gaps.sort();
    assert!(!gaps.is_empty(), "no metrics_update from {url}");
    println!(
        "{} frames, {alerts} alerts in {seconds} s; gap p50 {} p99 {} max {}",
        gaps.len() + 1,
        ms(percentile(&gaps, 0.5)),
        ms(percentile(&gaps, 0.99)),
        ms(*gaps.last().unwrap())
    );
}

/// `https://` and `wss://` costs: the real binary with a test CA's certificate.
mod tls {
    use super::*;
    use support::receiver::TestCa;
    use tokio_rustls::client::TlsStream;

    fn start(ca: &TestCa) -> (std::process::Child, u16) {
        let (child, port) =
            spawn_daemon(&[("TLS_CERT_FILE", ca.cert.as_os_str()), ("TLS_KEY_FILE", ca.key.as_os_str())]);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            std::thread::sleep(Duration::from_millis(20));
        }
        (child, port)
    }

    fn connector(ca: &TestCa) -> tokio_rustls::TlsConnector {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_file_iter(&ca.ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        // Every connection a full handshake: no session resumption.
        config.resumption = rustls::client::Resumption::disabled();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }

    async fn handshake(c: &tokio_rustls::TlsConnector, port: u16) -> TlsStream<tokio::net::TcpStream> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        c.connect(rustls::pki_types::ServerName::try_from("localhost").unwrap(), tcp).await.unwrap()
    }

    fn cpu_of(pid: u32) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        ticks / nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).unwrap().unwrap() as f64
    }

    /// N full TLS 1.3 handshakes plus one request each, one after another.
    pub async fn handshakes(n: usize) {
        for (name, ca) in [("ECDSA P-256", TestCa::new()), ("RSA 2048", TestCa::rsa())] {
            let (mut child, port) = start(&ca);
            let c = connector(&ca);
            drop(handshake(&c, port).await);
            let cpu_before = cpu_of(child.id());
            let mut times = Vec::with_capacity(n);
            for _ in 0..n {
                let start = Instant::now();
                let mut s = handshake(&c, port).await;
                times.push(start.elapsed());
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                s.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                    .await
                    .unwrap();
                let mut buf = Vec::new();
                let _ = s.read_to_end(&mut buf).await;
            }
            let cpu = cpu_of(child.id()) - cpu_before;
            times.sort();
            println!(
                "| {name} | {n} | p50 {} | p99 {} | daemon CPU {:.2} ms per handshake + request |",
                ms(percentile(&times, 0.5)),
                ms(percentile(&times, 0.99)),
                cpu * 1000.0 / n as f64
            );
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
        }
    }

    /// RSS before and after N idle wss:// clients.
    pub async fn idle_rss(clients: usize) {
        let ca = TestCa::new();
        let (child, port) = start(&ca);
        let c = connector(&ca);
        let url = format!("wss://localhost:{port}/ws");
        let connect = || async {
            let tls = handshake(&c, port).await;
            tokio_tungstenite::client_async(url.clone(), tls).await.unwrap().0
        };
        let mut warm = Vec::new();
        for _ in 0..20 {
            warm.push(connect().await);
        }
        drop(warm);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let before = rss_of(child.id());
        let mut conns = Vec::with_capacity(clients);
        for _ in 0..clients {
            conns.push(connect().await);
        }
        settle_and_report("idle wss clients", &mut conns, before, child).await;
    }
}

/// What feeding the fleet costs per round at N targets (copies of this machine):
/// rendering `/metrics`, encoding and compressing a remote_write round, and the
/// Sparkplug messages of a round in which every host's memory changed.
async fn fleet(hosts: usize) {
    use monserv::export::{prometheus, remote_write::Encoder, sparkplug::EdgeNode};
    let snapshot = support::snapshot_of_hosts(hosts).await;
    let runs = if hosts >= 1000 { 20 } else { 200 };
    let stats = prometheus::SelfStats { version: "bench", ..Default::default() };
    let t = Instant::now();
    let mut text = String::new();
    for _ in 0..runs {
        text = prometheus::render(Some(&snapshot), &stats);
    }
    let render = t.elapsed() / runs;
    let external = [("gateway".to_string(), "gw-07".to_string()), ("site".to_string(), "north".to_string())];
    let mut encoder = Encoder::default();
    let at = std::time::SystemTime::now();
    encoder.encode(&snapshot, &external, at);
    let t = Instant::now();
    let mut round = encoder.encode(&snapshot, &external, at);
    for _ in 1..runs {
        round = encoder.encode(&snapshot, &external, at);
    }
    let encode = t.elapsed() / runs;
    let t = Instant::now();
    let mut packed = Vec::new();
    for _ in 0..runs {
        packed = monserv::snappy::compress(&round.encoded);
    }
    let compress = t.elapsed() / runs;
    let mut node = EdgeNode::new("plant", "gw-07", 0);
    node.birth(0);
    let births: usize = node.round(&snapshot, 1).iter().map(|m| m.payload.len() + m.topic.len()).sum();
    let mut changed = snapshot.clone();
    for t in &mut changed.targets {
        t.metrics.memory.used += 4096;
        t.metrics.memory.free -= 4096;
        t.metrics.memory.used_percent += 0.01;
    }
    let t = Instant::now();
    let data = node.round(&changed, 2);
    let sparkplug = t.elapsed();
    let data_bytes: usize = data.iter().map(|m| m.payload.len() + m.topic.len()).sum();
    // The backlog while a receiver is away: one flush (30 s of 4 s rounds) per
    // transaction, compressed, as the sender writes it; bytes the kernel was asked to
    // write (`/proc/self/io` wchar) and the file's growth.
    let dir = tempfile::tempdir().unwrap();
    let mut backlog = monserv::store::backlog::Backlog::open(&dir.path().join("rw.redb")).unwrap();
    let flush: Vec<monserv::store::backlog::Round> =
        (0..8).map(|_| monserv::store::backlog::Round { samples: round.samples, encoded: packed.clone() }).collect();
    let wchar = || -> u64 {
        let io = std::fs::read_to_string("/proc/self/io").unwrap();
        io.lines().find_map(|l| l.strip_prefix("wchar: ")).unwrap().trim().parse().unwrap()
    };
    let flushes = 20;
    let before = wchar();
    for _ in 0..flushes {
        backlog.append(&flush, 1 << 30).unwrap();
    }
    let written = (wchar() - before) / flushes;
    let file = std::fs::metadata(dir.path().join("rw.redb")).unwrap().len();
    println!(
        "backlog targets={hosts} per_flush_payload={} B written_per_flush={written} B file_after_{flushes}_flushes={file} B",
        packed.len() * 8
    );
    println!(
        "fleet targets={hosts} metrics_text={} B render={render:?} rw_samples={} rw_raw={} B rw_snappy={} B encode={encode:?} compress={compress:?} spb_births={births} B spb_round={} messages {data_bytes} B in {sparkplug:?}",
        text.len(),
        round.samples,
        round.encoded.len(),
        packed.len(),
        data.len()
    );
}
