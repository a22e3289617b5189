//! Declared facts: the script sections that fetch them on a remote host, the pure
//! functions that read those sections, and the gateway's own answers.
//!
//! Costs, only when some rule asks: process names are one `cat` of every
//! `/proc/PID/comm` through one `grep -xF` (only matching names cross the wire);
//! file ages are one `date` and one `stat`; unit states one `systemctl is-active`,
//! skipped where there is no systemctl (BusyBox hosts: the state is then unknown).

use std::fmt::Write;

use crate::facts::{Answers, Fact, FactValue};

/// Single-quote for `sh`. [`Fact::check`] already keeps quotes out; this is the
/// second lock.
fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The script lines for these facts (empty when none), to go before the `end`
/// marker. The script has `cd /proc` and `$M` set.
pub fn script_sections(facts: &[Fact]) -> String {
    let mut s = String::new();
    let (mut names, mut paths, mut units) = (Vec::new(), Vec::new(), Vec::new());
    for f in facts.iter().filter(|f| f.check().is_ok()) {
        match f {
            Fact::ProcessCount(n) => names.push(quoted(n)),
            Fact::FileAge(p) => paths.push(quoted(p)),
            Fact::UnitState(u) => units.push(quoted(u)),
        }
    }
    if !names.is_empty() {
        let patterns: Vec<String> = names.iter().map(|n| format!("-e {n}")).collect();
        let _ = writeln!(s, "echo \"$M comms\"\ncat [0-9]*/comm 2>/dev/null | grep -xF {}", patterns.join(" "));
    }
    if !paths.is_empty() {
        let _ = writeln!(s, "echo \"$M fileage\"\ndate +%s\nstat -c '%Y %n' {} 2>/dev/null", paths.join(" "));
    }
    if !units.is_empty() {
        let _ = writeln!(
            s,
            "echo \"$M units\"\ncommand -v systemctl >/dev/null 2>&1 && systemctl is-active {} 2>/dev/null",
            units.join(" ")
        );
    }
    s
}

fn lines(body: &[u8]) -> impl Iterator<Item = &str> {
    body.split(|&b| b == b'\n').filter_map(|l| std::str::from_utf8(l).ok()).map(|l| l.trim_end_matches('\r'))
}

/// Count the names in a `comms` section (one matching process name per line).
pub fn count_processes(facts: &[Fact], comms: Option<&[u8]>, out: &mut Answers) {
    let Some(body) = comms else { return };
    for f in facts {
        if let Fact::ProcessCount(name) = f {
            let n = lines(body).filter(|l| l == name).count();
            out.insert(f.clone(), FactValue::Count(u32::try_from(n).unwrap_or(u32::MAX)));
        }
    }
}

/// Read a `fileage` section: the host's clock, then `mtime path` per existing file.
/// Without the clock line (no `date`), every age is unknown.
pub fn file_ages(facts: &[Fact], body: Option<&[u8]>, out: &mut Answers) {
    let Some(body) = body else { return };
    let mut it = lines(body);
    let Some(now) = it.next().and_then(|l| l.trim().parse::<u64>().ok()) else { return };
    let mtimes: Vec<(u64, &str)> =
        it.filter_map(|l| l.split_once(' ')).filter_map(|(t, p)| Some((t.trim().parse().ok()?, p))).collect();
    for f in facts {
        if let Fact::FileAge(path) = f {
            let value = match mtimes.iter().find(|(_, p)| p == path) {
                Some((t, _)) => FactValue::Seconds(now.saturating_sub(*t)),
                None => FactValue::Missing,
            };
            out.insert(f.clone(), value);
        }
    }
}

/// Read a `units` section: `systemctl is-active` prints one state per unit, in the
/// order asked. Empty (no systemctl) leaves the states unknown.
pub fn unit_states(facts: &[Fact], body: Option<&[u8]>, out: &mut Answers) {
    let Some(body) = body else { return };
    let states: Vec<&str> = lines(body).map(str::trim).filter(|l| !l.is_empty()).collect();
    let units = facts.iter().filter(|f| matches!(f, Fact::UnitState(_)) && f.check().is_ok());
    if states.is_empty() {
        return;
    }
    for (f, state) in units.zip(states) {
        let mut state = state.to_string();
        super::parse::clean_field(&mut state, 32);
        out.insert(f.clone(), FactValue::Text(state));
    }
}

/// The gateway's own answers, read directly (a blocking call: /proc and `stat`,
/// and `systemctl` only if a unit was asked for).
pub fn local_answers(proc_root: &std::path::Path, facts: &[Fact]) -> Answers {
    let mut out = Answers::new();
    if facts.iter().any(|f| matches!(f, Fact::ProcessCount(_))) {
        let mut comms = Vec::new();
        if let Ok(dir) = std::fs::read_dir(proc_root) {
            for e in dir.flatten() {
                if e.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())) {
                    if let Ok(c) = std::fs::read(e.path().join("comm")) {
                        comms.extend_from_slice(&c);
                    }
                }
            }
        }
        count_processes(facts, Some(&comms), &mut out);
    }
    let now = std::time::SystemTime::now();
    for f in facts {
        if let Fact::FileAge(path) = f {
            let value = match std::fs::metadata(path).and_then(|m| m.modified()) {
                Ok(t) => FactValue::Seconds(now.duration_since(t).map_or(0, |d| d.as_secs())),
                Err(_) => FactValue::Missing,
            };
            out.insert(f.clone(), value);
        }
    }
    let units: Vec<&str> = facts
        .iter()
        .filter(|f| f.check().is_ok())
        .filter_map(|f| if let Fact::UnitState(u) = f { Some(u.as_str()) } else { None })
        .collect();
    if !units.is_empty() {
        if let Ok(o) = std::process::Command::new("systemctl").arg("is-active").args(&units).output() {
            unit_states(facts, Some(&o.stdout), &mut out);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Vec<Fact> {
        vec![
            Fact::ProcessCount("sshd".into()),
            Fact::ProcessCount("historian".into()),
            Fact::FileAge("/var/log/syslog".into()),
            Fact::FileAge("/nope".into()),
            Fact::UnitState("ssh.service".into()),
            Fact::UnitState("cron.service".into()),
        ]
    }

    #[test]
    fn script_asks_only_for_what_is_wanted_and_quotes_it() {
        assert_eq!(script_sections(&[]), "");
        let s = script_sections(&facts());
        assert!(s.contains("grep -xF -e 'sshd' -e 'historian'"), "{s}");
        assert!(s.contains("stat -c '%Y %n' '/var/log/syslog' '/nope'"), "{s}");
        assert!(s.contains("systemctl is-active 'ssh.service' 'cron.service'"), "{s}");
        // A fact that fails the check never reaches the script.
        let s = script_sections(&[Fact::ProcessCount("x'; reboot; '".into())]);
        assert_eq!(s, "");
    }

    #[test]
    fn sections_read_into_answers() {
        let f = facts();
        let mut out = Answers::new();
        count_processes(&f, Some(b"sshd\nsshd\nsshd\n"), &mut out);
        file_ages(&f, Some(b"1700000100\n1700000000 /var/log/syslog\n"), &mut out);
        unit_states(&f, Some(b"active\nfailed\n"), &mut out);
        assert_eq!(out[&f[0]], FactValue::Count(3));
        assert_eq!(out[&f[1]], FactValue::Count(0));
        assert_eq!(out[&f[2]], FactValue::Seconds(100));
        assert_eq!(out[&f[3]], FactValue::Missing);
        assert_eq!(out[&f[4]], FactValue::Text("active".into()));
        assert_eq!(out[&f[5]], FactValue::Text("failed".into()));
        // No clock line, no systemctl, no section: unknown, not "missing" or "0".
        let mut out = Answers::new();
        file_ages(&f, Some(b""), &mut out);
        unit_states(&f, Some(b""), &mut out);
        count_processes(&f, None, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn the_gateway_answers_itself() {
        let me = std::fs::read_to_string("/proc/self/comm").unwrap();
        let f = vec![Fact::ProcessCount(me.trim().into()), Fact::FileAge("/proc/self/nonexistent".into())];
        let out = local_answers(std::path::Path::new("/proc"), &f);
        assert!(matches!(out[&f[0]], FactValue::Count(n) if n >= 1), "{out:?}");
        assert_eq!(out[&f[1]], FactValue::Missing);
    }
}
