//! The shipped example rules on recorded histories, through the backtest path.

use std::collections::HashMap;

use super::*;
use crate::facts::{Answers, Fact, FactValue};
use crate::history::Export;
use crate::model::{Cpu, Disk, HostStatus, Memory, ServerMetrics, Snapshot, TargetReport};

const T0: u64 = 1_764_000_000_000;
const GIB: u64 = 1 << 30;

/// One host's sample: what the example rules look at.
#[derive(Clone)]
struct Sample {
    cpu: f64,
    mem_used: u64,
    disk_used: u64,
    uptime: u64,
    procs: Option<u32>,
}

fn report(s: &Sample) -> TargetReport {
    let total = 100 * GIB;
    let metrics = ServerMetrics {
        hostname: "historian".into(),
        uptime_seconds: s.uptime,
        memory: Memory {
            total: 16 * GIB,
            used: s.mem_used,
            free: 16 * GIB - s.mem_used,
            used_percent: s.mem_used as f64 / (16 * GIB) as f64 * 100.0,
        },
        disks: vec![Disk {
            device: "/dev/sda3".into(),
            mountpoint: "/var".into(),
            fstype: "ext4".into(),
            total,
            used: s.disk_used,
            free: total - s.disk_used,
            used_percent: s.disk_used as f64 / total as f64 * 100.0,
        }],
        top_procs_by_mem: vec![],
        cpu: Cpu { cores: 4, used_percent: s.cpu, model_name: String::new() },
        generated_at_utc: String::new(),
        status: HostStatus::Online,
        error: None,
    };
    let mut facts = Answers::new();
    if let Some(n) = s.procs {
        facts.insert(Fact::ProcessCount("historian".into()), FactValue::Count(n));
    }
    TargetReport {
        url: "ssh://scada:***@10.0.0.5:22".into(),
        status: HostStatus::Online,
        metrics,
        collected: true,
        last_update: None,
        consecutive_failures: 0,
        last_error_kind: None,
        poll_duration: None,
        last_success: None,
        facts: std::sync::Arc::new(facts),
    }
}

/// A recorded history: one sample every `step` seconds, from `f(i)`, as the daemon
/// would export it.
fn recorded(rounds: u64, step: u64, window: Duration, f: impl Fn(u64) -> Sample) -> Export {
    let h = History::new(Sizing { window, interval: Duration::from_secs(step) });
    for i in 0..rounds {
        h.record(&Snapshot { round: i + 1, unix_ms: T0 + i * step * 1000, targets: vec![report(&f(i))] });
    }
    let now = T0 + rounds * step * 1000;
    let e = h.export(None, window.as_secs(), now);
    // Through the file format and back, as `rule test --history` reads it.
    Export::parse(&serde_json::to_vec(&e).unwrap()).unwrap()
}

fn backtest(rule: &str, settings: &[(&str, &str)], export: &Export) -> Outcome {
    let sandbox = Sandbox::new(crate::config::RuleLimits::default()).unwrap();
    let bytes = std::fs::read(format!("{}/rules-wasm/dist/examples/{rule}.wasm", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let mut compiled = sandbox.compile(&bytes).unwrap();
    let config: HashMap<String, String> = settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let ctx = RuleCtx::new(rule, std::sync::Arc::new(config));
    compiled.info = sandbox.describe_with(&compiled, &ctx).unwrap();
    let ctx = RuleCtx { needs: compiled.info.needs.clone().into(), ..ctx };
    run(&sandbox, &compiled, &ctx, Duration::ZERO, export, Duration::from_secs(export.window_seconds))
}

fn quiet(_: u64) -> Sample {
    Sample { cpu: 10.0, mem_used: 4 * GIB, disk_used: 50 * GIB, uptime: 100_000, procs: Some(1) }
}

fn kinds(o: &Outcome) -> Vec<(u64, &'static str)> {
    o.transitions.iter().map(|t| ((t.unix_time * 1000 - T0) / 1000, t.kind)).collect()
}

#[test]
fn disk_fill_predicts_hours_until_full_from_the_slope() {
    // /var grows 1 GiB every 10 minutes from 90 GiB: 10 GiB left, full in 100 minutes.
    let per_round = GIB / 150; // every 4 s
    let e = recorded(450, 4, Duration::from_secs(3600), |i| Sample { disk_used: 90 * GIB + i * per_round, ..quiet(i) });
    let o = backtest("disk-fill", &[("hours", "4"), ("window_minutes", "10"), ("min_samples", "10")], &e);
    assert_eq!(o.failures, 0, "{:?}", o.failure_samples);
    // The first forecast comes once 10 samples (40 s) are in the window.
    assert_eq!(kinds(&o), vec![(36, "alert")]);
    let t = &o.transitions[0];
    assert_eq!(t.key, "ssh://scada:***@10.0.0.5:22/fill//var");
    assert_eq!(t.subject, "[ALERT] historian /var full in 1.7 h");
    assert!(t.message.contains("9.9 GiB free"), "{}", t.message);
    assert!(t.message.contains("growing 6.0 GiB/h"), "{}", t.message);
    // Under a 1 h threshold, nothing: the forecast never drops below it here.
    let o = backtest("disk-fill", &[("hours", "1"), ("window_minutes", "10")], &e);
    assert!(o.transitions.is_empty(), "{:?}", o.transitions);
}

#[test]
fn sustained_cpu_counts_busy_minutes() {
    // Busy (95%) from minute 2 on, with a 1-minute dip at minute 6.
    let cpu = |i: u64| {
        let minute = i * 4 / 60;
        if (2..6).contains(&minute) || minute >= 7 {
            95.0
        } else {
            20.0
        }
    };
    let e = recorded(15 * 15, 4, Duration::from_secs(3600), |i| Sample { cpu: cpu(i), ..quiet(i) });
    let o = backtest("sustained-cpu", &[("minutes", "10"), ("at_least", "8")], &e);
    assert_eq!(o.failures, 0, "{:?}", o.failure_samples);
    // The minutes are counted back from each round: at 656 s they are (596, 656],
    // (536, 596] ... (56, 116]. Eight hold only busy samples; the two that do not
    // are the one with the dip (356, 416] and the oldest, in the quiet start. At
    // 652 s the dip straddles two minutes and the eighth reaches into the start.
    let first = o.transitions.first().expect("an alert");
    assert_eq!(first.kind, "alert");
    assert_eq!((first.unix_time * 1000 - T0) / 1000, 656);
    assert!(first.subject.starts_with("[ALERT] historian CPU busy 8 of 10 min"), "{}", first.subject);
    // k = 10: the dip keeps it quiet.
    let o = backtest("sustained-cpu", &[("minutes", "10"), ("at_least", "10")], &e);
    assert!(o.transitions.is_empty());
}

#[test]
fn memory_growth_sees_a_leak_but_not_a_plateau() {
    // Leak: +30% over an hour (4 GiB to 5.2 GiB), sampled every 30 s for 70 min.
    let e = recorded(140, 30, Duration::from_secs(3 * 3600), |i| Sample {
        mem_used: 4 * GIB + (i.min(120) * (GIB * 12 / 10)) / 120,
        ..quiet(i)
    });
    let o = backtest("memory-growth", &[("percent", "20"), ("window_minutes", "60")], &e);
    assert_eq!(o.failures, 0, "{:?}", o.failure_samples);
    let first = o.transitions.first().expect("an alert");
    assert_eq!(first.kind, "alert");
    // Not before the window is 80% covered (48 min).
    assert!((first.unix_time * 1000 - T0) / 1000 >= 48 * 60);
    // Steady memory: nothing.
    let e = recorded(140, 30, Duration::from_secs(3 * 3600), quiet);
    assert!(backtest("memory-growth", &[], &e).transitions.is_empty());
}

#[test]
fn process_missing_follows_the_recorded_fact() {
    let e = recorded(30, 4, Duration::from_secs(3600), |i| Sample {
        procs: Some(if (10..20).contains(&i) { 0 } else { 2 }),
        ..quiet(i)
    });
    let o = backtest("process-missing", &[("processes", "historian")], &e);
    assert_eq!(kinds(&o), vec![(40, "alert"), (80, "recovery")]);
    assert_eq!(o.transitions[0].subject, "[ALERT] historian process historian not running");
}

#[test]
fn reboot_alerts_once_per_boot_and_not_at_the_start() {
    // Up 100000 s; rebooted at round 50 (uptime back to 10 s).
    let e = recorded(400, 4, Duration::from_secs(3600), |i| Sample {
        uptime: if i < 50 { 100_000 + i * 4 } else { 10 + (i - 50) * 4 },
        ..quiet(i)
    });
    let o = backtest("reboot", &[("hold_minutes", "10")], &e);
    // Boot time moved at 200 s (to 190 s); held 10 minutes from the boot: until 790 s.
    assert_eq!(kinds(&o), vec![(200, "alert"), (792, "recovery")]);
}
