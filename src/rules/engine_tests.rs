//! The engine with real rule components: budget, rotation, quarantine, swaps.

use super::*;
use crate::config::RuleLimits;
use crate::model::{HostStatus, Memory, ServerMetrics, TargetReport};

fn snapshot(round: u64) -> Snapshot {
    let metrics = ServerMetrics {
        hostname: "plc".into(),
        uptime_seconds: 100,
        memory: Memory { total: 100, used: 50, free: 50, used_percent: 50.0 },
        disks: vec![],
        top_procs_by_mem: vec![],
        generated_at_utc: "2026-12-02T00:00:00Z".into(),
        cpu: Default::default(),
        status: HostStatus::Online,
        error: None,
    };
    let target = TargetReport {
        url: "local".into(),
        status: HostStatus::Online,
        metrics,
        collected: true,
        last_update: None,
        consecutive_failures: 0,
        last_error_kind: None,
        poll_duration: None,
        last_success: None,
        facts: Default::default(),
    };
    Snapshot { round, unix_ms: 0, targets: vec![target] }
}

fn dist(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/rules-wasm/dist/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// (rule name, file under dist/, config pairs)
type Spec<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

async fn engine_with(limits: RuleLimits, rules: &[Spec<'_>]) -> RuleEngine {
    let engine = RuleEngine::new(Sandbox::new(limits).unwrap());
    for (name, file, config) in rules {
        let values = config.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let settings = RuleSettings { values, ..RuleSettings::default() };
        engine.install(name, dist(file), settings, Source::File).await.unwrap();
    }
    engine
}

fn stat<'a>(status: &'a [RuleStatus], name: &str) -> &'a RuleStatus {
    status.iter().find(|s| s.name == name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_round_budget_skips_and_rotates_so_every_rule_gets_its_turn() {
    let limits = RuleLimits {
        timeout: Duration::from_millis(40),
        round_budget: Duration::from_millis(100),
        ..RuleLimits::default()
    };
    let mut rules: Vec<Spec> = vec![("a-threshold", "threshold.wasm", &[("memory_percent", "10")])];
    let names: Vec<String> = (0..6).map(|i| format!("spin-{i}")).collect();
    rules.extend(names.iter().map(|n| (n.as_str(), "test/spin.wasm", &[][..])));
    let engine = engine_with(limits, &rules).await;
    let mut alerts = Vec::new();
    for round in 1..=7 {
        let started = Instant::now();
        alerts.extend(engine.evaluate_round(&snapshot(round)).await);
        // The budget is checked before each rule: at most one timeout past it.
        assert!(started.elapsed() < Duration::from_secs(2), "round {round} took {:?}", started.elapsed());
    }
    let status = engine.status();
    let skipped: u64 = status.iter().map(|s| s.skipped_over_budget).sum();
    assert!(skipped > 0, "{status:#?}");
    // Rotation: the rule that sorts first was not the only one ever evaluated.
    assert!(status.iter().all(|s| s.evaluations > 0), "a rule never got its turn: {status:#?}");
    assert!(stat(&status, "a-threshold").evaluations >= 1);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].subject, "[ALERT] plc memory high");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_failures_quarantine_only_that_rule() {
    let engine = engine_with(
        RuleLimits::default(),
        &[("panic", "test/panic.wasm", &[]), ("threshold", "threshold.wasm", &[("memory_percent", "10")])],
    )
    .await;
    for round in 1..=4 {
        engine.evaluate_round(&snapshot(round)).await;
    }
    let status = engine.status();
    let p = stat(&status, "panic");
    assert_eq!((p.status, p.failures, p.evaluations), ("quarantined", 3, 3), "{p:#?}");
    assert!(p.last_error.as_deref().unwrap_or_default().starts_with("trapped"));
    let t = stat(&status, "threshold");
    assert_eq!((t.status, t.failures, t.evaluations, t.firing), ("ok", 0, 4, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swapped_rule_keeps_its_log_budget_and_counters() {
    let engine = engine_with(RuleLimits::default(), &[("r", "threshold.wasm", &[])]).await;
    engine.evaluate_round(&snapshot(1)).await;
    let log_before = engine.slots()[0].ctx.log.clone();
    engine.install("r", dist("threshold.wasm"), RuleSettings::default(), Source::File).await.unwrap();
    assert!(Arc::ptr_eq(&log_before, &engine.slots()[0].ctx.log), "a swap must not reset the log budget");
    let s = &engine.status()[0];
    assert_eq!((s.evaluations, s.swaps), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_the_state_of_loaded_and_rejected_rules_only() {
    use crate::store::alerts::{AlertStore, Changes, Firing};
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(AlertStore::open(&dir.path().join("alerts.redb")).unwrap());
    let firing = |rule: &str| Firing {
        rule: rule.into(),
        key: "local/mem".into(),
        subject: "s".into(),
        message: "m".into(),
        since: 1,
    };
    let fired = vec![firing("threshold"), firing("typo"), firing("deleted")];
    store.commit(&Changes { fired, ..Changes::default() }).unwrap();
    let engine = RuleEngine::with_store(Sandbox::new(RuleLimits::default()).unwrap(), Some(store.clone()));
    let settings =
        RuleSettings { values: [("memory_percent".to_string(), "10".to_string())].into(), ..RuleSettings::default() };
    engine.install("threshold", dist("threshold.wasm"), settings, Source::File).await.unwrap();
    engine.set_rejected("typo", Some("typo.toml: expected a value".into()));
    engine.forget_unloaded().await;
    let rules: Vec<String> = store.active().unwrap().into_iter().map(|f| f.rule).collect();
    assert_eq!(rules, vec!["threshold".to_string(), "typo".to_string()]);
    // The restored alert is not sent again while its condition holds; the deleted
    // rule's alert is closed with one recovery (issue #15).
    let messages = engine.evaluate_round(&snapshot(1)).await;
    let sent: Vec<(crate::model::AlertKind, &str)> =
        messages.iter().map(|m| (m.alert_type, m.subject.as_str())).collect();
    assert_eq!(sent, vec![(crate::model::AlertKind::Recovery, "[RECOVERED] s")]);
    assert!(messages[0].message.contains("Rule deleted was removed"), "{}", messages[0].message);
    assert!(engine.evaluate_round(&snapshot(2)).await.is_empty());
    let history = store.history(0, 10).unwrap();
    assert!(history.iter().any(|t| t.rule == "deleted" && t.alert_type == "recovery"), "{history:?}");
    assert_eq!(engine.active_alerts().len(), 2);
}
