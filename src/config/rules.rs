//! `[rules]`: where rules live and the limits every rule runs under.
//!
//! The limits live here, not in `rules/`, because they are configuration: the
//! sandbox, the engine and the alert state read them, and nothing here depends on
//! any of those. Every limit binds one rule (or one event, or one target's events of
//! one rule), never all rules or all hosts together, so a rule that hits one costs
//! only itself.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Limits applied to every rule. Defaults are documented in README.md.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RuleLimits {
    /// Wall-clock time of one evaluation.
    pub timeout: Duration,
    /// Wall-clock time all rules together may use per poll round; a rule that would
    /// start after it is spent is skipped for that round and counted.
    pub round_budget: Duration,
    /// Linear memory of one rule instance.
    pub memory_bytes: usize,
    /// Events one evaluation may report for one target (and, separately, for keys
    /// that name no target). Past it the target's events are dropped and counted,
    /// recoveries kept first; other targets' events are not affected.
    pub max_events_per_target: usize,
    /// Longer keys are shortened to a stable hash-suffixed key.
    pub max_key_bytes: usize,
    /// Longer subjects and messages are truncated (and counted).
    pub max_subject_bytes: usize,
    pub max_message_bytes: usize,
    /// Keys one rule may have firing or pending at once; new conditions past it are
    /// not tracked (counted, and the rule's status says so).
    pub max_firing: usize,
}

impl Default for RuleLimits {
    fn default() -> Self {
        RuleLimits {
            // Wall-clock time: a well-behaved rule takes ~3 ms for 1000 hosts, but a
            // busy gateway may deschedule it for tens of milliseconds.
            timeout: Duration::from_millis(100),
            round_budget: Duration::from_millis(1000),
            memory_bytes: 32 << 20,
            max_events_per_target: 1000,
            max_key_bytes: 512,
            max_subject_bytes: 512,
            max_message_bytes: 4096,
            max_firing: 10_000,
        }
    }
}

/// `[rules]` as written in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RulesFile {
    dir: Option<PathBuf>,
    builtin: Option<bool>,
    timeout_ms: Option<u64>,
    round_budget_ms: Option<u64>,
    memory_mib: Option<usize>,
    /// Per target per evaluation (the name predates the per-target meaning).
    max_events: Option<usize>,
    max_firing: Option<usize>,
}

/// Where rules are compiled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CompileIn {
    /// In this process (the CLI, tests that run the daemon in-process).
    #[default]
    Process,
    /// In a child running this executable with `rules::compiler::CHILD_ARG`.
    Child(PathBuf),
}

impl CompileIn {
    /// The daemon's choice: a child of this very binary image where `/proc` has it.
    pub fn for_daemon() -> CompileIn {
        let exe = PathBuf::from("/proc/self/exe");
        if exe.exists() {
            CompileIn::Child(exe)
        } else {
            CompileIn::Process
        }
    }
}

#[derive(Debug, Clone)]
pub struct RulesConfig {
    /// `.wasm` rules (and their `.toml` settings) watched for changes.
    pub dir: PathBuf,
    /// Run the built-in threshold rule (unless `dir` holds a `threshold.wasm`).
    pub builtin: bool,
    pub limits: RuleLimits,
    /// Not from the file: `main` sets [`CompileIn::for_daemon`].
    pub compile_in: CompileIn,
}

/// What `--print-config` shows of `[rules]`.
#[derive(Debug, Serialize)]
pub(super) struct PrintRules {
    dir: String,
    builtin: bool,
    timeout_ms: u64,
    round_budget_ms: u64,
    memory_mib: usize,
    max_events: usize,
    max_firing: usize,
}

impl RulesConfig {
    /// Validate `[rules]`; `poll_interval` bounds the default round budget.
    pub(super) fn from_file(
        f: RulesFile,
        default_dir: PathBuf,
        poll_interval: Duration,
    ) -> Result<RulesConfig, String> {
        let d = RuleLimits::default();
        let in_range = |key: &str, v: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&v) {
                Ok(v)
            } else {
                Err(format!("rules.{key} = {v}: must be between {lo} and {hi}"))
            }
        };
        let timeout_ms = in_range("timeout_ms", f.timeout_ms.unwrap_or(100), 1, 10_000)?;
        // By default rules may use the whole interval, up to 1 s; never less than one
        // rule's timeout, or no rule could ever run to its deadline.
        let default_budget = (poll_interval.as_millis() as u64).min(d.round_budget.as_millis() as u64).max(timeout_ms);
        let round_budget_ms = in_range("round_budget_ms", f.round_budget_ms.unwrap_or(default_budget), 1, 60_000)?;
        if round_budget_ms < timeout_ms {
            return Err(format!(
                "rules.round_budget_ms = {round_budget_ms}: must be at least rules.timeout_ms ({timeout_ms})"
            ));
        }
        let memory_mib = in_range("memory_mib", f.memory_mib.unwrap_or(32) as u64, 1, 1024)? as usize;
        let max_events = in_range("max_events", f.max_events.unwrap_or(d.max_events_per_target) as u64, 1, 100_000)?;
        let max_firing = in_range("max_firing", f.max_firing.unwrap_or(d.max_firing) as u64, 1, 1_000_000)?;
        Ok(RulesConfig {
            dir: f.dir.unwrap_or(default_dir),
            builtin: f.builtin.unwrap_or(true),
            limits: RuleLimits {
                timeout: Duration::from_millis(timeout_ms),
                round_budget: Duration::from_millis(round_budget_ms),
                memory_bytes: memory_mib << 20,
                max_events_per_target: max_events as usize,
                max_firing: max_firing as usize,
                ..d
            },
            compile_in: CompileIn::Process,
        })
    }

    pub(super) fn printable(&self) -> PrintRules {
        let l = &self.limits;
        PrintRules {
            dir: self.dir.display().to_string(),
            builtin: self.builtin,
            timeout_ms: l.timeout.as_millis() as u64,
            round_budget_ms: l.round_budget.as_millis() as u64,
            memory_mib: l.memory_bytes >> 20,
            max_events: l.max_events_per_target,
            max_firing: l.max_firing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, interval_ms: u64) -> Result<RulesConfig, String> {
        let f: RulesFile = toml::from_str(text).map_err(|e| e.to_string())?;
        RulesConfig::from_file(f, "/r".into(), Duration::from_millis(interval_ms))
    }

    #[test]
    fn defaults_and_budget() {
        let c = parse("", 4000).unwrap();
        assert_eq!(c.limits, RuleLimits::default());
        assert_eq!(c.dir, PathBuf::from("/r"));
        // A short interval shortens the default budget, but never below one timeout.
        assert_eq!(parse("", 500).unwrap().limits.round_budget, Duration::from_millis(500));
        assert_eq!(parse("", 50).unwrap().limits.round_budget, Duration::from_millis(100));
        assert_eq!(parse("round_budget_ms = 2500", 50).unwrap().limits.round_budget, Duration::from_millis(2500));
        // A timeout longer than the default budget raises the budget to it.
        assert_eq!(parse("timeout_ms = 2000", 4000).unwrap().limits.round_budget, Duration::from_millis(2000));
    }

    #[test]
    fn bad_values_name_the_key() {
        for (text, key) in [
            ("timeout_ms = 0", "rules.timeout_ms = 0"),
            ("round_budget_ms = 50", "rules.round_budget_ms = 50: must be at least rules.timeout_ms (100)"),
            ("max_firing = 0", "rules.max_firing = 0"),
            ("max_events = 100001", "rules.max_events = 100001"),
            ("memory_mib = 2048", "rules.memory_mib = 2048"),
        ] {
            let e = parse(text, 4000).unwrap_err();
            assert!(e.starts_with(key), "{text}: {e}");
        }
        assert!(parse("max_evnts = 1", 4000).unwrap_err().contains("unknown field"));
    }
}
