//! A rule's lines in monserv's log: escaped and rate-limited over time.
//!
//! `host::log` is the one way a rule reaches the outside, and the journal lives on
//! flash. A per-evaluation cap is not enough (at 0.1 s rounds 20 lines per evaluation
//! are 200 lines a second), so each rule has a token bucket that lasts across
//! evaluations and hot swaps: [`BURST`] lines at once, then one every
//! [`REFILL`]. Lines over it are counted, and the next line that gets through is
//! preceded by one "suppressed N lines" note. Control characters, newlines included,
//! are escaped: a rule cannot forge a log line that looks like monserv's own.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::output::fit_text;

pub const BURST: u32 = 20;
pub const REFILL: Duration = Duration::from_secs(6);
pub const MAX_LINE_BYTES: usize = 1024;

/// Severity as the rule asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

#[derive(Debug)]
pub struct RuleLog {
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: u32,
    refilled_at: Instant,
    suppressed: u64,
}

impl Default for RuleLog {
    fn default() -> Self {
        RuleLog { state: Mutex::new(Bucket { tokens: BURST, refilled_at: Instant::now(), suppressed: 0 }) }
    }
}

/// What to write for one `host::log` call.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Write the line (after a note about `suppressed` earlier lines, if any).
    Write {
        line: String,
        suppressed: u64,
    },
    Suppressed,
}

impl RuleLog {
    /// Decide about one line at `now`.
    pub fn admit(&self, message: String, now: Instant) -> Admit {
        let mut b = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(b.refilled_at);
        let earned = (elapsed.as_millis() / REFILL.as_millis()) as u32;
        if earned > 0 {
            b.tokens = b.tokens.saturating_add(earned).min(BURST);
            b.refilled_at += REFILL * earned;
        }
        if b.tokens == 0 {
            b.suppressed += 1;
            return Admit::Suppressed;
        }
        b.tokens -= 1;
        let suppressed = std::mem::take(&mut b.suppressed);
        drop(b);
        // Escaped (a newline cannot start a forged line) and cut, ending in `...`.
        let line = fit_text(message, MAX_LINE_BYTES + 3, false, &mut false);
        Admit::Write { line, suppressed }
    }

    /// Write one line for `rule` to the log (rate-limited, escaped).
    pub fn write(&self, rule: &str, level: Level, message: String) {
        let Admit::Write { line, suppressed } = self.admit(message, Instant::now()) else {
            return;
        };
        if suppressed > 0 {
            tracing::warn!(
                rule,
                suppressed,
                "rule log lines suppressed (more than {BURST} at once, then one per {REFILL:?})"
            );
        }
        match level {
            Level::Debug => tracing::debug!(rule, "{line}"),
            Level::Info => tracing::info!(rule, "{line}"),
            Level::Warn => tracing::warn!(rule, "{line}"),
            Level::Error => tracing::error!(rule, "{line}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_one_per_refill_with_a_suppressed_note() {
        let log = RuleLog::default();
        let t0 = Instant::now();
        for i in 0..BURST {
            assert!(matches!(log.admit(format!("l{i}"), t0), Admit::Write { suppressed: 0, .. }));
        }
        for _ in 0..500 {
            assert_eq!(log.admit("more".into(), t0 + Duration::from_secs(1)), Admit::Suppressed);
        }
        // One refill period later one line gets through, carrying the count.
        assert_eq!(log.admit("next".into(), t0 + REFILL), Admit::Write { line: "next".into(), suppressed: 500 });
        assert_eq!(log.admit("again".into(), t0 + REFILL), Admit::Suppressed);
        // Over an hour at most BURST + 3600 s / REFILL lines.
        let mut written = 0;
        for ms in (0..3_600_000u64).step_by(100) {
            if let Admit::Write { .. } = log.admit("x".into(), t0 + REFILL + Duration::from_millis(ms)) {
                written += 1;
            }
        }
        assert!(written <= BURST as u64 + 3600 / REFILL.as_secs(), "{written}");
        assert!(written >= 3600 / REFILL.as_secs() - 1, "{written}");
    }

    #[test]
    fn lines_cannot_forge_log_lines() {
        let log = RuleLog::default();
        let Admit::Write { line, .. } =
            log.admit("ok\n2026-01-01T00:00:00Z  INFO monserv: forged\x1b[2J".into(), Instant::now())
        else {
            panic!("first line must be written")
        };
        assert_eq!(line, "ok\\u{a}2026-01-01T00:00:00Z  INFO monserv: forged\\u{1b}[2J");
        let Admit::Write { line, .. } = log.admit("y".repeat(5000), Instant::now()) else { panic!() };
        assert_eq!(line.len(), MAX_LINE_BYTES + 3);
    }
}
