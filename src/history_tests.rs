use super::*;

fn report(key: &str, cpu: f64, disk_used: u64, online: bool) -> TargetReport {
    let metrics = ServerMetrics {
        hostname: format!("{key}-host"),
        uptime_seconds: 1000,
        memory: Memory { total: 8 << 30, used: 4 << 30, free: 4 << 30, used_percent: 50.0 },
        disks: vec![Disk {
            device: "/dev/sda1".into(),
            mountpoint: "/".into(),
            fstype: "ext4".into(),
            total: 100 << 30,
            used: disk_used,
            free: (100 << 30) - disk_used,
            used_percent: disk_used as f64 / (100u64 << 30) as f64 * 100.0,
        }],
        top_procs_by_mem: vec![],
        cpu: Cpu { cores: 4, used_percent: cpu, model_name: "Cortex-A72".into() },
        generated_at_utc: String::new(),
        status: if online { HostStatus::Online } else { HostStatus::Offline },
        error: None,
    };
    let mut facts = Answers::new();
    facts.insert(Fact::ProcessCount("sshd".into()), FactValue::Count(2));
    facts.insert(Fact::FileAge("/gone".into()), FactValue::Missing);
    TargetReport {
        url: key.into(),
        status: metrics.status,
        metrics,
        collected: true,
        last_update: None,
        consecutive_failures: if online { 0 } else { 3 },
        last_error_kind: (!online).then_some("timeout"),
        poll_duration: None,
        last_success: None,
        facts: Arc::new(if online { facts } else { Answers::new() }),
    }
}

fn sizing() -> Sizing {
    Sizing { window: Duration::from_secs(3600), interval: Duration::from_secs(4) }
}

#[test]
fn sizing_keeps_every_round_up_to_the_point_cap() {
    assert_eq!((sizing().step_ms(), sizing().capacity()), (4000, 901));
    let six_hours = Sizing { window: Duration::from_secs(6 * 3600), interval: Duration::from_secs(4) };
    assert_eq!((six_hours.step_ms(), six_hours.capacity()), (24_000, 901));
}

#[test]
fn aggregates_over_a_window() {
    let h = History::new(sizing());
    // Disk grows 1 MiB per 4 s round; CPU 10, 20, ..., 100.
    for i in 0..10u64 {
        let snap = Snapshot {
            round: i + 1,
            unix_ms: 1_000_000 + 4000 * i,
            targets: vec![report("t1", 10.0 * (i + 1) as f64, (50 << 30) + (i << 20), true)],
        };
        h.record(&snap);
    }
    let now = 1_036_000;
    let q = |series: &str, secs: u32, agg: Aggregate| h.aggregate("t1", series, secs, agg, now);
    assert_eq!(q("cpu.used_percent", 3600, Aggregate::Max), Some(100.0));
    assert_eq!(q("cpu.used_percent", 3600, Aggregate::Min), Some(10.0));
    assert_eq!(q("cpu.used_percent", 3600, Aggregate::Avg), Some(55.0));
    assert_eq!(q("cpu.used_percent", 3600, Aggregate::Count), Some(10.0));
    // The last 8 s hold the samples at 1032 and 1036 (the one at 1028 is on the edge).
    assert_eq!(q("cpu.used_percent", 8, Aggregate::Count), Some(2.0));
    assert_eq!(q("cpu.used_percent", 8, Aggregate::First), Some(90.0));
    let slope = q("disk.used:/", 3600, Aggregate::Slope).unwrap();
    assert!((slope - (1 << 20) as f64 / 4.0).abs() < 1e-6, "{slope}");
    assert_eq!(q("disk.used:/", 3600, Aggregate::Delta), Some((9u64 << 20) as f64));
    assert_eq!(q("fact.process-count:sshd", 60, Aggregate::Last), Some(2.0));
    assert_eq!(q("fact.file-age:/gone", 60, Aggregate::Last), Some(-1.0));
    // Unknown target or series, or one point for a slope: no answer.
    assert_eq!(h.aggregate("nope", "cpu.used_percent", 60, Aggregate::Max, now), None);
    assert_eq!(q("disk.used:/nope", 60, Aggregate::Max), None);
    assert_eq!(q("disk.used:/", 4, Aggregate::Slope), None);
    // Points, averaged down when asked for fewer.
    let p = h.points("t1", "cpu.used_percent", 3600, 5, now);
    assert_eq!(p, vec![(1_004_000, 15.0), (1_012_000, 35.0), (1_020_000, 55.0), (1_028_000, 75.0), (1_036_000, 95.0)]);
}

#[test]
fn rings_stay_bounded_and_offline_rounds_hold_no_values() {
    let h = History::new(Sizing { window: Duration::from_secs(40), interval: Duration::from_secs(4) });
    for i in 0..100u64 {
        let online = i % 10 != 9;
        h.record(&Snapshot { round: i, unix_ms: 4000 * i, targets: vec![report("t1", 1.0, 1 << 30, online)] });
    }
    let (samples, _) = h.footprint();
    assert_eq!(samples, h.sizing().capacity());
    // 10 rounds in the window, the last one (i = 99) offline.
    assert_eq!(h.aggregate("t1", "cpu.used_percent", 40, Aggregate::Count, 396_000), Some(9.0));
    // A round that comes too soon after the last kept one is not kept.
    h.record(&Snapshot { round: 101, unix_ms: 397_000, targets: vec![report("t1", 1.0, 1 << 30, true)] });
    assert_eq!(h.footprint().0, h.sizing().capacity());
    assert_eq!(h.points("t1", "cpu.used_percent", 40, 100, 397_000).last().map(|p| p.0), Some(392_000));
}

#[test]
fn export_replays_the_rounds_it_was_recorded_from() {
    let h = History::new(sizing());
    let mut live = Vec::new();
    for i in 0..6u64 {
        let snap = Snapshot {
            round: i + 1,
            unix_ms: 2_000_000 + 4000 * i,
            targets: vec![report("a", i as f64, 1 << 30, i != 3), report("b", 5.0, 2 << 30, true)],
        };
        h.record(&snap);
        live.push(snap);
    }
    let export = h.export(None, 3600, 2_020_000);
    // The count the REST handler checks before building equals what is built.
    for (only, seconds) in [(None, 3600), (Some(vec!["b".to_string()]), 3600), (None, 10)] {
        let built = h.export(only.as_deref(), seconds, 2_020_000);
        let counted: usize = built.targets.iter().map(|t| t.times_ms.len() * (t.series.len() + 3)).sum();
        assert_eq!(h.export_values(only.as_deref(), seconds, 2_020_000), counted as u64);
        assert!(counted > 0);
    }
    let text = serde_json::to_vec(&export).unwrap();
    let replayed = Export::parse(&text).unwrap().replay();
    assert_eq!(replayed.len(), 6);
    for (r, l) in replayed.iter().zip(&live) {
        assert_eq!(r.unix_ms, l.unix_ms);
        for (rt, lt) in r.targets.iter().zip(&l.targets) {
            assert_eq!(
                (rt.url.as_str(), rt.status, rt.consecutive_failures),
                (lt.url.as_str(), lt.status, lt.consecutive_failures)
            );
            assert_eq!(rt.last_error_kind, lt.last_error_kind);
            if lt.status == HostStatus::Online {
                assert_eq!(
                    serde_json::to_value(&rt.metrics.disks).unwrap(),
                    serde_json::to_value(&lt.metrics.disks).unwrap()
                );
                assert_eq!(rt.metrics.cpu.used_percent, lt.metrics.cpu.used_percent);
                assert_eq!(rt.metrics.memory.used, lt.metrics.memory.used);
                assert_eq!(rt.facts, lt.facts);
            } else {
                // Offline: the last good metrics, as the poll loop keeps them.
                assert_eq!(rt.metrics.cpu.used_percent, 2.0);
                assert!(rt.facts.is_empty());
            }
        }
    }
    // Broken files are refused with the reason.
    assert!(Export::parse(b"{}").unwrap_err().to_string().starts_with("not a monserv history"));
    let mut e = h.export(None, 3600, 2_020_000);
    e.targets[0].failures.pop();
    let e = Export::parse(&serde_json::to_vec(&e).unwrap()).unwrap_err();
    assert_eq!(e.to_string(), "target \"a\": failures has 5 entries for 6 times");
}

#[test]
fn a_host_inventing_disks_costs_a_bounded_number_of_series() {
    let h = History::new(sizing());
    for i in 0..50u64 {
        // 500 mounts, new names every round.
        let mut r = report("t1", 1.0, 1 << 30, true);
        let d = r.metrics.disks[0].clone();
        r.metrics.disks = (0..500).map(|n| Disk { mountpoint: format!("/m{i}-{n}"), ..d.clone() }).collect();
        h.record(&Snapshot { round: i, unix_ms: 4000 * i, targets: vec![r] });
    }
    let e = h.export(None, 3600, 4000 * 50);
    assert_eq!(e.targets[0].series.len(), MAX_SERIES);
    assert!(e.targets[0].series.contains_key("cpu.used_percent"), "the standard series come first");
}
