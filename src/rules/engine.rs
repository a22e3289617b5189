//! The loaded rules and their evaluation each poll round.
//!
//! Rules live in slots behind a lock that is held only to clone the list or to swap
//! one entry: a round evaluates the versions it started with, and a new version takes
//! effect from the next round, so no round is skipped and no evaluation sees half a
//! swap. A candidate is compiled and trial-evaluated (on the latest snapshot, against
//! a copy of the rule's firing keys, under the sandbox) off the hot path before it is
//! swapped in; a bad one is rejected and the previous version keeps running.
//!
//! A failing rule (trap, timeout, error, oversized output) affects only itself: it is
//! logged with its name and reason and counted; after 3 failures in a row it is
//! quarantined for 30 s, doubling up to 10 min, then tried again.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use super::convert;
use super::sandbox::{wit, Compiled, EvalError, RuleInfo, Sandbox};
use crate::alert::AlertState;
use crate::model::AlertMessage;
use crate::poll::Snapshot;

const QUARANTINE_AFTER: u32 = 3;
const QUARANTINE_BASE: Duration = Duration::from_secs(30);
const QUARANTINE_MAX: Duration = Duration::from_secs(600);

/// Where a rule came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Compiled into monserv (the threshold rule).
    Builtin,
    /// A `.wasm` file in the rules directory (dropped in or uploaded).
    File,
}

struct Slot {
    name: String,
    compiled: Compiled,
    config: Arc<HashMap<String, String>>,
    hold_for: Duration,
    source: Source,
    /// Identifies the bytes and config this slot was built from.
    digest: u64,
    loaded_at: SystemTime,
    stats: Mutex<Stats>,
}

#[derive(Debug, Default, Clone)]
struct Stats {
    evaluations: u64,
    failures: u64,
    consecutive_failures: u32,
    last_error: Option<String>,
    last_eval: Duration,
    quarantined_until: Option<Instant>,
    /// Poll rounds of the first and latest evaluation of this rule (any version).
    first_round: Option<u64>,
    last_round: u64,
    /// Versions that replaced an earlier one.
    swaps: u64,
}

/// What `GET /api/v1/rules` shows of a rule.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RuleStatus {
    pub name: String,
    pub version: String,
    pub source: Source,
    /// `ok`, `failing` or `quarantined`.
    pub status: &'static str,
    pub last_error: Option<String>,
    pub evaluations: u64,
    pub failures: u64,
    pub last_eval_micros: u64,
    pub first_round: Option<u64>,
    pub last_round: u64,
    pub swaps: u64,
    pub firing: usize,
    pub loaded_at: String,
    pub config: BTreeMap<String, String>,
    pub info: RuleInfo,
}

pub struct RuleEngine {
    sandbox: Arc<Sandbox>,
    rules: RwLock<BTreeMap<String, Arc<Slot>>>,
    alerts: Mutex<AlertState>,
    /// The last round's snapshot, for trial evaluations of candidates.
    latest: Mutex<Option<Arc<wit::Snapshot>>>,
    /// Candidates refused, by rule name, with the reason (shown by the REST API).
    rejected: Mutex<BTreeMap<String, String>>,
}

/// A rule's settings: its config values and the host-side `for` duration.
#[derive(Debug, Clone, Default)]
pub struct RuleSettings {
    pub values: HashMap<String, String>,
    pub hold_for: Duration,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn digest(bytes: &[u8], settings: &RuleSettings) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    let mut pairs: Vec<_> = settings.values.iter().collect();
    pairs.sort();
    pairs.hash(&mut h);
    settings.hold_for.hash(&mut h);
    h.finish()
}

impl RuleEngine {
    pub fn new(sandbox: Sandbox) -> Self {
        RuleEngine {
            sandbox: Arc::new(sandbox),
            rules: RwLock::new(BTreeMap::new()),
            alerts: Mutex::new(AlertState::default()),
            latest: Mutex::new(None),
            rejected: Mutex::new(BTreeMap::new()),
        }
    }

    /// The digest of the loaded version of `name`, if any.
    pub fn digest_of(&self, name: &str) -> Option<u64> {
        self.rules.read().unwrap_or_else(|e| e.into_inner()).get(name).map(|s| s.digest)
    }

    /// Compile, check and trial-evaluate a candidate, then swap it in. On error the
    /// previous version (if any) stays.
    pub async fn install(
        &self,
        name: &str,
        bytes: Vec<u8>,
        settings: RuleSettings,
        source: Source,
    ) -> Result<RuleInfo, String> {
        let digest = digest(&bytes, &settings);
        let config = Arc::new(settings.values);
        let sandbox = self.sandbox.clone();
        let trial_snapshot = lock(&self.latest).clone();
        let active = lock(&self.alerts).active_keys(name);
        let (rule, cfg) = (name.to_string(), config.clone());
        let compiled = tokio::task::spawn_blocking(move || -> Result<Compiled, String> {
            let compiled = sandbox.compile(&bytes).map_err(|e| e.to_string())?;
            if let Some(snap) = trial_snapshot {
                sandbox
                    .evaluate(&compiled, &rule, cfg, &snap, &active)
                    .map_err(|e| format!("trial evaluation on the current snapshot failed: {e}"))?;
            }
            Ok(compiled)
        })
        .await
        .map_err(|e| format!("compiler task failed: {e}"))??;
        let info = compiled.info.clone();
        let mut rules = self.rules.write().unwrap_or_else(|e| e.into_inner());
        // Counters follow the rule across versions; only the failure streak restarts.
        let carried = rules
            .get(name)
            .map(|p| {
                let s = lock(&p.stats).clone();
                Stats { consecutive_failures: 0, quarantined_until: None, swaps: s.swaps + 1, ..s }
            })
            .unwrap_or_default();
        let slot = Arc::new(Slot {
            name: name.to_string(),
            compiled,
            config,
            hold_for: settings.hold_for,
            source,
            digest,
            loaded_at: SystemTime::now(),
            stats: Mutex::new(carried),
        });
        let previous = rules.insert(name.to_string(), slot);
        drop(rules);
        match previous {
            Some(p) => {
                tracing::info!(rule = name, version = %info.version, previous = %p.compiled.info.version, "rule replaced")
            }
            None => tracing::info!(rule = name, version = %info.version, "rule loaded"),
        }
        Ok(info)
    }

    /// Record (or clear, with `None`) why the latest candidate for `name` was refused.
    pub fn set_rejected(&self, name: &str, reason: Option<String>) {
        let mut r = lock(&self.rejected);
        match reason {
            Some(reason) => r.insert(name.to_string(), reason),
            None => r.remove(name),
        };
    }

    pub fn rejected(&self) -> BTreeMap<String, String> {
        lock(&self.rejected).clone()
    }

    /// Unload a rule and forget its firing keys. Returns false if it was not loaded.
    pub fn remove(&self, name: &str) -> bool {
        let removed = self.rules.write().unwrap_or_else(|e| e.into_inner()).remove(name).is_some();
        if removed {
            lock(&self.alerts).forget(name);
            tracing::info!(rule = name, "rule removed");
        }
        removed
    }

    /// Evaluate every rule on one round's snapshot; returns the alert messages.
    pub async fn evaluate_round(&self, snapshot: &Snapshot) -> Vec<AlertMessage> {
        // Converted even when no rule is loaded: a rule dropped in later is given its
        // trial evaluation on this snapshot.
        let snap = Arc::new(convert::snapshot(snapshot));
        *lock(&self.latest) = Some(snap.clone());
        let slots: Vec<Arc<Slot>> = self.rules.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        if slots.is_empty() {
            return Vec::new();
        }
        let actives: Vec<Vec<String>> = {
            let alerts = lock(&self.alerts);
            slots.iter().map(|s| alerts.active_keys(&s.name)).collect()
        };
        let sandbox = self.sandbox.clone();
        let run = tokio::task::spawn_blocking(move || {
            let now = Instant::now();
            slots
                .into_iter()
                .zip(actives)
                .map(|(slot, active)| {
                    let quarantined = lock(&slot.stats).quarantined_until.is_some_and(|until| now < until);
                    let result = (!quarantined).then(|| {
                        let started = Instant::now();
                        let r = sandbox.evaluate(&slot.compiled, &slot.name, slot.config.clone(), &snap, &active);
                        (r, started.elapsed())
                    });
                    (slot, result)
                })
                .collect::<Vec<_>>()
        });
        let results = match run.await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "rule evaluation task failed");
                return Vec::new();
            }
        };
        let mut messages = Vec::new();
        let now = Instant::now();
        for (slot, result) in results {
            let Some((result, took)) = result else { continue };
            // Book the result on the version loaded now: a swap during the round
            // must neither lose this evaluation from the counters nor its events.
            let Some(current) = self.rules.read().unwrap_or_else(|e| e.into_inner()).get(&slot.name).cloned() else {
                continue; // removed during the round
            };
            let mut stats = lock(&current.stats);
            stats.evaluations += 1;
            stats.last_eval = took;
            stats.first_round.get_or_insert(snapshot.round);
            stats.last_round = snapshot.round;
            match result {
                Ok(events) => {
                    if stats.quarantined_until.take().is_some() || stats.consecutive_failures > 0 {
                        tracing::info!(rule = %slot.name, "rule evaluates again");
                    }
                    stats.consecutive_failures = 0;
                    drop(stats);
                    messages.extend(lock(&self.alerts).apply(&slot.name, events, slot.hold_for, now));
                }
                Err(e) => self.failed(&slot, &mut stats, e),
            }
        }
        messages
    }

    fn failed(&self, slot: &Slot, stats: &mut Stats, e: EvalError) {
        stats.failures += 1;
        stats.consecutive_failures += 1;
        stats.last_error = Some(e.to_string());
        let n = stats.consecutive_failures;
        if n >= QUARANTINE_AFTER {
            let backoff = QUARANTINE_BASE.saturating_mul(1 << (n - QUARANTINE_AFTER).min(5)).min(QUARANTINE_MAX);
            stats.quarantined_until = Some(Instant::now() + backoff);
            tracing::warn!(rule = %slot.name, reason = %e, kind = e.kind(), failures_in_a_row = n, ?backoff, "rule quarantined");
        } else {
            tracing::warn!(rule = %slot.name, reason = %e, kind = e.kind(), failures_in_a_row = n, "rule evaluation failed");
        }
    }

    pub fn status(&self) -> Vec<RuleStatus> {
        let slots: Vec<Arc<Slot>> = self.rules.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        let alerts = lock(&self.alerts);
        slots
            .iter()
            .map(|s| {
                let st = lock(&s.stats).clone();
                let quarantined = st.quarantined_until.is_some_and(|u| Instant::now() < u);
                RuleStatus {
                    name: s.name.clone(),
                    version: s.compiled.info.version.clone(),
                    source: s.source.clone(),
                    status: if quarantined {
                        "quarantined"
                    } else if st.consecutive_failures > 0 {
                        "failing"
                    } else {
                        "ok"
                    },
                    last_error: st.last_error,
                    evaluations: st.evaluations,
                    failures: st.failures,
                    last_eval_micros: st.last_eval.as_micros() as u64,
                    first_round: st.first_round,
                    last_round: st.last_round,
                    swaps: st.swaps,
                    firing: alerts.firing_count(&s.name),
                    loaded_at: crate::model::rfc3339_utc(s.loaded_at),
                    config: s.config.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                    info: s.compiled.info.clone(),
                }
            })
            .collect()
    }
}
