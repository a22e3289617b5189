//! The sandbox every rule runs in, the built-in one included.
//!
//! - No WASI, no imports but `monserv:rules/host`: a component asking for anything
//!   else is refused at load, naming the import.
//! - A fresh `Store` per evaluation with a memory cap (`StoreLimits`), instantiated
//!   from a pre-linked `RulePre` (~10 us), so no state leaks between evaluations.
//! - An epoch deadline per evaluation: a ticker thread advances the engine's epoch
//!   every millisecond while any evaluation runs (and sleeps otherwise), so a rule
//!   that loops is trapped after `timeout`.
//! - Host calls are capped: log lines are escaped and rate-limited per rule over
//!   time (`rule_log`), and per evaluation.
//! - Before anything is compiled, `validate` bounds what compiling may cost.
//! - Output is not judged here: `output` applies its limits per event and target.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, ComponentExportIndex, HasSelf, InstancePre, Linker};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder};

/// Generated from the WIT files: the host side of the contract, in the current
/// version and in every older one the host still runs.
mod bindings {
    /// `rules-wasm/wit/rules.wit`, monserv:rules@0.3.0 (history, state, facts).
    pub mod current {
        wasmtime::component::bindgen!({
            path: "rules-wasm/wit",
            world: "rule",
        });
    }
    /// `rules-wasm/wit-0.2.0/rules.wit`: typed settings, no history, state or facts.
    pub mod v0_2 {
        wasmtime::component::bindgen!({
            path: "rules-wasm/wit-0.2.0",
            world: "rule",
        });
    }
    /// `rules-wasm/wit-0.1.0/rules.wit`: the first contract. Only its host interface
    /// and its self-description differ; snapshots and events have the same shape, so
    /// a 0.1.0 rule is evaluated with the current types.
    pub mod v0_1 {
        wasmtime::component::bindgen!({
            path: "rules-wasm/wit-0.1.0",
            world: "rule",
        });
    }
}

use bindings::current::monserv::rules::host::{self as host_api, Level};
pub use bindings::current::monserv::rules::types as wit;
use bindings::v0_1::monserv::rules::host as host_v0_1;
use bindings::v0_1::monserv::rules::types as wit_v0_1;
use bindings::v0_2::monserv::rules::host as host_v0_2;
use bindings::v0_2::monserv::rules::types as wit_v0_2;

/// The contract versions this host runs, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Contract {
    #[serde(rename = "0.3.0")]
    V0_3,
    #[serde(rename = "0.2.0")]
    V0_2,
    #[serde(rename = "0.1.0")]
    V0_1,
}

impl Contract {
    pub fn as_str(self) -> &'static str {
        match self {
            Contract::V0_3 => "0.3.0",
            Contract::V0_2 => "0.2.0",
            Contract::V0_1 => "0.1.0",
        }
    }
}

/// The interfaces a rule may import, in every version the host runs.
const ALLOWED_IMPORTS: [&str; 6] = [
    "monserv:rules/host@0.3.0",
    "monserv:rules/types@0.3.0",
    "monserv:rules/host@0.2.0",
    "monserv:rules/types@0.2.0",
    "monserv:rules/host@0.1.0",
    "monserv:rules/types@0.1.0",
];
/// The one interface with functions a rule may import (named in refusals).
pub const HOST_INTERFACE: &str = "monserv:rules/host@0.3.0 (or @0.2.0, @0.1.0)";
/// Log calls per evaluation (the rule's bucket in `rule_log` limits them over time).
const MAX_LOG_LINES: u32 = 20;

use super::compiler::{self, ChildError};
use super::memory::{RoundData, RuleState};
use super::rule_log::{self, RuleLog};
pub use super::settings::SettingKind;
use crate::config::CompileIn;
pub use crate::config::RuleLimits as Limits;
use crate::facts::{Fact, FactValue};

/// Why a component could not be loaded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error("not a valid WebAssembly component: {0}")]
    Invalid(String),
    #[error("imports {0:?}; rules may import only {HOST_INTERFACE}")]
    ForbiddenImport(String),
    #[error("does not implement the monserv:rules/rule world: {0}")]
    Contract(String),
    #[error("describe() failed: {0}")]
    Describe(String),
    #[error("needs {0}")]
    Needs(String),
    #[error("refused before compiling: {0}")]
    TooCostly(super::validate::Refused),
}

/// Why one evaluation failed. Each is the rule's fault only.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EvalError {
    #[error("exceeded its {0:?} time limit")]
    Timeout(Duration),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("returned an error: {0}")]
    Rule(String),
}

impl EvalError {
    pub fn kind(&self) -> &'static str {
        match self {
            EvalError::Timeout(_) => "timeout",
            EvalError::Trap(_) => "trap",
            EvalError::Rule(_) => "error",
        }
    }
}

/// What the host keeps for one rule across evaluations: its name, config and log
/// budget.
#[derive(Debug, Clone)]
pub struct RuleCtx {
    pub name: Arc<str>,
    pub config: Arc<HashMap<String, String>>,
    pub log: Arc<RuleLog>,
    /// The facts it declared with these settings (`describe_with`).
    pub needs: Arc<[Fact]>,
}

impl RuleCtx {
    pub fn new(name: &str, config: Arc<HashMap<String, String>>) -> Self {
        RuleCtx { name: name.into(), config, log: Arc::default(), needs: Arc::from([]) }
    }
}

/// What a rule's host calls can see: its context, for one evaluation.
pub struct HostState {
    ctx: RuleCtx,
    limits: StoreLimits,
    log_lines: u32,
    /// The facts the rule declared (`get-fact` answers only these).
    needs: Arc<[Fact]>,
    round: Arc<RoundData>,
    state: RuleState,
}

impl HostState {
    fn write_log(&mut self, level: rule_log::Level, message: String) {
        self.log_lines += 1;
        if self.log_lines <= MAX_LOG_LINES {
            self.ctx.log.write(&self.ctx.name, level, message);
        }
    }
}

fn kind_v0_2(k: wit_v0_2::SettingKind) -> SettingKind {
    use wit_v0_2::SettingKind as K;
    match k {
        K::Text => SettingKind::Text,
        K::Boolean => SettingKind::Boolean,
        K::Number(b) => SettingKind::Number { min: b.min, max: b.max },
        K::Integer(b) => SettingKind::Integer { min: b.min, max: b.max },
        K::Choice(values) => SettingKind::Choice { values },
        K::TextList => SettingKind::TextList,
    }
}

fn series_name(series: wit::Series) -> String {
    match series {
        wit::Series::CpuPercent => "cpu.used_percent".into(),
        wit::Series::MemoryPercent => "memory.used_percent".into(),
        wit::Series::MemoryUsed => "memory.used".into(),
        wit::Series::Uptime => "uptime_seconds".into(),
        wit::Series::DiskUsed(m) => format!("disk.used:{m}"),
        wit::Series::DiskFree(m) => format!("disk.free:{m}"),
        wit::Series::DiskPercent(m) => format!("disk.used_percent:{m}"),
        wit::Series::Fact(f) => Fact::from(f).series_name(),
    }
}

impl From<wit::Fact> for Fact {
    fn from(f: wit::Fact) -> Fact {
        match f {
            wit::Fact::ProcessCount(a) => Fact::ProcessCount(a),
            wit::Fact::FileAge(a) => Fact::FileAge(a),
            wit::Fact::UnitState(a) => Fact::UnitState(a),
        }
    }
}

impl host_api::Host for HostState {
    fn log(&mut self, level: Level, message: String) {
        let level = match level {
            Level::Debug => rule_log::Level::Debug,
            Level::Info => rule_log::Level::Info,
            Level::Warn => rule_log::Level::Warn,
            Level::Error => rule_log::Level::Error,
        };
        self.write_log(level, message);
    }

    fn config(&mut self, key: String) -> Option<String> {
        self.ctx.config.get(&key).cloned()
    }

    fn config_list(&mut self, key: String) -> Option<Vec<String>> {
        self.ctx.config.get(&key).map(|v| super::settings::list_items(v))
    }

    fn get_fact(&mut self, target: String, fact: wit::Fact) -> Option<wit::FactValue> {
        let fact = Fact::from(fact);
        if !self.needs.contains(&fact) {
            return None;
        }
        Some(match self.round.facts.get(&target)?.get(&fact)? {
            FactValue::Count(n) => wit::FactValue::Count(*n),
            FactValue::Seconds(s) => wit::FactValue::Seconds(*s),
            FactValue::Missing => wit::FactValue::Missing,
            FactValue::Text(t) => wit::FactValue::Text(t.clone()),
        })
    }

    fn history(&mut self, target: String, series: wit::Series, seconds: u32, aggregate: wit::Aggregate) -> Option<f64> {
        use crate::history::Aggregate as A;
        let agg = match aggregate {
            wit::Aggregate::Min => A::Min,
            wit::Aggregate::Max => A::Max,
            wit::Aggregate::Avg => A::Avg,
            wit::Aggregate::First => A::First,
            wit::Aggregate::Last => A::Last,
            wit::Aggregate::Count => A::Count,
            wit::Aggregate::Slope => A::Slope,
            wit::Aggregate::Delta => A::Delta,
        };
        let h = self.round.history.as_ref()?;
        h.aggregate(&target, &series_name(series), seconds, agg, self.round.now_ms)
    }

    fn history_points(
        &mut self,
        target: String,
        series: wit::Series,
        seconds: u32,
        max_points: u32,
    ) -> Vec<wit::Point> {
        let Some(h) = self.round.history.as_ref() else { return Vec::new() };
        h.points(&target, &series_name(series), seconds, max_points as usize, self.round.now_ms)
            .into_iter()
            .map(|(ms, value)| wit::Point { unix_time: ms / 1000, value })
            .collect()
    }

    fn state_get(&mut self, key: String) -> Option<String> {
        self.state.get(&key).cloned()
    }

    fn state_set(&mut self, key: String, value: String) -> Result<(), String> {
        self.state.set(key, value)
    }

    fn state_delete(&mut self, key: String) {
        self.state.delete(&key);
    }
}

impl host_v0_2::Host for HostState {
    fn log(&mut self, level: host_v0_2::Level, message: String) {
        use host_v0_2::Level as L;
        let level = match level {
            L::Debug => rule_log::Level::Debug,
            L::Info => rule_log::Level::Info,
            L::Warn => rule_log::Level::Warn,
            L::Error => rule_log::Level::Error,
        };
        self.write_log(level, message);
    }

    fn config(&mut self, key: String) -> Option<String> {
        self.ctx.config.get(&key).cloned()
    }

    fn config_list(&mut self, key: String) -> Option<Vec<String>> {
        self.ctx.config.get(&key).map(|v| super::settings::list_items(v))
    }
}

impl host_v0_1::Host for HostState {
    fn log(&mut self, level: host_v0_1::Level, message: String) {
        use host_v0_1::Level as L;
        let level = match level {
            L::Debug => rule_log::Level::Debug,
            L::Info => rule_log::Level::Info,
            L::Warn => rule_log::Level::Warn,
            L::Error => rule_log::Level::Error,
        };
        self.write_log(level, message);
    }

    fn config(&mut self, key: String) -> Option<String> {
        self.ctx.config.get(&key).cloned()
    }
}

/// Advances the engine's epoch every millisecond while evaluations run; parked
/// otherwise, so an idle gateway does not wake up for it.
struct EpochTicker {
    active: Arc<AtomicUsize>,
    thread: std::thread::Thread,
}

pub struct Sandbox {
    engine: Engine,
    compile_in: CompileIn,
    linker: Linker<HostState>,
    ticker: Arc<EpochTicker>,
    pub limits: Limits,
}

/// A compiled, contract-checked rule ready to instantiate.
#[derive(Clone)]
pub struct Compiled {
    pre: InstancePre<HostState>,
    describe: ComponentExportIndex,
    evaluate: ComponentExportIndex,
    pub info: RuleInfo,
}

/// Plain copy of the rule's self-description.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RuleInfo {
    pub name: String,
    pub version: String,
    /// The contract version the component was built against.
    pub contract: Contract,
    pub config: Vec<ConfigKey>,
    /// Facts it reads beyond the snapshot (0.3.0).
    pub needs: Vec<Fact>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ConfigKey {
    pub name: String,
    pub default_value: String,
    pub help: String,
    /// What values it accepts (text for 0.1.0 rules).
    pub kind: SettingKind,
}

/// `evaluate`'s signature, the same in every contract version.
type EvaluateFn = (Result<Vec<wit::Event>, String>,);

/// The engine settings, shared with the compiler child (an artifact loads only into
/// an engine with the same settings).
pub fn engine_config() -> wasmtime::Config {
    let mut config = wasmtime::Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.max_wasm_stack(512 * 1024);
    // Built without wasmtime's parallel-compilation feature: one function at a time,
    // so compile memory is bounded by the largest function `validate` lets through,
    // not by that times the number of cores.
    config
}

impl Sandbox {
    /// A sandbox that compiles in this process.
    pub fn new(limits: Limits) -> Result<Sandbox, String> {
        Sandbox::with_compiler(limits, CompileIn::Process)
    }

    pub fn with_compiler(limits: Limits, compile_in: CompileIn) -> Result<Sandbox, String> {
        let engine = Engine::new(&engine_config()).map_err(|e| format!("cannot start the wasm engine: {e}"))?;
        let mut linker = Linker::new(&engine);
        host_api::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .and_then(|()| host_v0_2::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s))
            .and_then(|()| host_v0_1::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s))
            .map_err(|e| format!("cannot link the host interface: {e}"))?;
        let active = Arc::new(AtomicUsize::new(0));
        let (tick_engine, tick_active) = (engine.clone(), active.clone());
        // The thread ends when the sandbox is dropped (it then holds the last reference).
        let thread = std::thread::Builder::new()
            .name("rule-epoch".into())
            .spawn(move || {
                while Arc::strong_count(&tick_active) > 1 {
                    if tick_active.load(Ordering::Acquire) == 0 {
                        std::thread::park_timeout(Duration::from_secs(1));
                        continue;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                    tick_engine.increment_epoch();
                }
            })
            .map_err(|e| format!("cannot start the epoch ticker: {e}"))?
            .thread()
            .clone();
        let ticker = Arc::new(EpochTicker { active, thread });
        Ok(Sandbox { engine, compile_in, linker, ticker, limits })
    }

    /// Compile, check the imports, link, and ask the rule to describe itself.
    /// CPU-heavy: call from a blocking thread.
    pub fn compile(&self, bytes: &[u8]) -> Result<Compiled, LoadError> {
        super::validate::kind_of_file(bytes).and_then(|()| super::validate::check(bytes, &self.limits)).map_err(
            |e| match e {
                super::validate::Refused::Malformed(why) => LoadError::Invalid(why),
                over => LoadError::TooCostly(over),
            },
        )?;
        let component = self.component(bytes)?;
        let ty = component.component_type();
        for (name, _) in ty.imports(&self.engine) {
            if !ALLOWED_IMPORTS.contains(&name) {
                return Err(LoadError::ForbiddenImport(name.to_string()));
            }
        }
        let pre = self.linker.instantiate_pre(&component).map_err(|e| LoadError::Contract(format!("{e:#}")))?;
        let export = |name: &str| {
            component
                .get_export_index(None, name)
                .ok_or_else(|| LoadError::Contract(format!("no `{name}` function is exported")))
        };
        let (describe, evaluate) = (export("describe")?, export("evaluate")?);
        let info = self.describe(&pre, &describe, RuleCtx::new("(loading)", Arc::default()))?;
        let compiled = Compiled { pre, describe, evaluate, info };
        // Check `evaluate`'s signature now rather than at the first round.
        let _running = self.running();
        let mut store = self.store(RuleCtx::new("(loading)", Arc::default()));
        let instance =
            compiled.pre.instantiate(&mut store).map_err(|e| LoadError::Describe(self.classify(e).to_string()))?;
        instance
            .get_typed_func::<(&wit::Snapshot, &[String]), EvaluateFn>(&mut store, &compiled.evaluate)
            .map_err(|e| LoadError::Contract(format!("evaluate: {e:#}")))?;
        Ok(compiled)
    }

    /// Compile where configured; fall back to this process if the child cannot run.
    fn component(&self, bytes: &[u8]) -> Result<Component, LoadError> {
        let here = || Component::new(&self.engine, bytes).map_err(|e| LoadError::Invalid(format!("{e:#}")));
        let CompileIn::Child(exe) = &self.compile_in else {
            return here();
        };
        match compiler::compile_in_child(exe, bytes) {
            Ok(artifact) => compiler::load_artifact(&self.engine, &artifact).or_else(|e| {
                tracing::warn!(error = %e, "cannot load the compiler process's artifact; compiling in-process");
                here()
            }),
            Err(ChildError::Refused(why)) => Err(LoadError::Invalid(why)),
            Err(ChildError::Unavailable(why)) => {
                tracing::warn!(reason = %why, "rule compiler process unavailable; compiling in-process");
                here()
            }
        }
    }

    fn store(&self, ctx: RuleCtx) -> Store<HostState> {
        let needs = ctx.needs.clone();
        self.store_with(ctx, needs, Arc::default(), RuleState::default())
    }

    fn store_with(
        &self,
        ctx: RuleCtx,
        needs: Arc<[Fact]>,
        round: Arc<RoundData>,
        state: RuleState,
    ) -> Store<HostState> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.memory_bytes)
            .memories(4)
            .tables(16)
            .table_elements(100_000)
            .instances(16)
            .build();
        let mut store = Store::new(&self.engine, HostState { ctx, limits, log_lines: 0, needs, round, state });
        store.limiter(|s| &mut s.limits);
        let ticks = self.limits.timeout.as_millis().max(1) as u64;
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();
        store
    }

    /// Ask the rule to describe itself, in whichever contract version it speaks:
    /// the shape of `rule-info` tells them apart.
    /// The rule's self-description with its settings in reach: what it `needs` may
    /// depend on them (the processes to watch, say).
    pub fn describe_with(&self, c: &Compiled, ctx: &RuleCtx) -> Result<RuleInfo, LoadError> {
        if c.info.contract != Contract::V0_3 {
            return Ok(c.info.clone());
        }
        self.describe(&c.pre, &c.describe, ctx.clone())
    }

    fn describe(
        &self,
        pre: &InstancePre<HostState>,
        index: &ComponentExportIndex,
        ctx: RuleCtx,
    ) -> Result<RuleInfo, LoadError> {
        let _running = self.running();
        let mut store = self.store(ctx);
        let failed = |e: wasmtime::Error| LoadError::Describe(self.classify(e).to_string());
        let instance = pre.instantiate(&mut store).map_err(failed)?;
        if let Ok(f) = instance.get_typed_func::<(), (wit::RuleInfo,)>(&mut store, index) {
            let (info,) = f.call(&mut store, ()).map_err(failed)?;
            let config = info
                .config
                .into_iter()
                .map(|k| ConfigKey {
                    name: k.name,
                    default_value: k.default_value,
                    help: k.help,
                    kind: SettingKind::from(k.kind),
                })
                .collect();
            let needs: Vec<Fact> = info.needs.into_iter().map(Fact::from).collect();
            if needs.len() > crate::facts::MAX_PER_RULE {
                return Err(LoadError::Needs(format!(
                    "{} facts; a rule may need at most {}",
                    needs.len(),
                    crate::facts::MAX_PER_RULE
                )));
            }
            if let Some(why) = needs.iter().find_map(|f| f.check().err()) {
                return Err(LoadError::Needs(why));
            }
            return Ok(RuleInfo { name: info.name, version: info.version, contract: Contract::V0_3, config, needs });
        }
        if let Ok(f) = instance.get_typed_func::<(), (wit_v0_2::RuleInfo,)>(&mut store, index) {
            let (info,) = f.call(&mut store, ()).map_err(failed)?;
            let config = info
                .config
                .into_iter()
                .map(|k| ConfigKey {
                    name: k.name,
                    default_value: k.default_value,
                    help: k.help,
                    kind: kind_v0_2(k.kind),
                })
                .collect();
            return Ok(RuleInfo {
                name: info.name,
                version: info.version,
                contract: Contract::V0_2,
                config,
                needs: Vec::new(),
            });
        }
        let f = instance
            .get_typed_func::<(), (wit_v0_1::RuleInfo,)>(&mut store, index)
            .map_err(|e| LoadError::Contract(format!("describe: {e:#}")))?;
        let (info,) = f.call(&mut store, ()).map_err(failed)?;
        let config = info
            .config
            .into_iter()
            .map(|k| ConfigKey { name: k.name, default_value: k.default_value, help: k.help, kind: SettingKind::Text })
            .collect();
        Ok(RuleInfo { name: info.name, version: info.version, contract: Contract::V0_1, config, needs: Vec::new() })
    }

    /// One evaluation in a fresh store, without history, facts or state.
    pub fn evaluate(
        &self,
        c: &Compiled,
        ctx: &RuleCtx,
        snapshot: &wit::Snapshot,
        active: &[String],
    ) -> Result<Vec<wit::Event>, EvalError> {
        self.evaluate_with(c, ctx, snapshot, active, Arc::default(), RuleState::default()).0
    }

    /// One evaluation in a fresh store, with the round's history and facts and the
    /// rule's state; returns the state as the rule left it (the caller keeps it only
    /// if the evaluation succeeded). CPU-bound: call from a blocking thread.
    pub fn evaluate_with(
        &self,
        c: &Compiled,
        ctx: &RuleCtx,
        snapshot: &wit::Snapshot,
        active: &[String],
        round: Arc<RoundData>,
        state: RuleState,
    ) -> (Result<Vec<wit::Event>, EvalError>, RuleState) {
        let _running = self.running();
        let mut store = self.store_with(ctx.clone(), ctx.needs.clone(), round, state);
        let result = self.run(c, &mut store, snapshot, active);
        (result, store.into_data().state)
    }

    fn run(
        &self,
        c: &Compiled,
        store: &mut Store<HostState>,
        snapshot: &wit::Snapshot,
        active: &[String],
    ) -> Result<Vec<wit::Event>, EvalError> {
        let mut store = store;
        let instance = c.pre.instantiate(&mut store).map_err(|e| self.classify(e))?;
        let evaluate = instance
            .get_typed_func::<(&wit::Snapshot, &[String]), EvaluateFn>(&mut store, &c.evaluate)
            .map_err(|e| self.classify(e))?;
        let (events,) = evaluate.call(&mut store, (snapshot, active)).map_err(|e| self.classify(e))?;
        events.map_err(|e| EvalError::Rule(truncate(e, self.limits.max_message_bytes)))
    }

    fn classify(&self, e: wasmtime::Error) -> EvalError {
        match e.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => EvalError::Timeout(self.limits.timeout),
            Some(trap) => EvalError::Trap(trap.to_string()),
            None => EvalError::Trap(truncate(format!("{e:#}"), 512)),
        }
    }

    fn running(&self) -> Running<'_> {
        if self.ticker.active.fetch_add(1, Ordering::AcqRel) == 0 {
            self.ticker.thread.unpark();
        }
        Running(&self.ticker)
    }
}

/// Keeps the epoch ticker going while alive.
struct Running<'a>(&'a EpochTicker);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Text from a rule or a trap, escaped and cut for logs and the REST API (`max`
/// bytes of it, then `...`).
fn truncate(s: String, max: usize) -> String {
    super::output::fit_text(s, max + 3, false, &mut false)
}

#[cfg(test)]
mod tests {
    use super::*;

    const THRESHOLD: &[u8] = include_bytes!("../../rules-wasm/dist/threshold.wasm");

    fn dist(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/rules-wasm/dist/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    fn target(key: &str, mem_pct: f64) -> wit::Target {
        wit::Target {
            key: key.into(),
            hostname: "scadanas".into(),
            status: wit::Reachability::Online,
            consecutive_failures: 0,
            last_error_kind: None,
            metrics: Some(wit::Metrics {
                hostname: "scadanas".into(),
                uptime_seconds: 100,
                memory: wit::Memory {
                    total: 100,
                    used: mem_pct as u64,
                    free: 100 - mem_pct as u64,
                    used_percent: mem_pct,
                },
                disks: vec![],
                top_procs_by_mem: vec![],
                cpu: wit::Cpu { cores: 2, used_percent: 1.0, model_name: String::new() },
                generated_at_utc: "2025-10-29T12:00:00Z".into(),
            }),
        }
    }

    fn snap(targets: Vec<wit::Target>) -> wit::Snapshot {
        wit::Snapshot { round: 1, unix_time: 0, targets }
    }

    fn ctx(config: Arc<HashMap<String, String>>) -> RuleCtx {
        RuleCtx::new("test", config)
    }

    fn config(pairs: &[(&str, &str)]) -> Arc<HashMap<String, String>> {
        Arc::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn threshold_rule_speaks_protocol_wording() {
        let sb = Sandbox::new(Limits::default()).unwrap();
        let c = sb.compile(THRESHOLD).unwrap();
        assert_eq!((c.info.name.as_str(), c.info.version.as_str()), ("threshold", "1.0.0"));
        let memory = c.info.config.iter().find(|k| k.name == "memory_percent").unwrap();
        assert_eq!(memory.default_value, "90");
        assert_eq!(memory.kind, SettingKind::Number { min: Some(0.0), max: Some(100.0) });
        let cfg = config(&[("memory_percent", "80")]);
        let ev = sb.evaluate(&c, &ctx(cfg.clone()), &snap(vec![target("t1", 85.0)]), &[]).unwrap();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].kind, wit::EventKind::Alert);
        assert_eq!(ev[0].key, "t1/mem");
        assert_eq!(ev[0].subject, "[ALERT] scadanas memory high");
        assert_eq!(ev[0].message, "Memory used 85.0% (threshold 80.0%)");
        // Firing and back below: recovery; not firing and below: nothing.
        let ev = sb.evaluate(&c, &ctx(cfg.clone()), &snap(vec![target("t1", 65.0)]), &["t1/mem".into()]).unwrap();
        assert_eq!(
            (ev[0].kind, ev[0].subject.as_str(), ev[0].message.as_str()),
            (wit::EventKind::Recovery, "[RECOVERED] scadanas memory", "Memory back to 65.0%")
        );
        assert!(sb.evaluate(&c, &ctx(cfg), &snap(vec![target("t1", 65.0)]), &[]).unwrap().is_empty());
        // Hysteresis: 78% is under 80 but not under 80 - 5.
        let cfg = config(&[("memory_percent", "80"), ("hysteresis_percent", "5")]);
        assert!(sb.evaluate(&c, &ctx(cfg), &snap(vec![target("t1", 78.0)]), &["t1/mem".into()]).unwrap().is_empty());
        // A bad config value is the rule's error, naming the key.
        let e = sb.evaluate(&c, &ctx(config(&[("cpu_percent", "lots")])), &snap(vec![]), &[]).unwrap_err();
        assert_eq!(e.to_string(), "returned an error: config cpu_percent = \"lots\" is not a number");
    }

    #[test]
    fn rules_built_for_contract_0_1_still_run() {
        let sb = Sandbox::new(Limits::default()).unwrap();
        let path = format!("{}/tests/fixtures/rules-0.1.0/reboot.wasm", env!("CARGO_MANIFEST_DIR"));
        let old = sb.compile(&std::fs::read(path).unwrap()).unwrap();
        assert_eq!((old.info.contract, old.info.version.as_str()), (Contract::V0_1, "0.1.0"));
        assert_eq!(old.info.config[0].name, "min_uptime_seconds");
        assert_eq!(old.info.config[0].kind, SettingKind::Text);
        let ev = sb.evaluate(&old, &ctx(config(&[])), &snap(vec![target("t1", 50.0)]), &[]).unwrap();
        assert_eq!((ev[0].key.as_str(), ev[0].subject.as_str()), ("t1/reboot", "[ALERT] scadanas rebooted"));
        // As the 0.2.0 release built it: typed settings.
        let path = format!("{}/tests/fixtures/rules-0.2.0/reboot.wasm", env!("CARGO_MANIFEST_DIR"));
        let v2 = sb.compile(&std::fs::read(path).unwrap()).unwrap();
        assert_eq!(v2.info.contract, Contract::V0_2);
        assert_eq!(v2.info.config[0].kind, SettingKind::Integer { min: Some(1.0), max: Some(31_536_000.0) });
        let ev = sb.evaluate(&v2, &ctx(config(&[("min_uptime_seconds", "50")])), &snap(vec![target("t1", 50.0)]), &[]);
        assert!(ev.unwrap().is_empty(), "uptime 100 s is above 50 s");
        // The example built today speaks 0.3.0 and remembers boot times in its state.
        let v3 = sb.compile(&dist("examples/reboot.wasm")).unwrap();
        assert_eq!((v3.info.contract, v3.info.config[0].name.as_str()), (Contract::V0_3, "hold_minutes"));
    }

    fn model_report(key: &str) -> crate::model::TargetReport {
        use crate::model::{HostStatus, ServerMetrics};
        crate::model::TargetReport {
            url: key.into(),
            status: HostStatus::Online,
            metrics: ServerMetrics {
                hostname: "scadanas".into(),
                uptime_seconds: 100,
                memory: Default::default(),
                disks: vec![],
                top_procs_by_mem: vec![],
                cpu: Default::default(),
                generated_at_utc: String::new(),
                status: HostStatus::Online,
                error: None,
            },
            collected: true,
            last_update: None,
            consecutive_failures: 0,
            last_error_kind: None,
            poll_duration: None,
            last_success: None,
            facts: Default::default(),
        }
    }

    /// Rounds of one target whose uptime is `uptime` at `now`.
    fn at(now: u64, uptime: u64) -> wit::Snapshot {
        let mut t = target("t1", 50.0);
        t.metrics.as_mut().unwrap().uptime_seconds = uptime;
        wit::Snapshot { round: now, unix_time: now, targets: vec![t] }
    }

    #[test]
    fn state_carries_a_rule_across_rounds_and_only_on_success() {
        let sb = Sandbox::new(Limits::default()).unwrap();
        let c = sb.compile(&dist("examples/reboot.wasm")).unwrap();
        let cx = ctx(config(&[]));
        let run = |snap: &wit::Snapshot, state: RuleState, active: &[String]| {
            let (r, s) = sb.evaluate_with(&c, &cx, snap, active, Arc::default(), state);
            (r.unwrap().into_iter().map(|e| e.subject).collect::<Vec<_>>(), s)
        };
        // First sight: the boot time is remembered, nothing is said.
        let (ev, s1) = run(&at(100_000, 50_000), RuleState::default(), &[]);
        assert!(ev.is_empty());
        assert_eq!(s1.get("boot:t1").map(String::as_str), Some("50000"));
        // Same boot, seconds of jitter later (a monserv restart looks like this too).
        let (ev, s2) = run(&at(100_300, 50_301), s1.clone(), &[]);
        assert!(ev.is_empty());
        assert_eq!(s2, s1, "no change, so nothing to write");
        // A reboot: the boot time moved forward.
        let (ev, s3) = run(&at(100_400, 20), s2, &[]);
        assert_eq!(ev, ["[ALERT] scadanas rebooted"]);
        // Held for hold_minutes, then recovered once.
        let (ev, s4) = run(&at(100_400 + 300, 320), s3, &["t1/reboot".into()]);
        assert_eq!(ev, ["[ALERT] scadanas rebooted"]);
        let (ev, _) = run(&at(100_400 + 700, 720), s4, &["t1/reboot".into()]);
        assert_eq!(ev, ["[RECOVERED] scadanas rebooted"]);
    }

    #[test]
    fn hostile_state_and_history_requests_meet_the_caps() {
        let sb = Sandbox::new(Limits { timeout: Duration::from_secs(2), ..Limits::default() }).unwrap();
        let c = sb.compile(&dist("test/hoarder.wasm")).unwrap();
        let history = Arc::new(crate::history::History::new(crate::history::Sizing {
            window: Duration::from_secs(3600),
            interval: Duration::from_secs(4),
        }));
        // 1200 rounds 4 s apart: more than the 901 samples an hour's history keeps.
        for i in 0..1200u64 {
            let mut report = model_report("t1");
            report.metrics.cpu.used_percent = (i % 100) as f64;
            history.record(&crate::model::Snapshot { round: i, unix_ms: 4000 * i, targets: vec![report] });
        }
        let round = Arc::new(RoundData { history: Some(history), facts: Default::default(), now_ms: 4000 * 1199 });
        let (r, state) =
            sb.evaluate_with(&c, &ctx(config(&[])), &snap(vec![target("t1", 50.0)]), &[], round, RuleState::default());
        let ev = r.unwrap();
        let stored: usize = ev[0].subject.trim_start_matches("stored ").parse().unwrap();
        assert!(stored > 0 && stored < 64, "{}", ev[0].subject);
        assert!(state.bytes() <= super::super::memory::MAX_BYTES);
        assert!(ev[0].message.starts_with("points 901; refusal: state would be"), "{}", ev[0].message);
        // Facts outside the menu are refused at load, naming the fact.
        let e = sb.compile(&dist("test/needy.wasm")).err().unwrap();
        assert!(e.to_string().starts_with("needs process-count(\"x'; reboot; '\")"), "{e}");
    }

    #[test]
    fn list_settings_reach_the_rule_item_by_item() {
        let sb = Sandbox::new(Limits::default()).unwrap();
        let c = sb.compile(&dist("examples/low-disk-space.wasm")).unwrap();
        let kind = |name: &str| c.info.config.iter().find(|k| k.name == name).unwrap().kind.clone();
        assert_eq!(kind("ignore"), SettingKind::TextList);
        assert_eq!(kind("min_free_mib"), SettingKind::Number { min: Some(0.0), max: None });
        let mut t = target("t1", 50.0);
        let disk = |mount: &str| wit::Disk {
            device: "/dev/sda1".into(),
            mountpoint: mount.into(),
            fstype: "ext4".into(),
            total: 8 << 30,
            used: (8 << 30) - (10 << 20),
            free: 10 << 20,
            used_percent: 99.9,
        };
        t.metrics.as_mut().unwrap().disks = vec![disk("/"), disk("/boot"), disk("/media/usb stick")];
        let run = |ignore: &[&str]| {
            let items: Vec<toml::Value> = ignore.iter().map(|s| toml::Value::from(*s)).collect();
            let text = super::super::settings::to_list_text(&items).unwrap();
            let events = sb.evaluate(&c, &ctx(config(&[("ignore", &text)])), &snap(vec![t.clone()]), &[]).unwrap();
            events.into_iter().map(|e| e.key).collect::<Vec<_>>()
        };
        assert_eq!(run(&[]), ["t1/free//", "t1/free//boot", "t1/free//media/usb stick"]);
        assert_eq!(run(&["/boot", "/media/usb stick"]), ["t1/free//"]);
    }

    #[test]
    fn hostile_rules_are_contained() {
        let sb = Sandbox::new(Limits { timeout: Duration::from_millis(50), ..Limits::default() }).unwrap();
        let s = snap(vec![target("t1", 50.0)]);
        let run = |name: &str| {
            let c = sb.compile(&dist(&format!("test/{name}.wasm"))).unwrap();
            sb.evaluate(&c, &ctx(config(&[])), &s, &[]).unwrap_err()
        };
        let started = std::time::Instant::now();
        assert!(matches!(run("spin"), EvalError::Timeout(_)));
        assert!(started.elapsed() < Duration::from_secs(2), "the loop was not stopped in time");
        // Building 100k events takes longer than 50 ms in a debug build; give it time so
        // the output cap, not the deadline, is what stops it.
        let roomy = Sandbox::new(Limits { timeout: Duration::from_secs(2), ..Limits::default() }).unwrap();
        let run_roomy = |name: &str| {
            let c = roomy.compile(&dist(&format!("test/{name}.wasm"))).unwrap();
            roomy.evaluate(&c, &ctx(config(&[])), &s, &[])
        };
        // With time to spare, the memory cap and the trap are what stop these two.
        let err = |name: &str| run_roomy(name).unwrap_err().to_string();
        assert!(err("membomb").starts_with("trapped"), "{}", err("membomb"));
        assert!(err("panic").starts_with("trapped"), "{}", err("panic"));
        // Oversized output is not an error of the evaluation: `output` trims it per
        // event and per target.
        assert_eq!(run_roomy("flood").unwrap().len(), 100_000);
        assert_eq!(run_roomy("bigstrings").unwrap()[0].message.len(), 4 << 20);
        let e = sb.compile(&dist("test/wasi-import.wasm")).err().unwrap();
        assert_eq!(
            e.to_string(),
            "imports \"wasi:clocks/wall-clock@0.2.0\"; rules may import only monserv:rules/host@0.3.0 (or @0.2.0, @0.1.0)"
        );
        assert!(matches!(sb.compile(b"\0asm garbage"), Err(LoadError::Invalid(_))));
        assert!(matches!(sb.compile(&THRESHOLD[..THRESHOLD.len() / 2]), Err(LoadError::Invalid(_))));
        // The sandbox still works for a good rule afterwards.
        let c = sb.compile(THRESHOLD).unwrap();
        assert!(sb.evaluate(&c, &ctx(config(&[])), &s, &[]).is_ok());
    }
}
