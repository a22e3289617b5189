//! The poll loop: one round every `poll_interval`, all targets at once, each under
//! its own deadline, then one snapshot handed on.
//!
//! A slow, hung or dead host costs the round at most `host_timeout`; it is marked
//! offline and retried (its collector backs off), and the other hosts' fresh
//! metrics go out with the same round. Missed ticks are delayed, not bunched up.
//! What happens to a snapshot is the caller's business (`publish`, given at
//! construction: the metrics go out first, then the rules get the round on their own
//! task), so nothing later in the data flow can slow the cadence.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::collect::parse::CpuTimes;
use crate::collect::sample::build_metrics;
use crate::collect::{CollectError, Collector, SampleSpec};
use crate::model::{self, HostStatus, Memory, ServerMetrics, Snapshot, TargetReport};

/// One target as the poll loop tracks it.
pub struct PolledTarget {
    /// Masked URL: the key in `metrics_update`.
    pub key: String,
    /// Shown as hostname until the host has answered once.
    pub fallback_name: String,
    pub collector: Collector,
    cpu_prev: Option<CpuTimes>,
    report: TargetReport,
}

impl PolledTarget {
    pub fn new(key: String, fallback_name: String, collector: Collector) -> Self {
        let metrics = ServerMetrics {
            hostname: fallback_name.clone(),
            uptime_seconds: 0,
            memory: Memory::default(),
            disks: Vec::new(),
            top_procs_by_mem: Vec::new(),
            generated_at_utc: model::rfc3339_utc(SystemTime::now()),
            cpu: Default::default(),
            status: HostStatus::Offline,
            error: Some("not polled yet".into()),
        };
        PolledTarget {
            report: TargetReport {
                url: key.clone(),
                status: HostStatus::Offline,
                metrics,
                collected: false,
                last_update: None,
                consecutive_failures: 0,
                last_error_kind: None,
                poll_duration: None,
                last_success: None,
                facts: Arc::default(),
            },
            key,
            fallback_name,
            collector,
            cpu_prev: None,
        }
    }

    fn apply(
        &mut self,
        (outcome, took): (Result<crate::collect::RawSample, CollectError>, Duration),
        spec: &SampleSpec,
        now: SystemTime,
    ) {
        self.report.poll_duration = Some(took);
        let built = outcome.and_then(|raw| {
            build_metrics(&raw, self.cpu_prev, spec.top_n, &spec.fs_filter, now)
                .map(|(m, cpu)| (m, cpu, raw.facts))
                .map_err(CollectError::from)
        });
        let r = &mut self.report;
        match built {
            Ok((metrics, cpu, facts)) => {
                r.facts = Arc::new(facts);
                if r.status == HostStatus::Offline && r.consecutive_failures > 0 {
                    tracing::info!(target = %self.key, after_failures = r.consecutive_failures, "host is back online");
                }
                self.cpu_prev = Some(cpu);
                r.metrics = metrics;
                r.status = HostStatus::Online;
                r.collected = true;
                r.last_update = Some(r.metrics.generated_at_utc.clone());
                r.consecutive_failures = 0;
                r.last_error_kind = None;
                r.last_success = Some(now);
            }
            Err(e) => {
                // Log transitions and changes of reason, not every failed round. A
                // round skipped while the collector backs off is no new reason.
                let kind = e.kind();
                let backing_off = matches!(e, CollectError::Backoff { .. });
                if r.status == HostStatus::Online
                    || r.consecutive_failures == 0
                    || (r.last_error_kind != Some(kind) && !backing_off)
                {
                    tracing::warn!(target = %self.key, error = %e, kind, "host is offline");
                }
                if !backing_off {
                    r.last_error_kind = Some(kind);
                }
                self.cpu_prev = None;
                r.facts = Arc::default();
                r.status = HostStatus::Offline;
                r.consecutive_failures = r.consecutive_failures.saturating_add(1);
                r.metrics.status = HostStatus::Offline;
                // An SSH peer's own words (a disconnect reason, a banner) can be in here.
                let mut error = e.to_string();
                crate::collect::parse::clean_field(&mut error, 1024);
                r.metrics.error = Some(error);
            }
        }
    }
}

/// What the poll loop does with each round's snapshot. It must not block: it runs
/// on the poll loop between rounds.
pub type Publish = Box<dyn Fn(Arc<Snapshot>) + Send + Sync>;

pub struct Poller {
    pub targets: Vec<PolledTarget>,
    pub spec: SampleSpec,
    pub interval: Duration,
    pub host_timeout: Duration,
    publish: Publish,
    /// Stamped every round; the systemd watchdog pings only while it is fresh.
    pub heartbeat: Arc<crate::systemd::Heartbeat>,
    /// The facts the loaded rules want, read at the start of every round.
    pub wanted: Option<crate::facts::Wanted>,
    round: u64,
}

impl Poller {
    pub fn new(
        targets: Vec<PolledTarget>,
        spec: SampleSpec,
        interval: Duration,
        host_timeout: Duration,
        publish: Publish,
    ) -> Self {
        Poller { targets, spec, interval, host_timeout, publish, heartbeat: Default::default(), wanted: None, round: 0 }
    }

    /// Poll until `shutdown`; then close the SSH sessions politely.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            self.heartbeat.beat();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let snapshot = tokio::select! {
                _ = shutdown.cancelled() => break,
                s = self.round() => s,
            };
            (self.publish)(Arc::new(snapshot));
        }
        let closing = self.targets.iter_mut().map(|t| t.collector.close());
        let _ = tokio::time::timeout(Duration::from_secs(1), futures_util::future::join_all(closing)).await;
    }

    /// One round: every target concurrently, each under the deadline.
    pub async fn round(&mut self) -> Snapshot {
        if let Some(wanted) = &self.wanted {
            self.spec.facts = wanted.current();
        }
        let spec = &self.spec;
        let deadline = self.host_timeout;
        let outcomes = futures_util::future::join_all(self.targets.iter_mut().map(|t| async {
            let started = tokio::time::Instant::now();
            let outcome = with_deadline(deadline, t.collector.sample(spec)).await;
            (outcome, started.elapsed())
        }))
        .await;
        let now = SystemTime::now();
        for (t, outcome) in self.targets.iter_mut().zip(outcomes) {
            if matches!(outcome.0, Err(CollectError::Timeout(_))) {
                t.collector.timed_out();
            }
            t.apply(outcome, spec, now);
        }
        self.round += 1;
        let unix_ms = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        Snapshot { round: self.round, unix_ms, targets: self.targets.iter().map(|t| t.report.clone()).collect() }
    }
}

async fn with_deadline<T>(
    deadline: Duration,
    work: impl Future<Output = Result<T, CollectError>>,
) -> Result<T, CollectError> {
    tokio::time::timeout(deadline, work).await.unwrap_or(Err(CollectError::Timeout(deadline)))
}

#[cfg(test)]
mod tests {
    //! The loop under paused tokio time, with collectors that answer from a captured
    //! host, hang, or fail: cadence and deadlines without real hosts or real waiting.

    use std::sync::Mutex;

    use futures_util::future::BoxFuture;
    use tokio::time::Instant;

    use super::*;
    use crate::collect::sample::RawSample;
    use crate::collect::{Collect, FsFilter};

    const CAPTURE: &[u8] = include_bytes!("../tests/fixtures/gnu-debian12.out");

    /// Answers from the captured GNU host after `delay`, or never.
    struct Fake {
        delay: Option<Duration>,
    }

    impl Collect for Fake {
        fn sample<'a>(&'a mut self, _spec: &'a SampleSpec) -> BoxFuture<'a, Result<RawSample, CollectError>> {
            let delay = self.delay;
            Box::pin(async move {
                match delay {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending::<()>().await,
                }
                let sections = crate::collect::script::split_sections(CAPTURE, "fixture")?;
                Ok(RawSample::from_sections(&sections, &[]))
            })
        }
    }

    fn target(key: &str, delay: Option<Duration>) -> PolledTarget {
        PolledTarget::new(key.into(), key.into(), Collector::Other(Box::new(Fake { delay })))
    }

    fn spec() -> SampleSpec {
        SampleSpec { top_n: 5, fs_filter: FsFilter::new(&[]), max_output_bytes: 1 << 20, facts: Arc::from([]) }
    }

    type Seen = Arc<Mutex<Vec<(Instant, Arc<Snapshot>)>>>;

    fn recorder() -> (Seen, Publish) {
        let seen: Seen = Arc::default();
        let sink = seen.clone();
        (seen, Box::new(move |s| sink.lock().unwrap().push((Instant::now(), s))))
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_host_costs_one_deadline_and_the_cadence_holds() {
        let (seen, publish) = recorder();
        let targets = vec![target("fast", Some(Duration::from_millis(20))), target("hung", None)];
        let poller = Poller::new(targets, spec(), Duration::from_secs(1), Duration::from_millis(500), publish);
        let shutdown = CancellationToken::new();
        let start = Instant::now();
        let task = tokio::spawn(poller.run(shutdown.clone()));
        tokio::time::sleep(Duration::from_millis(10_100)).await;
        shutdown.cancel();
        task.await.unwrap();
        let seen = seen.lock().unwrap();
        // Rounds start at 0, 1, ..., 10 s and each ends at the hung host's deadline.
        assert_eq!(seen.len(), 10, "{:?}", seen.iter().map(|(t, _)| *t - start).collect::<Vec<_>>());
        for (i, (at, snap)) in seen.iter().enumerate() {
            assert_eq!(*at - start, Duration::from_millis(500) + Duration::from_secs(i as u64), "round {i}");
            assert_eq!(snap.round, i as u64 + 1);
            assert_eq!(snap.targets[0].status, HostStatus::Online);
            assert_eq!(snap.targets[0].metrics.hostname, "vm");
            assert_eq!(snap.targets[1].status, HostStatus::Offline);
            assert_eq!(snap.targets[1].metrics.error.as_deref(), Some("no complete answer within 500ms"));
            assert_eq!(snap.targets[1].consecutive_failures, i as u32 + 1);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn slow_publishing_cannot_bunch_rounds_up() {
        // Every host answers after 1.5 s at a 1 s interval: missed ticks are delayed,
        // never fired back to back.
        let (seen, publish) = recorder();
        let targets = vec![target("slow", Some(Duration::from_millis(1500)))];
        let poller = Poller::new(targets, spec(), Duration::from_secs(1), Duration::from_secs(2), publish);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(poller.run(shutdown.clone()));
        tokio::time::sleep(Duration::from_secs(10)).await;
        shutdown.cancel();
        task.await.unwrap();
        let seen = seen.lock().unwrap();
        let gaps: Vec<Duration> = seen.windows(2).map(|w| w[1].0 - w[0].0).collect();
        assert!(gaps.iter().all(|g| *g >= Duration::from_millis(1500)), "{gaps:?}");
        assert!(seen.iter().all(|(_, s)| s.targets[0].status == HostStatus::Online));
    }
}
