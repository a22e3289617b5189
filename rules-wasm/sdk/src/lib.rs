//! The guest SDK for monserv alert rules.
//!
//! A rule is a type implementing [`Guest`] plus one `monserv_rule_sdk::export!(MyRule);`
//! line. The generated types mirror `rules-wasm/wit/rules.wit`; the helpers below
//! cover what every rule does: declare typed settings (the host checks values
//! against them before the rule runs), read them with defaults, build events, and
//! apply hysteresis through the host's list of firing keys.
//!
//! Contract 0.3.0 adds what a rule can ask the host beyond the snapshot:
//! [`history`] and [`history_points`] (the recent past of a series), [`state`] (a
//! small key-value memory kept across rounds and restarts) and [`fact`] (facts the
//! rule lists in `RuleInfo::needs`).

/// The generated bindings (in a module: the export macro is `#[macro_export]`ed, so
/// it cannot also be generated at the crate root).
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "rule",
        pub_export_macro: true,
        default_bindings_module: "monserv_rule_sdk::bindings",
    });
}

pub use bindings::monserv::rules::host::{self, Level};
pub use bindings::monserv::rules::types::{
    Aggregate, Bounds, ConfigKey, Cpu, Disk, Event, EventKind, Fact, FactValue, Memory, Metrics, Point, Process,
    Reachability, RuleInfo, Series, SettingKind, Snapshot, Target,
};
pub use bindings::{export, Guest};

/// A config value parsed as a number, or `default` when unset. A value that does not
/// parse is an error naming the key, so a typo is not silently replaced.
pub fn config_f64(key: &str, default: f64) -> Result<f64, String> {
    match host::config(key) {
        None => Ok(default),
        Some(v) => v.trim().parse::<f64>().map_err(|_| format!("config {key} = {v:?} is not a number")),
    }
}

/// A config value as text, or `default`.
pub fn config_str(key: &str, default: &str) -> String {
    host::config(key).unwrap_or_else(|| default.to_string())
}

/// A whole-number config value, or `default` (declare it with [`integer`]).
pub fn config_i64(key: &str, default: i64) -> Result<i64, String> {
    match host::config(key) {
        None => Ok(default),
        Some(v) => v.trim().parse::<i64>().map_err(|_| format!("config {key} = {v:?} is not a whole number")),
    }
}

/// A true/false config value, or `default` (declare it with [`boolean`]).
pub fn config_bool(key: &str, default: bool) -> Result<bool, String> {
    match host::config(key).as_deref().map(str::trim) {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(v) => Err(format!("config {key} = {v:?} is not true or false")),
    }
}

/// A list config value (a TOML array in the settings file), or `default` (declare it
/// with [`list`]).
pub fn config_list(key: &str, default: &[&str]) -> Vec<String> {
    host::config_list(key).unwrap_or_else(|| default.iter().map(|s| s.to_string()).collect())
}

fn key(name: &str, default_value: String, help: &str, kind: SettingKind) -> ConfigKey {
    ConfigKey { name: name.to_string(), default_value, help: help.to_string(), kind }
}

/// A text setting (any value). Kept from contract 0.1.0; [`text`] is the same.
pub fn config_key(name: &str, default_value: &str, help: &str) -> ConfigKey {
    text(name, default_value, help)
}

/// A setting that accepts any text.
pub fn text(name: &str, default: &str, help: &str) -> ConfigKey {
    key(name, default.to_string(), help, SettingKind::Text)
}

/// A number setting; bound it with `.range(min, max)`, `.min(v)` or `.max(v)`.
pub fn number(name: &str, default: f64, help: &str) -> ConfigKey {
    key(name, format!("{default}"), help, SettingKind::Number(Bounds { min: None, max: None }))
}

/// A percentage: a number from 0 to 100.
pub fn percent(name: &str, default: f64, help: &str) -> ConfigKey {
    number(name, default, help).range(0.0, 100.0)
}

/// A whole-number setting; bound it like [`number`].
pub fn integer(name: &str, default: i64, help: &str) -> ConfigKey {
    key(name, default.to_string(), help, SettingKind::Integer(Bounds { min: None, max: None }))
}

/// A `true`/`false` setting.
pub fn boolean(name: &str, default: bool, help: &str) -> ConfigKey {
    key(name, default.to_string(), help, SettingKind::Boolean)
}

/// A setting that is one of a few words.
pub fn choice(name: &str, default: &str, options: &[&str], help: &str) -> ConfigKey {
    key(name, default.to_string(), help, SettingKind::Choice(options.iter().map(|s| s.to_string()).collect()))
}

/// A list of texts (a TOML array in the settings file).
pub fn list(name: &str, default: &[&str], help: &str) -> ConfigKey {
    let shown = format!("[{}]", default.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", "));
    key(name, shown, help, SettingKind::TextList)
}

impl ConfigKey {
    /// Inclusive bounds of a number or integer setting (no effect on other kinds).
    pub fn range(self, min: f64, max: f64) -> Self {
        self.min(min).max(max)
    }

    pub fn min(mut self, min: f64) -> Self {
        if let SettingKind::Number(b) | SettingKind::Integer(b) = &mut self.kind {
            b.min = Some(min);
        }
        self
    }

    pub fn max(mut self, max: f64) -> Self {
        if let SettingKind::Number(b) | SettingKind::Integer(b) = &mut self.kind {
            b.max = Some(max);
        }
        self
    }
}

pub fn alert(key: String, subject: String, message: String) -> Event {
    Event { kind: EventKind::Alert, key, subject, message }
}

pub fn recovery(key: String, subject: String, message: String) -> Event {
    Event { kind: EventKind::Recovery, key, subject, message }
}

/// Percent with one decimal, as the protocol writes it.
pub fn pct(v: f64) -> String {
    format!("{v:.1}")
}

/// The keys the host says are firing for this rule.
pub struct Active(Vec<String>);

impl Active {
    pub fn new(keys: Vec<String>) -> Self {
        Active(keys)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.0.iter().any(|k| k == key)
    }

    /// Firing keys that start with `prefix` (e.g. every disk alert of one target).
    pub fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a String> + 'a {
        self.0.iter().filter(move |k| k.starts_with(prefix))
    }
}

/// The usual level check with hysteresis: fire at `value > threshold`; once firing,
/// recover only when `value < threshold - margin`. Returns the event to emit, if any
/// (an alert is emitted every round while over; the host sends it once).
pub fn level_check(
    active: &Active,
    key: String,
    value: f64,
    threshold: f64,
    margin: f64,
    alert_text: impl FnOnce() -> (String, String),
    recovery_text: impl FnOnce() -> (String, String),
) -> Option<Event> {
    if value > threshold {
        let (s, m) = alert_text();
        Some(alert(key, s, m))
    } else if active.contains(&key) && value < threshold - margin {
        let (s, m) = recovery_text();
        Some(recovery(key, s, m))
    } else {
        None
    }
}

/// An aggregate of `series` for `target` (its key) over the last `seconds`; none
/// without values in the window.
pub fn history(target: &str, series: &Series, seconds: u32, aggregate: Aggregate) -> Option<f64> {
    host::history(target, series, seconds, aggregate)
}

/// The values of `series` over the last `seconds`, oldest first, averaged down to
/// at most `max_points`.
pub fn history_points(target: &str, series: &Series, seconds: u32, max_points: u32) -> Vec<Point> {
    host::history_points(target, series, seconds, max_points)
}

/// This round's answer to a fact the rule lists in `needs`.
pub fn fact(target: &str, fact: &Fact) -> Option<FactValue> {
    host::get_fact(target, fact)
}

/// The rule's own memory, kept by the host across rounds, restarts and new
/// versions (at most 1024 keys, 64 KiB). Changes made by an evaluation that fails
/// are dropped.
pub mod state {
    use super::host;

    pub fn get(key: &str) -> Option<String> {
        host::state_get(key)
    }

    /// Fails over the caps; the state is then unchanged.
    pub fn set(key: &str, value: &str) -> Result<(), String> {
        host::state_set(key, value)
    }

    pub fn delete(key: &str) {
        host::state_delete(key)
    }

    /// A number kept under `key`, if it is one.
    pub fn get_u64(key: &str) -> Option<u64> {
        get(key)?.parse().ok()
    }
}

/// Bytes in the units people read: `1.5 GiB`.
pub fn bytes(v: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = v;
    let mut unit = 0;
    while v.abs() >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}
