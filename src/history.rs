//! The recent past of every target, in memory: what rules query (min, max, avg,
//! slope ... over a window), what the console charts, and what a backtest replays.
//!
//! One sample per round (or per `step`, when the window is long enough that keeping
//! every round would pass `max_points`), per target, in fixed-size rings: memory is
//! bounded by targets x series x `max_points`, whatever runs. A series is a number
//! from the snapshot (`cpu.used_percent`, `disk.used:/var`, a declared fact's
//! value ...); a sample where the target was offline holds none. Queries walk only
//! the window asked for, under a read lock, and copy nothing but the answer.
//!
//! The export (`History::export`) is columnar JSON; `History::from_export` and
//! `replay` turn it back into the snapshots it was recorded from, so a rule tried on
//! an exported history sees what it would have seen live (top processes and text
//! unit states are not kept, so they are absent in a replay).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::facts::{Answers, Fact, FactValue};
use crate::model::{Cpu, Disk, HostStatus, Memory, ServerMetrics, Snapshot, TargetReport};

/// The most samples kept per target and series, whatever the window.
pub const MAX_POINTS: usize = 900;
/// The most points `points` answers with (more are averaged into this many).
pub const MAX_QUERY_POINTS: usize = 1000;
/// Disks of one target kept in the history (in the order the host reports them);
/// a host reporting thousands of mounts costs no more than this many.
pub const MAX_DISKS: usize = 64;
/// Series of one target: the standard ones, four per kept disk, the declared facts.
/// New series past it (a host inventing mountpoints every round) are not kept.
pub const MAX_SERIES: usize = 8 + 4 * MAX_DISKS + crate::facts::MAX_TOTAL;
/// The export format's name and version.
pub const FORMAT: &str = "monserv-history/1";

/// What to compute over a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    Min,
    Max,
    Avg,
    First,
    Last,
    /// Samples with a value.
    Count,
    /// Least-squares change per second.
    Slope,
    /// Last minus first.
    Delta,
}

/// How the history is sized: the window kept and the round interval.
#[derive(Debug, Clone, Copy)]
pub struct Sizing {
    pub window: Duration,
    pub interval: Duration,
}

impl Sizing {
    /// Milliseconds between kept samples: every round, unless that would pass
    /// `MAX_POINTS`.
    pub fn step_ms(&self) -> u64 {
        let every = (self.interval.as_millis() as u64).max(1);
        every.max((self.window.as_millis() as u64).div_ceil(MAX_POINTS as u64))
    }

    pub fn capacity(&self) -> usize {
        ((self.window.as_millis() as u64 / self.step_ms()) as usize + 1).clamp(2, MAX_POINTS + 1)
    }
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Meta {
    hostname: String,
    cpu_model: String,
    /// mountpoint -> (device, fstype), as last seen.
    disks: BTreeMap<String, (String, String)>,
}

/// One series' values. Many never change within the window (totals, core counts,
/// an idle disk): those cost one value, not one per sample, until they change.
#[derive(Debug)]
enum Ring {
    Same { value: f64, len: usize },
    Each(VecDeque<f64>),
}

impl Ring {
    /// Bytes of values held (the ring's own header aside).
    fn bytes(&self) -> usize {
        match self {
            Ring::Same { .. } => 0,
            Ring::Each(v) => v.capacity() * 8,
        }
    }

    fn get(&self, i: usize) -> Option<f64> {
        match self {
            Ring::Same { value, len } => (i < *len).then_some(*value),
            Ring::Each(v) => v.get(i).copied(),
        }
    }

    fn push(&mut self, x: f64) {
        match self {
            // NaN == NaN here: "no value" repeated is still the same.
            Ring::Same { value, len } if value.to_bits() == x.to_bits() || *len == 0 => {
                *value = x;
                *len += 1;
            }
            Ring::Same { value, len } => {
                let mut v = VecDeque::with_capacity(*len + 1);
                v.resize(*len, *value);
                v.push_back(x);
                *self = Ring::Each(v);
            }
            Ring::Each(v) => v.push_back(x),
        }
    }

    fn pop_front(&mut self) {
        match self {
            Ring::Same { len, .. } => *len = len.saturating_sub(1),
            Ring::Each(v) => {
                v.pop_front();
            }
        }
    }

    fn has_values(&self) -> bool {
        match self {
            Ring::Same { value, len } => *len > 0 && !value.is_nan(),
            Ring::Each(v) => v.iter().any(|x| !x.is_nan()),
        }
    }
}

#[derive(Debug, Default)]
struct TargetHistory {
    meta: Meta,
    /// Milliseconds since the epoch.
    times: VecDeque<u64>,
    /// Consecutive failures at each sample (0: online) and why the last poll failed
    /// (an index into `KINDS` plus one; 0 for none).
    failures: VecDeque<u32>,
    errors: VecDeque<u8>,
    /// Each as long as `times`; NaN where the series had no value.
    series: BTreeMap<Arc<str>, Ring>,
}

impl TargetHistory {
    fn push(&mut self, t: u64, failures: u32, error: Option<&str>, values: Vec<(String, f64)>, capacity: usize) {
        if self.times.len() >= capacity {
            self.times.pop_front();
            self.failures.pop_front();
            self.errors.pop_front();
            for s in self.series.values_mut() {
                s.pop_front();
            }
            // A series with nothing left in the window (a disk unmounted an hour ago) goes.
            self.series.retain(|_, s| s.has_values());
        }
        let len = self.times.len();
        self.times.push_back(t);
        self.failures.push_back(failures);
        self.errors.push_back(error.map_or(0, kind_index));
        let mut values: HashMap<String, f64> = values.into_iter().collect();
        for (name, ring) in self.series.iter_mut() {
            ring.push(values.remove(&**name).unwrap_or(f64::NAN));
        }
        for (name, v) in values {
            if self.series.len() >= MAX_SERIES {
                break;
            }
            let mut ring = Ring::Same { value: f64::NAN, len };
            ring.push(v);
            self.series.insert(name.into(), ring);
        }
    }

    /// Indexes of the samples in (now - seconds, now], times in milliseconds.
    fn window(&self, seconds: u32, now: u64) -> std::ops::Range<usize> {
        let from = now.saturating_sub(u64::from(seconds) * 1000);
        let start = self.times.partition_point(|&t| t <= from);
        let end = self.times.partition_point(|&t| t <= now);
        start..end.max(start)
    }
}

/// The numbers of one target's report, by series name.
fn series_of(t: &TargetReport) -> Vec<(String, f64)> {
    let m = &t.metrics;
    let mut v = vec![
        ("cpu.used_percent".to_string(), m.cpu.used_percent),
        ("cpu.cores".to_string(), f64::from(m.cpu.cores)),
        ("memory.used_percent".to_string(), m.memory.used_percent),
        ("memory.used".to_string(), m.memory.used as f64),
        ("memory.total".to_string(), m.memory.total as f64),
        ("memory.free".to_string(), m.memory.free as f64),
        ("uptime_seconds".to_string(), m.uptime_seconds as f64),
    ];
    for d in m.disks.iter().take(MAX_DISKS) {
        v.push((format!("disk.used_percent:{}", d.mountpoint), d.used_percent));
        v.push((format!("disk.used:{}", d.mountpoint), d.used as f64));
        v.push((format!("disk.free:{}", d.mountpoint), d.free as f64));
        v.push((format!("disk.total:{}", d.mountpoint), d.total as f64));
    }
    for (fact, value) in t.facts.iter() {
        let n = match value {
            // Recorded as -1 so that a replay can tell "no such file" from "unknown".
            FactValue::Missing => Some(-1.0),
            other => other.number(),
        };
        if let Some(n) = n {
            v.push((fact.series_name(), n));
        }
    }
    v
}

/// The shared history. Cheap to query from many threads; written once per round.
#[derive(Debug)]
pub struct History {
    sizing: Sizing,
    inner: RwLock<HashMap<String, TargetHistory>>,
}

impl History {
    pub fn new(sizing: Sizing) -> Self {
        History { sizing, inner: RwLock::default() }
    }

    pub fn sizing(&self) -> Sizing {
        self.sizing
    }

    /// Add a round (skipped when it is closer than `step` to the last one kept).
    pub fn record(&self, snapshot: &Snapshot) {
        let step = self.sizing.step_ms();
        let slack = self.sizing.interval.as_millis() as u64 / 2;
        let capacity = self.sizing.capacity();
        let now = snapshot.unix_ms;
        let mut all = self.inner.write().unwrap_or_else(|e| e.into_inner());
        // Targets removed from the configuration are forgotten.
        if all.len() > snapshot.targets.len() {
            let keys: std::collections::HashSet<&str> = snapshot.targets.iter().map(|t| t.url.as_str()).collect();
            all.retain(|k, _| keys.contains(k.as_str()));
        }
        for t in &snapshot.targets {
            let h = all.entry(t.url.clone()).or_default();
            if h.times.back().is_some_and(|&last| now < last + step.saturating_sub(slack).max(1)) {
                continue;
            }
            let online = t.status == HostStatus::Online && t.collected;
            if t.collected {
                let m = &t.metrics;
                h.meta.hostname.clone_from(&m.hostname);
                h.meta.cpu_model.clone_from(&m.cpu.model_name);
                for d in m.disks.iter().take(MAX_DISKS) {
                    h.meta.disks.insert(d.mountpoint.clone(), (d.device.clone(), d.fstype.clone()));
                }
                if h.meta.disks.len() > MAX_DISKS {
                    h.meta.disks.retain(|mount, _| m.disks.iter().any(|d| &d.mountpoint == mount));
                }
            }
            let values = if online { series_of(t) } else { Vec::new() };
            let failures = if online { 0 } else { t.consecutive_failures.max(1) };
            h.push(now, failures, t.last_error_kind, values, capacity);
        }
    }

    /// An aggregate of `series` over the last `seconds` before `now` (milliseconds),
    /// or none when there are no values (two, for slope and delta). Slopes are per
    /// second.
    pub fn aggregate(&self, target: &str, series: &str, seconds: u32, agg: Aggregate, now: u64) -> Option<f64> {
        let all = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let h = all.get(target)?;
        let ring = h.series.get(series)?;
        let range = h.window(seconds, now);
        let points = range.clone().filter_map(|i| Some((h.times[i], ring.get(i)?))).filter(|(_, v)| !v.is_nan());
        aggregate(points, agg)
    }

    /// The (milliseconds, value) of `series` over the last `seconds`, oldest first;
    /// when there are more than `max_points`, neighbours are averaged down to that
    /// many (each at the time of its newest).
    pub fn points(&self, target: &str, series: &str, seconds: u32, max_points: usize, now: u64) -> Vec<(u64, f64)> {
        let all = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let Some((h, ring)) = all.get(target).and_then(|h| Some((h, h.series.get(series)?))) else {
            return Vec::new();
        };
        let pts: Vec<(u64, f64)> = h
            .window(seconds, now)
            .filter_map(|i| Some((h.times[i], ring.get(i)?)))
            .filter(|(_, v)| !v.is_nan())
            .collect();
        let max = max_points.clamp(1, MAX_QUERY_POINTS);
        if pts.len() <= max {
            return pts;
        }
        pts.chunks(pts.len().div_ceil(max))
            .map(|c| (c[c.len() - 1].0, c.iter().map(|p| p.1).sum::<f64>() / c.len() as f64))
            .collect()
    }

    /// Samples kept, and the bytes they take (times, failures, values, and each
    /// series' header and name): the benchmarks' "memory per host per hour".
    pub fn footprint(&self) -> (usize, usize) {
        let all = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let samples = all.values().map(|h| h.times.len()).sum();
        let bytes = all
            .values()
            .map(|h| {
                h.times.capacity() * 8
                    + h.failures.capacity() * 4
                    + h.errors.capacity()
                    + h.series.iter().map(|(name, r)| r.bytes() + name.len() + 64).sum::<usize>()
            })
            .sum();
        (samples, bytes)
    }

    /// How many values [`History::export`] would hold for the same arguments (times,
    /// failures, errors and every series, one each per round), counted without
    /// building it: the REST answer is refused before it costs memory.
    pub fn export_values(&self, targets: Option<&[String]>, seconds: u64, now_ms: u64) -> u64 {
        let all = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let from = now_ms.saturating_sub(seconds * 1000);
        all.iter()
            .filter(|(k, _)| targets.is_none_or(|t| t.contains(k)))
            .map(|(_, h)| {
                let points = h.times.len() - h.times.partition_point(|&t| t <= from);
                points as u64 * (h.series.len() as u64 + 3)
            })
            .sum()
    }

    /// The last `seconds` before `now_ms` (of `targets`, or all) as the export document.
    pub fn export(&self, targets: Option<&[String]>, seconds: u64, now_ms: u64) -> Export {
        let all = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let mut keys: Vec<&String> = all.keys().filter(|k| targets.is_none_or(|t| t.contains(k))).collect();
        keys.sort();
        let from = now_ms.saturating_sub(seconds * 1000);
        let targets = keys
            .into_iter()
            .filter_map(|k| {
                let h = &all[k];
                let start = h.times.partition_point(|&t| t <= from);
                let range = start..h.times.len();
                (!range.is_empty()).then(|| ExportTarget {
                    key: k.clone(),
                    meta: h.meta.clone(),
                    times_ms: h.times.range(range.clone()).copied().collect(),
                    failures: h.failures.range(range.clone()).copied().collect(),
                    errors: h.errors.range(range.clone()).map(|&e| kind_name(e).map(str::to_string)).collect(),
                    series: h
                        .series
                        .iter()
                        .map(|(name, ring)| {
                            let values = range.clone().map(|i| ring.get(i).filter(|v| !v.is_nan())).collect();
                            (name.to_string(), values)
                        })
                        .collect(),
                })
            })
            .collect();
        Export {
            format: FORMAT.into(),
            step_ms: self.sizing.step_ms(),
            window_seconds: self.sizing.window.as_secs(),
            targets,
        }
    }
}

fn aggregate(points: impl Iterator<Item = (u64, f64)>, agg: Aggregate) -> Option<f64> {
    let (mut n, mut sum, mut min, mut max) = (0usize, 0.0, f64::INFINITY, f64::NEG_INFINITY);
    let (mut first, mut last) = (None, None);
    // For the slope: sums over (t - t0, v), t0 the first time, to keep precision.
    let (mut st, mut stt, mut stv) = (0.0, 0.0, 0.0);
    let mut t0 = None;
    for (t, v) in points {
        let t0 = *t0.get_or_insert(t);
        let x = (t - t0) as f64 / 1000.0;
        n += 1;
        sum += v;
        min = min.min(v);
        max = max.max(v);
        first.get_or_insert(v);
        last = Some(v);
        st += x;
        stt += x * x;
        stv += x * v;
    }
    if n == 0 {
        return None;
    }
    let nf = n as f64;
    match agg {
        Aggregate::Min => Some(min),
        Aggregate::Max => Some(max),
        Aggregate::Avg => Some(sum / nf),
        Aggregate::First => first,
        Aggregate::Last => last,
        Aggregate::Count => Some(nf),
        Aggregate::Delta => (n >= 2).then(|| last.unwrap_or(0.0) - first.unwrap_or(0.0)),
        Aggregate::Slope => {
            let denominator = nf * stt - st * st;
            (n >= 2 && denominator > 0.0).then(|| (nf * stv - st * sum) / denominator)
        }
    }
}

/// The export document (`GET /api/v1/history`, `rule test --history`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Export {
    pub format: String,
    /// Milliseconds between kept samples.
    pub step_ms: u64,
    /// The window the history kept (rules' queries reach this far back).
    #[serde(default = "default_window")]
    pub window_seconds: u64,
    pub targets: Vec<ExportTarget>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportTarget {
    pub key: String,
    meta: Meta,
    /// Milliseconds since the epoch.
    pub times_ms: Vec<u64>,
    pub failures: Vec<u32>,
    pub errors: Vec<Option<String>>,
    /// Each as long as `times`; null where there was no value.
    pub series: BTreeMap<String, Vec<Option<f64>>>,
}

fn default_window() -> u64 {
    3600
}

/// Why an export file cannot be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("not a monserv history (expects format {FORMAT:?}): {0}")]
    Format(String),
    #[error("target {key:?}: {what} has {got} entries for {times} times")]
    Ragged { key: String, what: String, got: usize, times: usize },
    #[error("target {key:?}: times must increase")]
    Unordered { key: String },
}

impl Export {
    pub fn parse(bytes: &[u8]) -> Result<Export, ReplayError> {
        /// As `GET /api/v1/history` answers: the export in an envelope.
        #[derive(serde::Deserialize)]
        struct Envelope {
            data: Export,
        }
        let e = match serde_json::from_slice::<Export>(bytes) {
            Ok(e) => e,
            Err(first) => serde_json::from_slice::<Envelope>(bytes)
                .map(|w| w.data)
                .map_err(|_| ReplayError::Format(first.to_string()))?,
        };
        if e.format != FORMAT {
            return Err(ReplayError::Format(format!("format is {:?}", e.format)));
        }
        for t in &e.targets {
            let ragged = |what: &str, got: usize| ReplayError::Ragged {
                key: t.key.clone(),
                what: what.to_string(),
                got,
                times: t.times_ms.len(),
            };
            if t.failures.len() != t.times_ms.len() {
                return Err(ragged("failures", t.failures.len()));
            }
            if t.errors.len() != t.times_ms.len() {
                return Err(ragged("errors", t.errors.len()));
            }
            if let Some((name, s)) = t.series.iter().find(|(_, s)| s.len() != t.times_ms.len()) {
                return Err(ragged(name, s.len()));
            }
            if t.times_ms.windows(2).any(|w| w[0] >= w[1]) {
                return Err(ReplayError::Unordered { key: t.key.clone() });
            }
        }
        Ok(e)
    }

    /// The rounds this history was recorded from, oldest first: every distinct time,
    /// with the targets that had a sample then (the last good metrics for an offline
    /// one, as live).
    pub fn replay(&self) -> Vec<Snapshot> {
        let mut times: Vec<u64> = self.targets.iter().flat_map(|t| t.times_ms.iter().copied()).collect();
        times.sort_unstable();
        times.dedup();
        let mut cursors = vec![0usize; self.targets.len()];
        let mut last_good: Vec<Option<(ServerMetrics, Answers)>> = vec![None; self.targets.len()];
        times
            .iter()
            .enumerate()
            .map(|(round, &t)| {
                let mut reports = Vec::new();
                for (i, target) in self.targets.iter().enumerate() {
                    let at = cursors[i];
                    if target.times_ms.get(at) != Some(&t) {
                        continue;
                    }
                    cursors[i] += 1;
                    let failures = target.failures[at];
                    let online = failures == 0;
                    if online {
                        last_good[i] = Some(target.metrics_at(at, t));
                    }
                    let (metrics, facts, collected) = match &last_good[i] {
                        Some((m, f)) => (m.clone(), if online { f.clone() } else { Answers::new() }, true),
                        None => (target.never_answered(t), Answers::new(), false),
                    };
                    let mut metrics = metrics;
                    metrics.status = if online { HostStatus::Online } else { HostStatus::Offline };
                    reports.push(TargetReport {
                        url: target.key.clone(),
                        status: metrics.status,
                        metrics,
                        collected,
                        last_update: None,
                        consecutive_failures: failures,
                        last_error_kind: target.errors[at].as_deref().map(static_kind),
                        poll_duration: None,
                        last_success: None,
                        facts: Arc::new(facts),
                    });
                }
                Snapshot { round: round as u64 + 1, unix_ms: t, targets: reports }
            })
            .collect()
    }
}

/// Error kinds are a fixed set of names (`CollectError::kind`); anything else reads
/// as `other`.
const KINDS: [&str; 14] = [
    "connect",
    "host_key_changed",
    "host_key_unknown",
    "host_key_check",
    "auth",
    "ssh",
    "timeout",
    "output_too_large",
    "parse",
    "remote",
    "http",
    "local",
    "backoff",
    "other",
];

fn static_kind(kind: &str) -> &'static str {
    KINDS.iter().find(|k| **k == kind).copied().unwrap_or("other")
}

fn kind_index(kind: &str) -> u8 {
    KINDS.iter().position(|k| *k == kind).unwrap_or(KINDS.len() - 1) as u8 + 1
}

fn kind_name(index: u8) -> Option<&'static str> {
    index.checked_sub(1).and_then(|i| KINDS.get(i as usize)).copied()
}

impl ExportTarget {
    fn value(&self, name: &str, at: usize) -> Option<f64> {
        self.series.get(name).and_then(|s| s.get(at).copied().flatten())
    }

    fn never_answered(&self, t: u64) -> ServerMetrics {
        ServerMetrics {
            hostname: self.meta.hostname.clone(),
            uptime_seconds: 0,
            memory: Memory::default(),
            disks: Vec::new(),
            top_procs_by_mem: Vec::new(),
            cpu: Cpu::default(),
            generated_at_utc: crate::model::rfc3339_utc(std::time::UNIX_EPOCH + Duration::from_millis(t)),
            status: HostStatus::Offline,
            error: None,
        }
    }

    fn metrics_at(&self, at: usize, t: u64) -> (ServerMetrics, Answers) {
        let n = |name: &str| self.value(name, at).unwrap_or(0.0);
        let u = |name: &str| n(name).max(0.0) as u64;
        let mut disks: Vec<Disk> = self
            .series
            .keys()
            .filter_map(|k| k.strip_prefix("disk.used:"))
            .filter(|mount| self.value(&format!("disk.used:{mount}"), at).is_some())
            .map(|mount| {
                let (device, fstype) = self.meta.disks.get(mount).cloned().unwrap_or_default();
                Disk {
                    device,
                    mountpoint: mount.to_string(),
                    fstype,
                    total: u(&format!("disk.total:{mount}")),
                    used: u(&format!("disk.used:{mount}")),
                    free: u(&format!("disk.free:{mount}")),
                    used_percent: n(&format!("disk.used_percent:{mount}")),
                }
            })
            .collect();
        disks.sort_by(|a, b| a.mountpoint.cmp(&b.mountpoint));
        let metrics = ServerMetrics {
            hostname: self.meta.hostname.clone(),
            uptime_seconds: u("uptime_seconds"),
            memory: Memory {
                total: u("memory.total"),
                used: u("memory.used"),
                free: u("memory.free"),
                used_percent: n("memory.used_percent"),
            },
            disks,
            top_procs_by_mem: Vec::new(),
            cpu: Cpu {
                cores: u("cpu.cores") as u32,
                used_percent: n("cpu.used_percent"),
                model_name: self.meta.cpu_model.clone(),
            },
            generated_at_utc: crate::model::rfc3339_utc(std::time::UNIX_EPOCH + Duration::from_millis(t)),
            status: HostStatus::Online,
            error: None,
        };
        let facts = self
            .series
            .keys()
            .filter_map(|k| Some((Fact::from_series_name(k)?, self.value(k, at)?)))
            .map(|(fact, v)| {
                let value = match fact {
                    Fact::FileAge(_) if v < 0.0 => FactValue::Missing,
                    Fact::FileAge(_) => FactValue::Seconds(v as u64),
                    _ => FactValue::Count(v.max(0.0) as u32),
                };
                (fact, value)
            })
            .collect();
        (metrics, facts)
    }
}

#[cfg(test)]
#[path = "history_tests.rs"]
mod tests;
