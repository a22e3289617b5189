//! Alert logic as sandboxed WebAssembly rules.
//!
//! `sandbox` runs one component under limits; `convert` turns a poll snapshot into the
//! WIT snapshot (once per round, shared by every rule); `engine` holds the loaded
//! rules, evaluates them each round, quarantines failing ones and swaps in new
//! versions atomically; `loader` watches the rules directory. What a rule's events
//! mean for users (alert once, recover once) is `crate::alert`'s business.

pub mod cli;
pub mod convert;
pub mod engine;
pub mod loader;
pub mod sandbox;

pub use engine::{RuleEngine, RuleSettings, RuleStatus, Source};
pub use sandbox::{Limits, LoadError};
