//! Alert logic as sandboxed WebAssembly rules.
//!
//! `validate` bounds what a candidate may cost to compile; `compiler` compiles it in
//! a child process so the daemon keeps none of that cost; `sandbox` runs one
//! component under limits; `convert` turns a poll snapshot into the WIT snapshot
//! (once per round, shared by every rule); `output` applies the per-event and
//! per-target limits to what a rule returns; `alert` turns events into alert once /
//! recover once (bounded per rule); `engine` holds the loaded rules, evaluates them
//! under a per-round budget, quarantines failing ones and swaps in new versions
//! atomically; `runner` is the task that feeds it rounds, apart from the poll loop;
//! `loader` watches the rules directory; `rule_log` limits a rule's log lines.

pub mod alert;
pub mod backtest;
pub mod cases;
pub mod cli;
pub mod compiler;
pub mod convert;
pub mod engine;
pub mod expression;
pub mod loader;
pub mod memory;
pub mod output;
pub mod rule_log;
pub mod runner;
pub mod sandbox;
#[cfg(feature = "authoring")]
pub mod scaffold;
pub mod settings;
pub mod validate;

pub use engine::{RuleEngine, RuleSettings, RuleStatus, Source};
pub use sandbox::{Limits, LoadError};
