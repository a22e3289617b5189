//! Facts a rule can ask the collectors for, beyond the standard snapshot.
//!
//! The menu is fixed and cheap to answer on any host, BusyBox included: how many
//! processes have a given name, how old a file is, what state a systemd unit is in.
//! A rule names its facts in `describe()`; the engine keeps the union of what the
//! loaded rules want in a [`Wanted`] cell, and the poll loop reads it each round, so
//! collectors fetch only what some rule uses (nothing at all when none does), still
//! within the one script per poll. The arguments come from untrusted rules and end
//! up in a shell script, so [`Fact::check`] allows only a small character set and
//! the script quotes them besides.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// Facts one rule may ask for.
pub const MAX_PER_RULE: usize = 16;
/// Facts all rules together may have collected per target and poll.
pub const MAX_TOTAL: usize = 64;

/// One thing a rule wants to know about every target.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", tag = "fact", content = "arg")]
pub enum Fact {
    /// Processes whose name (`/proc/PID/comm`, at most 15 bytes) is exactly this.
    ProcessCount(String),
    /// Seconds since this file (an absolute path) was modified; missing if absent.
    FileAge(String),
    /// A systemd unit's active state (`active`, `failed`, ...); unknown without systemd.
    UnitState(String),
}

/// What a collector found out.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FactValue {
    Count(u32),
    Seconds(u64),
    /// The file does not exist.
    Missing,
    Text(String),
}

impl FactValue {
    /// The value as a number for history (counts and ages), if it is one.
    pub fn number(&self) -> Option<f64> {
        match self {
            FactValue::Count(n) => Some(f64::from(*n)),
            FactValue::Seconds(s) => Some(*s as f64),
            FactValue::Missing | FactValue::Text(_) => None,
        }
    }
}

/// The facts one target answered in a round.
pub type Answers = BTreeMap<Fact, FactValue>;

fn allowed(s: &str, extra: &[u8]) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
}

impl Fact {
    /// Refuse what a collector cannot ask safely, with the reason.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Fact::ProcessCount(name) => {
                if name.is_empty() || name.len() > 15 || !allowed(name, b"._-:@+/ ") || name.starts_with('-') {
                    return Err(format!(
                        "process-count({name:?}): a process name is 1 to 15 characters of letters, digits, space and ._-:@+/ (not starting with -)"
                    ));
                }
            }
            Fact::FileAge(path) => {
                if !path.starts_with('/') || path.len() > 255 || !allowed(path, b"._-:@+/") || path.contains("/../") {
                    return Err(format!(
                        "file-age({path:?}): an absolute path of at most 255 characters of letters, digits and ._-:@+/"
                    ));
                }
            }
            Fact::UnitState(unit) => {
                if unit.is_empty() || unit.len() > 128 || !allowed(unit, b"._-:@") || unit.starts_with('-') {
                    return Err(format!(
                        "unit-state({unit:?}): a unit name is 1 to 128 characters of letters, digits and ._-:@"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The series name this fact's numeric values have in the history.
    pub fn series_name(&self) -> String {
        match self {
            Fact::ProcessCount(name) => format!("fact.process-count:{name}"),
            Fact::FileAge(path) => format!("fact.file-age:{path}"),
            Fact::UnitState(unit) => format!("fact.unit-state:{unit}"),
        }
    }

    /// The inverse of [`Fact::series_name`].
    pub fn from_series_name(series: &str) -> Option<Fact> {
        let rest = series.strip_prefix("fact.")?;
        let (kind, arg) = rest.split_once(':')?;
        let fact = match kind {
            "process-count" => Fact::ProcessCount(arg.to_string()),
            "file-age" => Fact::FileAge(arg.to_string()),
            "unit-state" => Fact::UnitState(arg.to_string()),
            _ => return None,
        };
        fact.check().ok().map(|()| fact)
    }
}

impl std::fmt::Display for Fact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fact::ProcessCount(a) => write!(f, "process-count({a:?})"),
            Fact::FileAge(a) => write!(f, "file-age({a:?})"),
            Fact::UnitState(a) => write!(f, "unit-state({a:?})"),
        }
    }
}

/// What each rule wants, and their union.
#[derive(Debug, Default)]
struct ByRule {
    rules: BTreeMap<String, Vec<Fact>>,
    union: Arc<[Fact]>,
}

/// The facts the loaded rules want, by rule; read by the poll loop every round.
#[derive(Debug, Default, Clone)]
pub struct Wanted {
    inner: Arc<RwLock<ByRule>>,
}

impl Wanted {
    /// Set (or clear, with an empty list) what `rule` wants.
    pub fn set(&self, rule: &str, facts: &[Fact]) {
        let mut guard = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let ByRule { rules: by_rule, union } = &mut *guard;
        if facts.is_empty() {
            by_rule.remove(rule);
        } else {
            by_rule.insert(rule.to_string(), facts.to_vec());
        }
        let mut all: Vec<Fact> = by_rule.values().flatten().cloned().collect();
        all.sort();
        all.dedup();
        if all.len() > MAX_TOTAL {
            tracing::warn!(
                wanted = all.len(),
                max = MAX_TOTAL,
                "rules want more facts than are collected; the rest are unknown"
            );
            all.truncate(MAX_TOTAL);
        }
        *union = all.into();
    }

    /// Every fact some loaded rule wants, sorted, without duplicates.
    pub fn current(&self) -> Arc<[Fact]> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).union.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_safe_arguments_pass() {
        assert!(Fact::ProcessCount("scada-historian".into()).check().is_ok());
        assert!(Fact::ProcessCount("scada-historian2".into()).check().is_err(), "16 bytes is over comm's 15");
        assert!(Fact::ProcessCount("kworker/0:1".into()).check().is_ok());
        assert!(Fact::ProcessCount("a'b".into()).check().is_err());
        assert!(Fact::ProcessCount("$(reboot)".into()).check().is_err());
        assert!(Fact::ProcessCount("-e".into()).check().is_err());
        assert!(Fact::FileAge("/var/lib/historian/last.dat".into()).check().is_ok());
        assert!(Fact::FileAge("relative".into()).check().is_err());
        assert!(Fact::FileAge("/a b".into()).check().is_err());
        assert!(Fact::FileAge("/a\n".into()).check().is_err());
        assert!(Fact::UnitState("getty@tty1.service".into()).check().is_ok());
        assert!(Fact::UnitState("x;y".into()).check().is_err());
        let f = Fact::FileAge("/srv/x".into());
        assert_eq!(Fact::from_series_name(&f.series_name()), Some(f));
        assert_eq!(Fact::from_series_name("fact.file-age:rel"), None);
    }

    #[test]
    fn wanted_is_the_union_of_the_rules() {
        let w = Wanted::default();
        assert!(w.current().is_empty());
        w.set("a", &[Fact::ProcessCount("sshd".into()), Fact::FileAge("/x".into())]);
        w.set("b", &[Fact::ProcessCount("sshd".into())]);
        assert_eq!(w.current().len(), 2);
        w.set("a", &[]);
        assert_eq!(&*w.current(), &[Fact::ProcessCount("sshd".into())]);
    }
}
