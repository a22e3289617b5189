//! The guest SDK for monserv alert rules.
//!
//! A rule is a type implementing [`Guest`] plus one `monserv_rule_sdk::export!(MyRule);`
//! line. The generated types mirror `rules-wasm/wit/rules.wit`; the helpers below
//! cover what every rule does: read typed config with defaults, build events, and
//! apply hysteresis through the host's list of firing keys.

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
    ConfigKey, Cpu, Disk, Event, EventKind, Memory, Metrics, Process, Reachability, RuleInfo, Snapshot, Target,
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

pub fn config_key(name: &str, default_value: &str, help: &str) -> ConfigKey {
    ConfigKey { name: name.to_string(), default_value: default_value.to_string(), help: help.to_string() }
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
