//! Alert delivery benchmarks behind BENCHMARKS.md (issue #9). Release build; `DIR`
//! should be on the disk whose writes are measured (not tmpfs):
//!
//! ```sh
//! cargo build --release --examples
//! target/release/examples/bench_delivery transitions /var/tmp/monserv-bench  # rules -> store -> outbox
//! target/release/examples/bench_delivery latency /var/tmp/monserv-bench      # commit -> webhook receiver
//! ```
//!
//! Bytes written are the process's `write_bytes` from /proc/self/io: what reached the
//! block layer (redb fsyncs every commit), the flash wear that matters.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/it/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use monserv::rules::{loader, sandbox::Sandbox, Limits, RuleEngine, RuleSettings, Source};
use monserv::store::alerts::{AlertStore, Changes, Firing};

fn write_bytes() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap();
    io.lines().find_map(|l| l.strip_prefix("write_bytes: ")).unwrap().trim().parse().unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = std::path::PathBuf::from(args.get(1).cloned().unwrap_or_else(|| "/var/tmp/monserv-bench".into()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    match args.first().map(String::as_str) {
        Some("transitions") => {
            for hosts in [1, 10, 100, 1000] {
                transitions(&dir, hosts).await;
            }
        }
        Some("latency") => latency(&dir).await,
        _ => eprintln!("usage: bench_delivery transitions|latency DIR"),
    }
}

/// The built-in threshold rule over `hosts` hosts whose memory flips above and
/// below the threshold every round: each round is `hosts` transitions through the
/// engine, the alert store and two sinks' outboxes.
async fn transitions(dir: &std::path::Path, hosts: usize) {
    let mut snapshot = support::snapshot_of_hosts(hosts).await;
    let path = dir.join(format!("alerts-{hosts}.redb"));
    let store = Arc::new(AlertStore::open_with_sinks(&path, vec!["webhook".into(), "email".into()]).unwrap());
    let engine = RuleEngine::with_store(Sandbox::new(Limits::default()).unwrap(), Some(store.clone()));
    let mut settings = RuleSettings::default();
    for (k, v) in
        [("memory_percent", "50"), ("disk_percent", "100"), ("cpu_percent", "100"), ("proc_ram_percent", "100")]
    {
        settings.values.insert(k.into(), v.into());
    }
    engine.install("threshold", loader::builtin_threshold().to_vec(), settings, Source::Builtin).await.unwrap();
    let rounds = 40u64;
    // Idle rounds first: nothing changes, nothing may be written.
    for t in &mut snapshot.targets {
        t.metrics.memory.used_percent = 10.0;
    }
    engine.evaluate_round(&snapshot).await;
    let idle_before = write_bytes();
    for round in 0..rounds {
        snapshot.round = round;
        engine.evaluate_round(&snapshot).await;
    }
    let idle_bytes = write_bytes() - idle_before;
    let mut times = Vec::new();
    let before = write_bytes();
    let started = Instant::now();
    for round in 0..rounds {
        snapshot.round = rounds + round;
        let high = round % 2 == 0;
        for t in &mut snapshot.targets {
            t.metrics.memory.used_percent = if high { 90.0 } else { 10.0 };
        }
        let t = Instant::now();
        engine.evaluate_round(&snapshot).await;
        times.push(t.elapsed());
    }
    let total = started.elapsed();
    let bytes = write_bytes() - before;
    let n = rounds as usize * hosts;
    let history = store.history(0, usize::MAX).unwrap().len();
    assert_eq!(history, n.min(monserv::store::alerts::HISTORY_LIMIT as usize), "every flip is a transition");
    times.sort();
    println!(
        "| {hosts} | {:.0} | {:.1} ms | {:.1} ms | {} | {} | {idle_bytes} |",
        n as f64 / total.as_secs_f64(),
        percentile(&times, 0.5).as_secs_f64() * 1000.0,
        percentile(&times, 0.99).as_secs_f64() * 1000.0,
        bytes / rounds,
        bytes / n as u64,
    );
    // Accepting deliveries: one small commit each.
    let before = write_bytes();
    let queued = store.queued("webhook", 100).unwrap();
    for t in &queued {
        store.delivered("webhook", &[t.seq]).unwrap();
    }
    if hosts == 1000 {
        println!("accepting a delivery: {} bytes written each", (write_bytes() - before) / queued.len() as u64);
        println!("store file after {n} transitions: {} bytes", std::fs::metadata(&path).unwrap().len());
    }
}

/// Commit one transition, time until a webhook receiver on loopback has it.
async fn latency(dir: &std::path::Path) {
    let receiver = support::receiver::Receiver::start(0, &[]).await;
    let toml = format!("[notify.webhook]\nurl = \"http://{}/hook\"\n", receiver.addr);
    let config = monserv::config::Config::from_toml(&toml, &[("_", "_")]).unwrap();
    let sinks = monserv::notify::sinks(&config.notify).unwrap();
    let store = Arc::new(AlertStore::open_with_sinks(&dir.join("latency.redb"), config.notify.sink_names()).unwrap());
    let (committed, watch) = tokio::sync::watch::channel(0u64);
    let tracker = tokio_util::task::TaskTracker::new();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let _notifier = monserv::notify::Notifier::start(sinks, store.clone(), watch, &tracker, shutdown.clone());
    let mut times = Vec::new();
    for i in 0..100u64 {
        let key = format!("h{i}/mem");
        let f = Firing {
            rule: "bench".into(),
            key: key.clone(),
            subject: "[ALERT] x".into(),
            message: "m".into(),
            since: 0,
        };
        let t = Instant::now();
        let s = store.clone();
        tokio::task::spawn_blocking(move || s.commit(&Changes { fired: vec![f], ..Changes::default() }))
            .await
            .unwrap()
            .unwrap();
        committed.send_modify(|n| *n += 1);
        while receiver.seen().len() <= i as usize {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "commit -> webhook received (100 alerts, one at a time): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&times, 0.5).as_secs_f64() * 1000.0,
        percentile(&times, 0.99).as_secs_f64() * 1000.0,
        times[times.len() - 1].as_secs_f64() * 1000.0
    );
    shutdown.cancel();
}
