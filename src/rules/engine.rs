//! The loaded rules and their evaluation each poll round.
//!
//! Rules live in slots behind a lock that is held only to clone the list or to swap
//! one entry: a round evaluates the versions it started with, and a new version takes
//! effect from the next round, so no round is skipped and no evaluation sees half a
//! swap. A candidate is compiled and trial-evaluated (on the latest snapshot, against
//! a copy of the rule's firing keys, under the sandbox) off the hot path before it is
//! swapped in; a bad one is rejected and the previous version keeps running.
//!
//! A failing rule (trap, timeout, error) affects only itself: it is logged with its
//! name and reason and counted; after 3 failures in a row it is quarantined for 30 s,
//! doubling up to 10 min, then tried again. Oversized output is not a failure: it is
//! cut per event and per target (`output`) and counted. All rules together get one
//! wall-clock budget per round: a rule that would start after it is spent is skipped
//! and counted, and the starting rule rotates each round, so the same rule is not
//! always the one skipped.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use super::alert::AlertState;
use super::convert;
use super::memory::{RoundData, RuleState};
use super::output::{self, OutputStats};
use super::sandbox::{wit, Compiled, EvalError, LoadError, RuleCtx, RuleInfo, Sandbox};
use crate::model::{AlertKind, AlertMessage, Snapshot};
use crate::store::alerts::{AlertStore, Changes, Firing, StoreError, Transition};

const QUARANTINE_AFTER: u32 = 3;
const QUARANTINE_BASE: Duration = Duration::from_secs(30);
const QUARANTINE_MAX: Duration = Duration::from_secs(600);
/// At most one log line per rule per this period about trimmed output or its cap.
const LIMIT_NOTE_EVERY: Duration = Duration::from_secs(60);
/// A rule's state is written at once when it changes, then at most once per this
/// period while it keeps changing (a rule that rewrites it every round must not
/// write the flash every round).
const STATE_SAVE_EVERY: Duration = Duration::from_secs(60);

/// A rule's own state as the engine keeps it.
#[derive(Debug, Default)]
struct StateSlot {
    state: RuleState,
    /// Changed since it was last saved.
    dirty: bool,
    saved_at: Option<Instant>,
}

/// Where a rule came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Compiled into monserv (the threshold rule).
    Builtin,
    /// A `.wasm` file in the rules directory (dropped in or uploaded).
    File,
    /// A `.toml` with a `when` condition, run by the built-in expression component.
    Expression,
}

/// Why a candidate was not swapped in. The previous version (if any) keeps running.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InstallError {
    #[error("{0}")]
    Load(#[from] LoadError),
    #[error("trial evaluation on the current snapshot failed: {0}")]
    Trial(EvalError),
    #[error("compiler task failed: {0}")]
    Task(String),
    /// Settings the rule does not declare in `describe()` (a typo would otherwise
    /// leave the rule silently on its default), a value that does not fit its
    /// declared kind, or one the rule itself refused (placed in the settings file).
    #[error("{0}")]
    Settings(String),
}

/// A rule's identity is its name (file or REST name): alert keys, settings file and
/// API all use it. The same component (by `describe().name`) under a second name is a
/// second instance that evaluates and alerts on its own; that is allowed (one
/// component, two settings files) but said, since it is usually a copy by mistake.
fn duplicate_warning<'a>(loaded: impl Iterator<Item = &'a Arc<Slot>>, name: &str, component: &str) -> Option<String> {
    // Expression rules all run the one expression component, by design.
    let others: Vec<&str> = loaded
        .filter(|s| s.source != Source::Expression)
        .filter(|s| &*s.ctx.name != name && s.compiled.info.name == component)
        .map(|s| &*s.ctx.name)
        .collect();
    (!others.is_empty()).then(|| {
        format!(
            "component {component} also runs as rule {}: each instance evaluates and alerts on its own",
            others.join(", ")
        )
    })
}

/// A trial failure; a rule's complaint about a setting is placed in its file.
pub(crate) fn trial_error(e: EvalError, file: Option<&(String, Arc<str>)>) -> InstallError {
    if let (EvalError::Rule(msg), Some((path, text))) = (&e, file) {
        let located = super::expression::locate(text, msg);
        if located != *msg {
            return InstallError::Settings(format!("{path}: {located}"));
        }
    }
    InstallError::Trial(e)
}

/// Refuse settings the rule does not declare and values that do not fit their kind.
pub(crate) fn check_settings(rule: &str, info: &RuleInfo, settings: &RuleSettings) -> Result<(), InstallError> {
    super::settings::check(rule, info, &settings.values, &settings.lists, settings.file.as_ref())
        .map_err(InstallError::Settings)
}

struct Slot {
    ctx: RuleCtx,
    compiled: Compiled,
    hold_for: Duration,
    source: Source,
    /// Identifies the bytes and config this slot was built from.
    digest: u64,
    /// Identifies the bytes alone (a settings-only change keeps it).
    code: u64,
    loaded_at: SystemTime,
    stats: Arc<Mutex<Stats>>,
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
    /// Events dropped or shortened by the output limits, ever.
    events_dropped: u64,
    events_truncated: u64,
    /// New conditions not tracked because the rule was at `max_firing`.
    over_firing_limit: u64,
    /// Rounds this rule was skipped because the round's budget was spent.
    skipped_over_budget: u64,
    /// When the last "output limited" line was logged, and what it has not reported.
    noted_at: Option<Instant>,
    unnoted: (u64, u64, u64),
}

/// What `GET /api/v1/rules` shows of a rule.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RuleStatus {
    pub name: String,
    /// Set when the same component also runs under another name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    pub version: String,
    pub source: Source,
    /// `ok`, `failing`, `quarantined` or `firing_limit` (at `max_firing`: new
    /// conditions are counted in `over_firing_limit`, not tracked).
    pub status: &'static str,
    pub last_error: Option<String>,
    pub evaluations: u64,
    pub failures: u64,
    pub last_eval_micros: u64,
    pub first_round: Option<u64>,
    pub last_round: u64,
    pub swaps: u64,
    pub firing: usize,
    pub events_dropped: u64,
    pub events_truncated: u64,
    pub over_firing_limit: u64,
    pub skipped_over_budget: u64,
    /// Bytes of the rule's own state (`GET /api/v1/rules/NAME/state` shows it).
    pub state_bytes: usize,
    pub loaded_at: String,
    pub config: BTreeMap<String, String>,
    pub info: RuleInfo,
}

/// Counters of the engine as a whole (`GET /api/v1/rules`, `data.engine`).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct EngineStatus {
    /// Poll rounds the rules were evaluated on.
    pub rounds_evaluated: u64,
    /// Poll rounds never given to the rules because they were still busy with an
    /// earlier one (they then take the newest round).
    pub rounds_skipped: u64,
    /// Wall-clock time of the last round's rules, all together.
    pub last_round_micros: u64,
    pub round_budget_ms: u64,
    pub max_firing: usize,
    pub max_events_per_target: usize,
    /// How the rules directory is followed: `inotify`, or polling and why.
    pub watch: String,
    /// Scans of the rules directory so far: a change, or the 30 s safety rescan. An
    /// idle directory must not wake the loader (issue #15).
    pub directory_scans: u64,
    /// The rules directory's first read since start is still under way (compiling
    /// takes seconds on a slow CPU): rounds are held for the rules until it is done.
    pub loading: bool,
}

pub struct RuleEngine {
    sandbox: Arc<Sandbox>,
    rules: RwLock<BTreeMap<String, Arc<Slot>>>,
    alerts: Mutex<AlertState>,
    /// The last round's snapshot, for trial evaluations of candidates.
    latest: Mutex<Option<Arc<wit::Snapshot>>>,
    /// Candidates refused, by rule name, with the reason (shown by the REST API).
    rejected: Mutex<BTreeMap<String, String>>,
    counters: Mutex<EngineStatus>,
    /// Where firing state survives restarts (none in the CLI and some tests).
    store: Option<Arc<AlertStore>>,
    /// Bumped after each commit that queued deliveries (wakes the notifier).
    committed: tokio::sync::watch::Sender<u64>,
    /// Recoveries of removed rules' alerts, sent with the next round's messages.
    owed: Mutex<Vec<AlertMessage>>,
    /// The recent past, for rules' history queries (recorded by the poll side).
    history: Option<Arc<crate::history::History>>,
    /// The last round's facts and time, for trial evaluations.
    latest_round: Mutex<Arc<RoundData>>,
    /// What the loaded rules need the collectors to fetch.
    wanted: crate::facts::Wanted,
    /// Each rule's own state, by rule name.
    states: Mutex<HashMap<String, StateSlot>>,
    /// False while the daemon's first load of the rules runs (see `loaded`).
    first_load_done: tokio::sync::watch::Sender<bool>,
}

/// The recovery that closes an alert of a rule that was removed: its condition is no
/// longer watched, so the alert must not stay open on dashboards and in the store.
fn removal_recovery(rule: &str, key: String, subject: &str) -> (String, String, String, String) {
    let what = subject.strip_prefix("[ALERT] ").unwrap_or(subject);
    let message = format!("Rule {rule} was removed; this alert is closed and its condition is no longer watched.");
    (rule.to_string(), key, format!("[RECOVERED] {what}"), message)
}

/// A rule's settings: its config values and the host-side `for` duration.
#[derive(Debug, Clone, Default)]
pub struct RuleSettings {
    pub values: HashMap<String, String>,
    /// Keys whose value was a TOML array (its items, one per line, in `values`).
    pub lists: BTreeSet<String>,
    pub hold_for: Duration,
    /// The settings file (path, text) they came from: errors are placed in it.
    pub file: Option<(String, Arc<str>)>,
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
    settings.lists.hash(&mut h);
    settings.hold_for.hash(&mut h);
    h.finish()
}

/// One rule's part of a round.
enum Outcome {
    Quarantined,
    OverBudget,
    Ran { result: Result<(Vec<wit::Event>, OutputStats), EvalError>, took: Duration, state: Option<RuleState> },
}

impl RuleEngine {
    pub fn new(sandbox: Sandbox) -> Self {
        Self::with_store(sandbox, None)
    }

    /// An engine whose firing state is kept in (and restored from) `store`: alerts
    /// active when monserv stopped are active again, so none is re-fired.
    /// The durable alert store, when it could be opened.
    pub fn store(&self) -> Option<Arc<AlertStore>> {
        self.store.clone()
    }

    pub fn with_store(sandbox: Sandbox, store: Option<Arc<AlertStore>>) -> Self {
        let mut alerts = AlertState::default();
        let mut states = HashMap::new();
        if let Some(store) = &store {
            match store.rule_states() {
                Ok(saved) => {
                    for (rule, bytes) in saved {
                        match RuleState::from_bytes(&bytes) {
                            Ok(state) => {
                                states.insert(rule, StateSlot { state, dirty: false, saved_at: None });
                            }
                            Err(e) => {
                                tracing::warn!(rule, error = %e, "unreadable rule state; the rule starts without")
                            }
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot read the rules' states; they start empty"),
            }
            match store.active() {
                Ok(active) => {
                    if !active.is_empty() {
                        tracing::info!(alerts = active.len(), path = %store.path().display(), "restored active alerts");
                    }
                    active.into_iter().for_each(|f| alerts.restore(f));
                }
                Err(e) => tracing::error!(error = %e, "cannot read active alerts; starting with none"),
            }
        }
        let l = sandbox.limits;
        RuleEngine {
            sandbox: Arc::new(sandbox),
            rules: RwLock::new(BTreeMap::new()),
            alerts: Mutex::new(alerts),
            latest: Mutex::new(None),
            owed: Mutex::new(Vec::new()),
            rejected: Mutex::new(BTreeMap::new()),
            counters: Mutex::new(EngineStatus {
                round_budget_ms: l.round_budget.as_millis() as u64,
                max_firing: l.max_firing,
                max_events_per_target: l.max_events_per_target,
                ..EngineStatus::default()
            }),
            store,
            committed: tokio::sync::watch::Sender::new(0),
            history: None,
            latest_round: Mutex::default(),
            wanted: crate::facts::Wanted::default(),
            states: Mutex::new(states),
            first_load_done: tokio::sync::watch::Sender::new(true),
        }
    }

    /// Give rules the history's queries (the caller records every round into it).
    pub fn with_history(mut self, history: Arc<crate::history::History>) -> Self {
        self.history = Some(history);
        self
    }

    pub fn history_handle(&self) -> Option<Arc<crate::history::History>> {
        self.history.clone()
    }

    /// The facts the loaded rules need; the poll loop reads it every round.
    pub fn wanted(&self) -> crate::facts::Wanted {
        self.wanted.clone()
    }

    /// A copy of a rule's state (the REST API and tests).
    pub fn rule_state(&self, rule: &str) -> Option<RuleState> {
        lock(&self.states).get(rule).map(|s| s.state.clone())
    }

    /// Changed states that are due to be written (all of them with `force`).
    fn due_states(&self, force: bool) -> Vec<(String, Option<Vec<u8>>)> {
        let now = Instant::now();
        let mut states = lock(&self.states);
        states
            .iter_mut()
            .filter(|(_, s)| {
                s.dirty && (force || s.saved_at.is_none_or(|at| now.duration_since(at) >= STATE_SAVE_EVERY))
            })
            .map(|(rule, s)| {
                s.dirty = false;
                s.saved_at = Some(now);
                (rule.clone(), (!s.state.is_empty()).then(|| s.state.to_bytes()))
            })
            .collect()
    }

    /// Write every changed state now (at shutdown).
    pub async fn flush_states(&self) {
        let rule_states = self.due_states(true);
        self.persist(Changes { rule_states, ..Changes::default() }).await;
    }

    /// Changes after every commit of transitions (and so of queued deliveries).
    pub fn commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.committed.subscribe()
    }

    /// Write one round's transitions before anything is sent. A failed write is
    /// logged, and the messages still go out: an alert is worth more than its record.
    async fn persist(&self, changes: Changes) {
        let Some(store) = self.store.clone() else { return };
        if changes.is_empty() {
            return;
        }
        let queued = !changes.fired.is_empty() || !changes.recovered.is_empty();
        let written = tokio::task::spawn_blocking(move || store.commit(&changes)).await;
        match written {
            Ok(Ok(())) => {
                if queued {
                    self.committed.send_modify(|n| *n += 1);
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "alert state not saved"),
            Err(e) => tracing::error!(error = %e, "alert state writer failed"),
        }
    }

    /// Every firing alert, oldest first.
    pub fn active_alerts(&self) -> Vec<Firing> {
        lock(&self.alerts).active()
    }

    /// Transitions since `since` (Unix seconds), the newest `limit`.
    pub async fn history(&self, since: u64, limit: usize) -> Result<Vec<Transition>, StoreError> {
        let Some(store) = self.store.clone() else { return Ok(Vec::new()) };
        tokio::task::spawn_blocking(move || store.history(since, limit))
            .await
            .unwrap_or_else(|e| Err(StoreError::Io { path: String::new(), reason: e.to_string() }))
    }

    /// Forget the state of rules that are gone (deleted while monserv was down).
    /// A rule that is present but was rejected (a settings typo, say) keeps its state,
    /// so fixing it does not re-fire its alerts. Called once the directory was read.
    pub async fn forget_unloaded(&self) {
        let mut loaded: Vec<String> = self.rules.read().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect();
        loaded.extend(lock(&self.rejected).keys().cloned());
        let (gone, closed) = {
            let mut alerts = lock(&self.alerts);
            let mut gone: Vec<String> = alerts.rule_names().into_iter().filter(|r| !loaded.contains(r)).collect();
            let mut states = lock(&self.states);
            for rule in states.keys().filter(|r| !loaded.contains(r)) {
                if !gone.contains(rule) {
                    gone.push(rule.clone());
                }
            }
            states.retain(|r, _| loaded.contains(r));
            drop(states);
            let closed: Vec<_> = gone
                .iter()
                .flat_map(|r| alerts.forget(r).into_iter().map(|(key, subject)| removal_recovery(r, key, &subject)))
                .collect();
            (gone, closed)
        };
        if !gone.is_empty() {
            tracing::info!(rules = ?gone, closed = closed.len(), "forgot the alert state of rules no longer loaded");
            self.close_removed(gone, closed).await;
        }
    }

    fn slots(&self) -> Vec<Arc<Slot>> {
        self.rules.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
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
    ) -> Result<RuleInfo, InstallError> {
        let digest = digest(&bytes, &settings);
        let code = crate::model::fnv1a(&bytes);
        let previous = self.rules.read().unwrap_or_else(|e| e.into_inner()).get(name).cloned();
        // The same rule keeps its log budget across versions.
        let log = previous.as_ref().map(|p| p.ctx.log.clone()).unwrap_or_default();
        let mut ctx =
            RuleCtx { name: name.into(), config: Arc::new(settings.values.clone()), log, needs: Arc::from([]) };
        let sandbox = self.sandbox.clone();
        let trial_snapshot = lock(&self.latest).clone();
        let active = lock(&self.alerts).active_keys(name);
        let trial_ctx = ctx.clone();
        let trial_round = lock(&self.latest_round).clone();
        let trial_state = lock(&self.states).get(name).map(|s| s.state.clone()).unwrap_or_default();
        // The same component already loaded (the expression component under several
        // names, a settings-only change): its compiled code is shared, not rebuilt.
        let same_code = self.slots().into_iter().find(|s| s.code == code).map(|s| s.compiled.clone());
        let hold_for = settings.hold_for;
        let file = settings.file.clone();
        let source_kind = source.clone();
        let (compiled, needs) =
            tokio::task::spawn_blocking(move || -> Result<(Compiled, Arc<[crate::facts::Fact]>), InstallError> {
                let mut compiled = match same_code {
                    Some(c) => c,
                    None => sandbox.compile(&bytes)?,
                };
                check_settings(&trial_ctx.name, &compiled.info, &settings)?;
                // What it needs may depend on its settings: ask again with them.
                compiled.info = sandbox.describe_with(&compiled, &trial_ctx)?;
                let needs: Arc<[crate::facts::Fact]> = compiled.info.needs.clone().into();
                let trial_ctx = RuleCtx { needs: needs.clone(), ..trial_ctx };
                // Before the first round, an expression rule still gets its condition
                // checked (on an empty snapshot); other rules wait for real data.
                let empty = || Arc::new(wit::Snapshot { round: 0, unix_time: 0, targets: vec![] });
                let snap = trial_snapshot.or_else(|| (source_kind == Source::Expression).then(empty));
                if let Some(snap) = snap {
                    // On a copy of its state: a trial changes nothing.
                    let (result, _) =
                        sandbox.evaluate_with(&compiled, &trial_ctx, &snap, &active, trial_round, trial_state);
                    result.map_err(|e| trial_error(e, file.as_ref()))?;
                }
                Ok((compiled, needs))
            })
            .await
            .map_err(|e| InstallError::Task(e.to_string()))??;
        let info = compiled.info.clone();
        ctx.needs = needs;
        self.wanted.set(name, &ctx.needs);
        let mut rules = self.rules.write().unwrap_or_else(|e| e.into_inner());
        let warning = (source != Source::Expression).then(|| duplicate_warning(rules.values(), name, &info.name));
        if let Some(warning) = warning.flatten() {
            tracing::warn!(rule = name, "{warning}");
        }
        // Counters follow the rule across versions; only the failure streak restarts.
        let carried = rules
            .get(name)
            .map(|p| {
                let s = lock(&p.stats).clone();
                Stats { consecutive_failures: 0, quarantined_until: None, swaps: s.swaps + 1, ..s }
            })
            .unwrap_or_default();
        let slot = Arc::new(Slot {
            ctx,
            compiled,
            hold_for,
            source,
            digest,
            code,
            loaded_at: SystemTime::now(),
            stats: Arc::new(Mutex::new(carried)),
        });
        let previous = rules.insert(name.to_string(), slot);
        drop(rules);
        match previous {
            Some(p) if p.code == code => {
                tracing::info!(rule = name, version = %info.version, "rule settings changed")
            }
            Some(p) => {
                tracing::info!(rule = name, version = %info.version, previous = %p.compiled.info.version, "rule replaced")
            }
            None => tracing::info!(rule = name, version = %info.version, "rule loaded"),
        }
        Ok(info)
    }

    /// Replay the daemon's own history (the last `seconds`) through a rule: the
    /// loaded version of `name`, or a candidate (`bytes` with `settings`) that is
    /// compiled and checked like an install but not swapped in. Nothing live changes.
    pub async fn backtest(
        &self,
        name: &str,
        candidate: Option<(Vec<u8>, RuleSettings)>,
        seconds: u64,
    ) -> Result<super::backtest::Outcome, InstallError> {
        let history = self.history.clone().ok_or_else(|| InstallError::Task("this monserv keeps no history".into()))?;
        let loaded = self.rules.read().unwrap_or_else(|e| e.into_inner()).get(name).cloned();
        let sandbox = self.sandbox.clone();
        let code = candidate.as_ref().map(|(b, _)| crate::model::fnv1a(b));
        let same_code = code.and_then(|code| self.slots().into_iter().find(|s| s.code == code));
        let name = name.to_string();
        tokio::task::spawn_blocking(move || {
            let (compiled, ctx, hold_for) = match (candidate, loaded) {
                (None, Some(slot)) => (slot.compiled.clone(), slot.ctx.clone(), slot.hold_for),
                (None, None) => return Err(InstallError::Settings(format!("no rule {name} is loaded"))),
                (Some((bytes, settings)), _) => {
                    let mut compiled = match same_code {
                        Some(s) => s.compiled.clone(),
                        None => sandbox.compile(&bytes)?,
                    };
                    check_settings(&name, &compiled.info, &settings)?;
                    let ctx = RuleCtx::new(&name, Arc::new(settings.values.clone()));
                    compiled.info = sandbox.describe_with(&compiled, &ctx)?;
                    let ctx = RuleCtx { needs: compiled.info.needs.clone().into(), ..ctx };
                    (compiled, ctx, settings.hold_for)
                }
            };
            let now =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
            let export = history.export(None, seconds, now);
            // A fresh log budget: a backtest's log lines must not eat the live rule's.
            let ctx = RuleCtx { log: Arc::default(), ..ctx };
            Ok(super::backtest::run(&sandbox, &compiled, &ctx, hold_for, &export, history.sizing().window))
        })
        .await
        .map_err(|e| InstallError::Task(e.to_string()))?
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
    pub async fn remove(&self, name: &str) -> bool {
        let removed = self.rules.write().unwrap_or_else(|e| e.into_inner()).remove(name).is_some();
        if removed {
            self.wanted.set(name, &[]);
            lock(&self.states).remove(name);
            let closed: Vec<_> = lock(&self.alerts)
                .forget(name)
                .into_iter()
                .map(|(key, subject)| removal_recovery(name, key, &subject))
                .collect();
            tracing::info!(rule = name, closed_alerts = closed.len(), "rule removed");
            self.close_removed(vec![name.to_string()], closed).await;
        }
        removed
    }

    /// Record removed rules' closing recoveries (history, notifiers) and owe them to
    /// the `/ws` clients with the next round.
    async fn close_removed(&self, rules: Vec<String>, closed: Vec<(String, String, String, String)>) {
        lock(&self.owed).extend(closed.iter().map(|(_, _, subject, message)| {
            AlertMessage::new(AlertKind::Recovery, subject.as_str(), message.as_str())
        }));
        self.persist(Changes { recovered: closed, forgotten_rules: rules, ..Changes::default() }).await;
    }

    /// Rounds the rules never saw because they were busy (counted by the runner).
    pub fn note_skipped_rounds(&self, n: u64) {
        lock(&self.counters).rounds_skipped += n;
    }

    pub fn note_directory_scan(&self) {
        lock(&self.counters).directory_scans += 1;
    }

    /// The daemon's first load of the rules has begun: until `first_load_finished`,
    /// `loaded()` waits and the API says `loading`.
    pub fn first_load_started(&self) {
        lock(&self.counters).loading = true;
        self.first_load_done.send_replace(false);
    }

    pub fn first_load_finished(&self) {
        lock(&self.counters).loading = false;
        self.first_load_done.send_replace(true);
    }

    /// Whether the rules are loaded (false only during the daemon's first load).
    pub fn is_loaded(&self) -> bool {
        *self.first_load_done.borrow()
    }

    /// Wait until the first load of the rules is done (at once when there is none).
    pub async fn loaded(&self) {
        let mut done = self.first_load_done.subscribe();
        // The sender lives as long as `self`, so this ends only when it is true.
        let _ = done.wait_for(|d| *d).await;
    }

    pub fn set_watch_mode(&self, mode: String) {
        lock(&self.counters).watch = mode;
    }

    pub fn engine_status(&self) -> EngineStatus {
        lock(&self.counters).clone()
    }

    /// Evaluate every rule on one round's snapshot, within the round budget; returns
    /// the alert messages.
    pub async fn evaluate_round(&self, snapshot: &Snapshot) -> Vec<AlertMessage> {
        // Converted even when no rule is loaded: a rule dropped in later is given its
        // trial evaluation on this snapshot.
        let snap = Arc::new(convert::snapshot(snapshot));
        *lock(&self.latest) = Some(snap.clone());
        let round = Arc::new(RoundData::of(snapshot, self.history.clone()));
        *lock(&self.latest_round) = round.clone();
        let slots = self.slots();
        let mut messages = std::mem::take(&mut *lock(&self.owed));
        if slots.is_empty() {
            return messages;
        }
        let actives: Vec<Vec<String>> = {
            let alerts = lock(&self.alerts);
            slots.iter().map(|s| alerts.active_keys(&s.ctx.name)).collect()
        };
        let before: Vec<RuleState> = {
            let states = lock(&self.states);
            slots.iter().map(|s| states.get(&*s.ctx.name).map(|s| s.state.clone()).unwrap_or_default()).collect()
        };
        let sandbox = self.sandbox.clone();
        let first = (snapshot.round as usize) % slots.len();
        let started = Instant::now();
        let run = tokio::task::spawn_blocking(move || {
            let limits = sandbox.limits;
            let targets: HashSet<&str> = snap.targets.iter().map(|t| t.key.as_str()).collect();
            // Each rule with its firing keys and its state before the round.
            type Turn = (Arc<Slot>, (Vec<String>, RuleState));
            let mut order: Vec<Turn> = slots.into_iter().zip(actives.into_iter().zip(before)).collect();
            order.rotate_left(first);
            order
                .into_iter()
                .map(|(slot, (active, state))| {
                    let now = Instant::now();
                    let outcome = if lock(&slot.stats).quarantined_until.is_some_and(|until| now < until) {
                        Outcome::Quarantined
                    } else if now.duration_since(started) >= limits.round_budget {
                        Outcome::OverBudget
                    } else {
                        let (result, after) = sandbox.evaluate_with(
                            &slot.compiled,
                            &slot.ctx,
                            &snap,
                            &active,
                            round.clone(),
                            state.clone(),
                        );
                        let result = result.map(|events| output::sanitize(events, &targets, &limits));
                        // Kept only if the evaluation succeeded and changed it.
                        let changed = (result.is_ok() && after != state).then_some(after);
                        Outcome::Ran { result, took: now.elapsed(), state: changed }
                    };
                    (slot, outcome)
                })
                .collect::<Vec<_>>()
        });
        let results = match run.await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "rule evaluation task failed");
                return messages;
            }
        };
        {
            let mut c = lock(&self.counters);
            c.rounds_evaluated += 1;
            c.last_round_micros = started.elapsed().as_micros() as u64;
        }
        let mut changes = Changes::default();
        let now = Instant::now();
        for (slot, outcome) in results {
            // Book the result on the version loaded now: a swap during the round
            // must neither lose this evaluation from the counters nor its events.
            let Some(current) = self.rules.read().unwrap_or_else(|e| e.into_inner()).get(&*slot.ctx.name).cloned()
            else {
                continue; // removed during the round
            };
            let (result, took) = match outcome {
                Outcome::Quarantined => continue,
                Outcome::OverBudget => {
                    lock(&current.stats).skipped_over_budget += 1;
                    continue;
                }
                Outcome::Ran { result, took, state } => {
                    if let Some(state) = state {
                        let mut states = lock(&self.states);
                        let slot = states.entry(slot.ctx.name.to_string()).or_default();
                        slot.state = state;
                        slot.dirty = true;
                    }
                    (result, took)
                }
            };
            // An evaluation is booked in one hold of the stats lock with what its
            // output cost (`count_limits`), so a status read between the two locks
            // below never sees the evaluation without its over-the-cap count.
            let book = |stats: &mut Stats| {
                stats.evaluations += 1;
                stats.last_eval = took;
                stats.first_round.get_or_insert(snapshot.round);
                stats.last_round = snapshot.round;
            };
            let mut stats = lock(&current.stats);
            match result {
                Ok((events, trimmed)) => {
                    if stats.quarantined_until.take().is_some() || stats.consecutive_failures > 0 {
                        tracing::info!(rule = %slot.ctx.name, "rule evaluates again");
                    }
                    stats.consecutive_failures = 0;
                    // Lock order: never hold a rule's stats while taking the alert
                    // state (`status()` takes the alert state, then each rule's stats).
                    drop(stats);
                    let applied = lock(&self.alerts).apply(
                        &slot.ctx.name,
                        events,
                        slot.hold_for,
                        now,
                        self.sandbox.limits.max_firing,
                    );
                    messages.extend(applied.messages);
                    changes.fired.extend(applied.changes.fired);
                    changes.recovered.extend(applied.changes.recovered);
                    let mut stats = lock(&current.stats);
                    book(&mut stats);
                    self.count_limits(&slot.ctx.name, &mut stats, trimmed, applied.over_cap, now);
                }
                Err(e) => {
                    book(&mut stats);
                    self.failed(&slot.ctx.name, &mut stats, e)
                }
            }
        }
        changes.rule_states = self.due_states(false);
        self.persist(changes).await;
        messages
    }

    /// Count what the output limits and the firing cap held back, and say so in the
    /// log at most once a minute per rule.
    fn count_limits(&self, rule: &str, stats: &mut Stats, trimmed: OutputStats, over_cap: u64, now: Instant) {
        stats.events_dropped += trimmed.dropped;
        stats.events_truncated += trimmed.truncated;
        stats.over_firing_limit += over_cap;
        let u = &mut stats.unnoted;
        *u = (u.0 + trimmed.dropped, u.1 + trimmed.truncated, u.2 + over_cap);
        if *u == (0, 0, 0) || stats.noted_at.is_some_and(|at| now.duration_since(at) < LIMIT_NOTE_EVERY) {
            return;
        }
        let (dropped, truncated, over_firing_limit) = std::mem::take(u);
        stats.noted_at = Some(now);
        let l = &self.sandbox.limits;
        tracing::warn!(
            rule,
            dropped,
            truncated,
            over_firing_limit,
            max_events_per_target = l.max_events_per_target,
            max_firing = l.max_firing,
            "rule output limited (events dropped or shortened, or conditions over the firing cap); other rules and hosts are not affected"
        );
    }

    fn failed(&self, rule: &str, stats: &mut Stats, e: EvalError) {
        stats.failures += 1;
        stats.consecutive_failures += 1;
        stats.last_error = Some(e.to_string());
        let n = stats.consecutive_failures;
        if n >= QUARANTINE_AFTER {
            let backoff = QUARANTINE_BASE.saturating_mul(1 << (n - QUARANTINE_AFTER).min(5)).min(QUARANTINE_MAX);
            stats.quarantined_until = Some(Instant::now() + backoff);
            tracing::warn!(rule, reason = %e, kind = e.kind(), failures_in_a_row = n, ?backoff, "rule quarantined");
        } else {
            tracing::warn!(rule, reason = %e, kind = e.kind(), failures_in_a_row = n, "rule evaluation failed");
        }
    }

    pub fn status(&self) -> Vec<RuleStatus> {
        let slots = self.slots();
        let state_bytes: HashMap<String, usize> =
            lock(&self.states).iter().map(|(rule, s)| (rule.clone(), s.state.bytes())).collect();
        let alerts = lock(&self.alerts);
        let max_firing = self.sandbox.limits.max_firing;
        slots
            .iter()
            .map(|s| {
                let st = lock(&s.stats).clone();
                let quarantined = st.quarantined_until.is_some_and(|u| Instant::now() < u);
                RuleStatus {
                    warning: (s.source != Source::Expression)
                        .then(|| duplicate_warning(slots.iter(), &s.ctx.name, &s.compiled.info.name))
                        .flatten(),
                    name: s.ctx.name.to_string(),
                    version: s.compiled.info.version.clone(),
                    source: s.source.clone(),
                    status: if quarantined {
                        "quarantined"
                    } else if st.consecutive_failures > 0 {
                        "failing"
                    } else if alerts.tracked_count(&s.ctx.name) >= max_firing {
                        "firing_limit"
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
                    firing: alerts.firing_count(&s.ctx.name),
                    events_dropped: st.events_dropped,
                    events_truncated: st.events_truncated,
                    over_firing_limit: st.over_firing_limit,
                    skipped_over_budget: st.skipped_over_budget,
                    state_bytes: state_bytes.get(&*s.ctx.name).copied().unwrap_or(0),
                    loaded_at: crate::model::rfc3339_utc(s.loaded_at),
                    config: s.ctx.config.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                    info: s.compiled.info.clone(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
