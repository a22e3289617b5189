//! Typed settings: what a rule declares each of its settings accepts (`describe()`,
//! contract 0.2.0), checked by the host when the settings load, before the trial
//! evaluation. A value that does not fit is refused with the file, line, key and
//! what the rule accepts, so a typo never runs as the rule's silent default and a
//! rule never sees a value it did not declare valid. 0.1.0 rules declare no kinds:
//! their settings are text and only the keys are checked.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use super::sandbox::{wit, RuleInfo};

/// Items of a list setting (a TOML array) at most, and bytes per item.
pub const MAX_LIST_ITEMS: usize = 256;
pub const MAX_ITEM_BYTES: usize = 1024;

/// What values a setting accepts; `type` in the REST API's JSON.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SettingKind {
    Text,
    Boolean,
    Number {
        #[serde(skip_serializing_if = "Option::is_none")]
        min: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        max: Option<f64>,
    },
    Integer {
        #[serde(skip_serializing_if = "Option::is_none")]
        min: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        max: Option<f64>,
    },
    Choice {
        values: Vec<String>,
    },
    TextList,
}

impl From<wit::SettingKind> for SettingKind {
    fn from(k: wit::SettingKind) -> Self {
        match k {
            wit::SettingKind::Text => SettingKind::Text,
            wit::SettingKind::Boolean => SettingKind::Boolean,
            wit::SettingKind::Number(b) => SettingKind::Number { min: b.min, max: b.max },
            wit::SettingKind::Integer(b) => SettingKind::Integer { min: b.min, max: b.max },
            wit::SettingKind::Choice(values) => SettingKind::Choice { values },
            wit::SettingKind::TextList => SettingKind::TextList,
        }
    }
}

/// A bound as operators write it: `90`, not `90.0`.
fn num(v: f64) -> String {
    format!("{v}")
}

fn range(min: Option<f64>, max: Option<f64>) -> String {
    match (min, max) {
        (Some(lo), Some(hi)) => format!(" from {} to {}", num(lo), num(hi)),
        (Some(lo), None) => format!(" of at least {}", num(lo)),
        (None, Some(hi)) => format!(" of at most {}", num(hi)),
        (None, None) => String::new(),
    }
}

/// What the kind accepts, in words: "a number from 0 to 100", "one of host, disk".
impl fmt::Display for SettingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SettingKind::Text => write!(f, "text"),
            SettingKind::Boolean => write!(f, "true or false"),
            SettingKind::Number { min, max } => write!(f, "a number{}", range(*min, *max)),
            SettingKind::Integer { min, max } => write!(f, "a whole number{}", range(*min, *max)),
            SettingKind::Choice { values } => write!(f, "one of {}", values.join(", ")),
            SettingKind::TextList => write!(f, "a list of texts, like [\"a\", \"b\"]"),
        }
    }
}

impl SettingKind {
    /// Check one value (as the settings file gave it; `from_array` when it was a TOML
    /// array). The error says what is wrong, not where.
    pub fn check(&self, value: &str, from_array: bool) -> Result<(), String> {
        if from_array != (*self == SettingKind::TextList) {
            return Err(if from_array { format!("expects {self}, not a list") } else { format!("expects {self}") });
        }
        let within = |v: f64, min: Option<f64>, max: Option<f64>| {
            if min.is_some_and(|lo| v < lo) || max.is_some_and(|hi| v > hi) {
                Err(format!("is out of range: expects {self}"))
            } else {
                Ok(())
            }
        };
        match self {
            SettingKind::Text | SettingKind::TextList => Ok(()),
            SettingKind::Boolean => match value.trim() {
                "true" | "false" => Ok(()),
                _ => Err("expects true or false".into()),
            },
            SettingKind::Number { min, max } => match value.trim().parse::<f64>() {
                Ok(v) if v.is_finite() => within(v, *min, *max),
                _ => Err(format!("is not a number: expects {self}")),
            },
            SettingKind::Integer { min, max } => match value.trim().parse::<i64>() {
                Ok(v) => within(v as f64, *min, *max),
                Err(_) => Err(format!("is not a whole number: expects {self}")),
            },
            SettingKind::Choice { values } => {
                if values.iter().any(|c| c == value.trim()) {
                    Ok(())
                } else {
                    Err(format!("is not allowed: expects {self}"))
                }
            }
        }
    }
}

/// How a list setting travels from the settings file to `host.config-list`: its
/// items, one per line (items cannot hold a newline; `to_list_text` refuses them).
pub fn list_items(text: &str) -> Vec<String> {
    if text.is_empty() {
        return Vec::new();
    }
    text.split('\n').map(str::to_string).collect()
}

/// A TOML array as a list setting's text, or why it cannot be one.
pub fn to_list_text(items: &[toml::Value]) -> Result<String, String> {
    if items.len() > MAX_LIST_ITEMS {
        return Err(format!("has {} items; at most {MAX_LIST_ITEMS} are allowed", items.len()));
    }
    let mut texts = Vec::with_capacity(items.len());
    for item in items {
        let text = match item {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => return Err(format!("items must be strings or numbers, not {}", other.type_str())),
        };
        if text.contains('\n') || text.len() > MAX_ITEM_BYTES {
            return Err(format!("items must be one line of at most {MAX_ITEM_BYTES} bytes"));
        }
        texts.push(text);
    }
    Ok(texts.join("\n"))
}

/// Refuse settings the rule does not declare (naming the ones it does) and values
/// that do not fit their declared kind (naming the file's line).
pub fn check(
    rule: &str,
    info: &RuleInfo,
    values: &HashMap<String, String>,
    lists: &BTreeSet<String>,
    file: Option<&(String, Arc<str>)>,
) -> Result<(), String> {
    let known: Vec<&str> = info.config.iter().map(|k| k.name.as_str()).collect();
    let mut unknown: Vec<&str> = values.keys().map(String::as_str).filter(|k| !known.contains(k)).collect();
    if !unknown.is_empty() {
        unknown.sort_unstable();
        let accepted = if known.is_empty() { "no settings".to_string() } else { known.join(", ") };
        return Err(format!(
            "{rule}.toml: unknown setting{} {}; rule {rule} accepts {accepted} (and for)",
            if unknown.len() > 1 { "s" } else { "" },
            unknown.join(", ")
        ));
    }
    for key in &info.config {
        let Some(value) = values.get(&key.name) else { continue };
        if let Err(why) = key.kind.check(value, lists.contains(&key.name)) {
            let shown = if lists.contains(&key.name) {
                format!("[{}]", list_items(value).iter().map(|i| format!("{i:?}")).collect::<Vec<_>>().join(", "))
            } else if value.trim().parse::<f64>().is_ok() {
                value.trim().to_string()
            } else {
                format!("{value:?}")
            };
            let shown = super::output::fit_text(shown, 80, false, &mut false);
            let place = match file {
                Some((path, text)) => match line_of(text, &key.name) {
                    Some(line) => format!("{path}: line {line}: "),
                    None => format!("{path}: "),
                },
                None => format!("{rule}.toml: "),
            };
            return Err(format!("{place}{} = {shown} {why}", key.name));
        }
    }
    Ok(())
}

/// The line (1-based) where a settings file sets `key` at the top level.
fn line_of(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            let line = line.trim_start();
            let rest = line
                .strip_prefix(key)
                .or_else(|| line.strip_prefix(&format!("\"{key}\"")))
                .or_else(|| line.strip_prefix(&format!("'{key}'")));
            rest.is_some_and(|r| r.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::sandbox::{ConfigKey, Contract};

    fn info(keys: Vec<(&str, SettingKind)>) -> RuleInfo {
        RuleInfo {
            name: "r".into(),
            version: "1".into(),
            contract: Contract::V0_2,
            config: keys
                .into_iter()
                .map(|(n, kind)| ConfigKey { name: n.into(), default_value: String::new(), help: String::new(), kind })
                .collect(),
            needs: Vec::new(),
        }
    }

    fn values(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn each_kind_accepts_what_it_declares_and_nothing_else() {
        let pct = SettingKind::Number { min: Some(0.0), max: Some(100.0) };
        assert!(pct.check("90", false).is_ok() && pct.check(" 0 ", false).is_ok() && pct.check("100", false).is_ok());
        assert_eq!(pct.check("100.5", false).unwrap_err(), "is out of range: expects a number from 0 to 100");
        assert_eq!(pct.check("-1", false).unwrap_err(), "is out of range: expects a number from 0 to 100");
        assert_eq!(pct.check("NaN", false).unwrap_err(), "is not a number: expects a number from 0 to 100");
        assert_eq!(pct.check("inf", false).unwrap_err(), "is not a number: expects a number from 0 to 100");
        assert_eq!(pct.check("x", true).unwrap_err(), "expects a number from 0 to 100, not a list");
        let polls = SettingKind::Integer { min: Some(1.0), max: None };
        assert!(polls.check("3", false).is_ok());
        assert_eq!(
            polls.check("2.5", false).unwrap_err(),
            "is not a whole number: expects a whole number of at least 1"
        );
        assert_eq!(polls.check("0", false).unwrap_err(), "is out of range: expects a whole number of at least 1");
        let b = SettingKind::Boolean;
        assert!(b.check("true", false).is_ok() && b.check("false", false).is_ok());
        assert_eq!(b.check("yes", false).unwrap_err(), "expects true or false");
        let c = SettingKind::Choice { values: vec!["host".into(), "disk".into()] };
        assert!(c.check("disk", false).is_ok());
        assert_eq!(c.check("Disk", false).unwrap_err(), "is not allowed: expects one of host, disk");
        let l = SettingKind::TextList;
        assert!(l.check("a\nb", true).is_ok());
        assert_eq!(l.check("a", false).unwrap_err(), "expects a list of texts, like [\"a\", \"b\"]");
        assert!(SettingKind::Text.check("anything at all", false).is_ok());
    }

    #[test]
    fn list_text_round_trips_and_is_bounded() {
        let arr: Vec<toml::Value> = vec!["sshd".into(), "scada historian".into(), 5.into()];
        let text = to_list_text(&arr).unwrap();
        assert_eq!(list_items(&text), ["sshd", "scada historian", "5"]);
        assert_eq!(list_items(&to_list_text(&[]).unwrap()), Vec::<String>::new());
        assert!(to_list_text(&["a\nb".into()]).unwrap_err().contains("one line"));
        assert!(to_list_text(&vec!["x".into(); MAX_LIST_ITEMS + 1]).unwrap_err().contains("at most 256"));
        let nested = toml::Value::Array(vec![]);
        assert_eq!(to_list_text(&[nested]).unwrap_err(), "items must be strings or numbers, not array");
    }

    #[test]
    fn refusals_name_the_file_line_key_and_what_is_accepted() {
        let info = info(vec![
            ("memory_percent", SettingKind::Number { min: Some(0.0), max: Some(100.0) }),
            ("processes", SettingKind::TextList),
        ]);
        let text: Arc<str> = "# pressure\nprocesses = [\"a\"]\n  memory_percent =  150\n".into();
        let file = ("/rules/p.toml".to_string(), text);
        let lists: BTreeSet<String> = ["processes".to_string()].into();
        let v = values(&[("memory_percent", "150"), ("processes", "a")]);
        assert_eq!(
            check("p", &info, &v, &lists, Some(&file)).unwrap_err(),
            "/rules/p.toml: line 3: memory_percent = 150 is out of range: expects a number from 0 to 100"
        );
        let v = values(&[("memory_percent", "50"), ("processes", "a")]);
        assert!(check("p", &info, &v, &lists, Some(&file)).is_ok());
        // A list where the rule wants a number, and the other way round.
        let v = values(&[("memory_percent", "1\n2")]);
        let lists2: BTreeSet<String> = ["memory_percent".to_string()].into();
        assert_eq!(
            check("p", &info, &v, &lists2, None).unwrap_err(),
            "p.toml: memory_percent = [\"1\", \"2\"] expects a number from 0 to 100, not a list"
        );
        let v = values(&[("processes", "sshd")]);
        assert!(check("p", &info, &v, &BTreeSet::new(), None).unwrap_err().contains("expects a list of texts"));
        // Unknown keys come first, with the accepted ones.
        let v = values(&[("memory_precent", "1")]);
        assert_eq!(
            check("p", &info, &v, &BTreeSet::new(), None).unwrap_err(),
            "p.toml: unknown setting memory_precent; rule p accepts memory_percent, processes (and for)"
        );
    }
}
