//! The expression rule: a condition written in the settings file, evaluated per
//! target inside the sandbox like any other rule. monserv runs this component for
//! every `<name>.toml` in the rules directory that has a `when` and no `<name>.wasm`:
//!
//! ```toml
//! when = 'disk("/").used_percent > 80 and memory.used_percent > 90'
//! for = "2m"
//! ```
//!
//! The language is in `lang.rs` and documented in rules-wasm/README.md. Settings
//! are parsed on every evaluation (the sandbox keeps no state between rounds); that
//! costs microseconds, and a broken setting is reported by the trial evaluation
//! monserv runs before the rule goes live, with its line and column.

mod lang;

use lang::{Each, Expr, Part, Scope, Type, Value};
use monserv_rule_sdk::text as setting_text;
use monserv_rule_sdk::*;

struct ExpressionRule;

/// The parsed settings.
struct Settings {
    when_src: String,
    when: Expr,
    recover_when: Option<Expr>,
    each: Each,
    subject: Option<Vec<Part>>,
    message: Option<Vec<Part>>,
    recovery_subject: Option<Vec<Part>>,
    recovery_message: Option<Vec<Part>>,
}

fn located(key: &str, src: &str, e: lang::Error) -> String {
    format!("{key}: {}", e.render(src))
}

fn template(key: &str, each: Each) -> Result<Option<Vec<Part>>, String> {
    match host::config(key) {
        None => Ok(None),
        Some(src) => lang::template(&src, each).map(Some).map_err(|e| located(key, &src, e)),
    }
}

fn settings() -> Result<Settings, String> {
    let each = match host::config("each").as_deref().map(str::trim) {
        None | Some("host") => Each::Host,
        Some("disk") => Each::Disk,
        Some("process") => Each::Process,
        Some(other) => return Err(format!("each = {other:?}: use \"host\", \"disk\" or \"process\"")),
    };
    let when_src = host::config("when")
        .ok_or("`when` is missing: the condition to alert on, e.g. when = 'memory.used_percent > 90'")?;
    let when = lang::parse(&when_src, each, Type::Bool).map_err(|e| located("when", &when_src, e))?;
    let recover_when = match host::config("recover_when") {
        None => None,
        Some(src) => Some(lang::parse(&src, each, Type::Bool).map_err(|e| located("recover_when", &src, e))?),
    };
    Ok(Settings {
        when_src,
        when,
        recover_when,
        each,
        subject: template("subject", each)?,
        message: template("message", each)?,
        recovery_subject: template("recovery_subject", each)?,
        recovery_message: template("recovery_message", each)?,
    })
}

/// One target, and the disk or process being looked at with `each`.
struct TargetScope<'a> {
    t: &'a Target,
    disk: Option<&'a Disk>,
    process: Option<&'a Process>,
}

impl TargetScope<'_> {
    /// Metrics that count: an offline target's are stale, so unknown.
    fn metrics(&self) -> Option<&Metrics> {
        if self.t.status == Reachability::Offline {
            return None;
        }
        self.t.metrics.as_ref()
    }
}

fn text<'a, S: Scope + ?Sized>(s: &'a str) -> Value<'a, S> {
    Value::Str(std::borrow::Cow::Borrowed(s))
}

impl Scope for TargetScope<'_> {
    type Disk = Disk;
    type Proc = Process;

    fn name(&self, name: &str) -> Value<'_, Self> {
        match name {
            "hostname" => text(&self.t.hostname),
            "target" => text(&self.t.key),
            "online" => Value::Bool(self.t.status == Reachability::Online),
            "consecutive_failures" => Value::Num(f64::from(self.t.consecutive_failures)),
            "last_error" => self.t.last_error_kind.as_deref().map_or(Value::Unknown, text),
            "uptime_seconds" => self.metrics().map_or(Value::Unknown, |m| Value::Num(m.uptime_seconds as f64)),
            "memory" => self.metrics().map_or(Value::Unknown, |_| Value::Memory),
            "cpu" => self.metrics().map_or(Value::Unknown, |_| Value::Cpu),
            "disk" => self.disk.map_or(Value::Unknown, Value::Disk),
            "process" => self.process.map_or(Value::Unknown, Value::Proc),
            _ => Value::Unknown,
        }
    }

    fn disk(&self, mount: &str) -> Option<&Disk> {
        self.metrics()?.disks.iter().find(|d| d.mountpoint == mount)
    }

    fn process(&self, name: &str) -> Option<&Process> {
        // The largest of that name (the list is sorted by memory).
        self.metrics()?.top_procs_by_mem.iter().find(|p| p.name == name)
    }

    fn memory_field(&self, field: &str) -> Value<'_, Self> {
        let Some(m) = self.metrics() else { return Value::Unknown };
        let m = &m.memory;
        match field {
            "total" => Value::Num(m.total as f64),
            "used" => Value::Num(m.used as f64),
            "free" => Value::Num(m.free as f64),
            "used_percent" => Value::Num(m.used_percent),
            _ => Value::Unknown,
        }
    }

    fn cpu_field(&self, field: &str) -> Value<'_, Self> {
        let Some(m) = self.metrics() else { return Value::Unknown };
        match field {
            "cores" => Value::Num(f64::from(m.cpu.cores)),
            "used_percent" => Value::Num(m.cpu.used_percent),
            "model_name" => text(&m.cpu.model_name),
            _ => Value::Unknown,
        }
    }

    fn disk_field<'a>(&'a self, d: &'a Disk, field: &str) -> Value<'a, Self> {
        match field {
            "device" => text(&d.device),
            "mountpoint" => text(&d.mountpoint),
            "fstype" => text(&d.fstype),
            "total" => Value::Num(d.total as f64),
            "used" => Value::Num(d.used as f64),
            "free" => Value::Num(d.free as f64),
            "used_percent" => Value::Num(d.used_percent),
            _ => Value::Unknown,
        }
    }

    fn process_field<'a>(&'a self, p: &'a Process, field: &str) -> Value<'a, Self> {
        match field {
            "pid" => Value::Num(f64::from(p.pid)),
            "name" => text(&p.name),
            "username" => text(&p.username),
            "rss_bytes" => Value::Num(p.rss_bytes as f64),
            "percent_ram" => Value::Num(p.percent_ram),
            "cmdline" => text(&p.cmdline),
            _ => Value::Unknown,
        }
    }
}

/// `disk("/").used_percent 85.2, memory.used_percent 93.1`: what the condition saw.
fn observed(s: &Settings, scope: &TargetScope) -> String {
    let mut spans = Vec::new();
    lang::operands(&s.when, &mut spans);
    let mut parts = Vec::new();
    for (start, end) in spans.into_iter().take(8) {
        let src = s.when_src.get(start..end).unwrap_or("?");
        // Re-parse the operand alone: spans index the source, not the tree.
        let shown = match lang::parse(src, s.each, Type::Num).or_else(|_| lang::parse(src, s.each, Type::Str)) {
            Ok(e) => lang::eval(&e, scope).show(),
            Err(_) => continue,
        };
        parts.push(format!("{src} {shown}"));
    }
    parts.join(", ")
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What is being looked at, in keys and default subjects.
fn subject_of(scope: &TargetScope) -> (String, String) {
    let t = scope.t;
    match (scope.disk, scope.process) {
        (Some(d), _) => (format!("{}/disk/{}", t.key, d.mountpoint), format!("{} disk {}", t.hostname, d.mountpoint)),
        (_, Some(p)) => (format!("{}/proc/{}", t.key, p.name), format!("{} process {}", t.hostname, p.name)),
        _ => (format!("{}/when", t.key), t.hostname.clone()),
    }
}

fn decide(s: &Settings, active: &Active, scope: &TargetScope, events: &mut Vec<Event>) {
    let (key, what) = subject_of(scope);
    let firing = active.contains(&key);
    let holds = lang::eval(&s.when, scope);
    let fire = matches!(holds, Value::Bool(true));
    let recover = firing
        && match &s.recover_when {
            Some(r) => matches!(lang::eval(r, scope), Value::Bool(true)),
            None => matches!(holds, Value::Bool(false)),
        };
    let condition = one_line(&s.when_src);
    if fire && !recover {
        let subject =
            s.subject.as_ref().map_or_else(|| format!("[ALERT] {what}: {condition}"), |t| lang::render(t, scope));
        let message = s.message.as_ref().map_or_else(|| observed(s, scope), |t| lang::render(t, scope));
        events.push(alert(key, subject, message));
    } else if recover {
        let subject = match (&s.recovery_subject, &s.subject) {
            (Some(t), _) => lang::render(t, scope),
            (None, Some(t)) => {
                let alerting = lang::render(t, scope);
                format!("[RECOVERED] {}", alerting.strip_prefix("[ALERT] ").unwrap_or(&alerting))
            }
            (None, None) => format!("[RECOVERED] {what}: {condition}"),
        };
        let message = s
            .recovery_message
            .as_ref()
            .map_or_else(|| format!("back to normal: {}", observed(s, scope)), |t| lang::render(t, scope));
        events.push(recovery(key, subject, message));
    }
}

impl Guest for ExpressionRule {
    fn describe() -> RuleInfo {
        RuleInfo {
            name: String::from("expression"),
            version: String::from(env!("CARGO_PKG_VERSION")),
            config: vec![
                setting_text(
                    "when",
                    "",
                    "the condition, e.g. disk(\"/\").used_percent > 80 and memory.used_percent > 90",
                ),
                setting_text("recover_when", "not when", "once firing, recover only when this holds (hysteresis)"),
                choice(
                    "each",
                    "host",
                    &["host", "disk", "process"],
                    "evaluate per host, or per disk or process of each host",
                ),
                setting_text(
                    "subject",
                    "[ALERT] HOST: WHEN",
                    "alert subject template; {expression} parts are filled in",
                ),
                setting_text("message", "the values the condition saw", "alert message template"),
                setting_text("recovery_subject", "[RECOVERED] ...", "recovery subject template"),
                setting_text("recovery_message", "back to normal: ...", "recovery message template"),
            ],
            needs: vec![],
        }
    }

    fn evaluate(snapshot: Snapshot, active_keys: Vec<String>) -> Result<Vec<Event>, String> {
        let s = settings()?;
        let active = Active::new(active_keys);
        let mut events = Vec::new();
        for t in &snapshot.targets {
            let scope = TargetScope { t, disk: None, process: None };
            match s.each {
                Each::Host => decide(&s, &active, &scope, &mut events),
                Each::Disk => {
                    for d in scope.metrics().map(|m| m.disks.as_slice()).unwrap_or_default() {
                        decide(&s, &active, &TargetScope { disk: Some(d), ..scope }, &mut events);
                    }
                }
                Each::Process => {
                    let mut seen: Vec<&str> = Vec::new();
                    for p in scope.metrics().map(|m| m.top_procs_by_mem.as_slice()).unwrap_or_default() {
                        if !seen.contains(&p.name.as_str()) {
                            seen.push(&p.name);
                            decide(&s, &active, &TargetScope { process: Some(p), ..scope }, &mut events);
                        }
                    }
                }
            }
        }
        Ok(events)
    }
}

export!(ExpressionRule);

#[cfg(test)]
mod tests;
