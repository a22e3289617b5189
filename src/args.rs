//! Command-line arguments, parsed by hand: a handful of flags and two subcommands do
//! not pay for an argument-parsing library on the appliance (clap cost about 100 KB of
//! the 7 MB budget). Pure: `parse` takes the arguments, the binary does the I/O.

use std::path::PathBuf;

pub const USAGE: &str = "\
monserv: agentless SSH monitoring appliance speaking the MonServ WebSocket protocol

Usage: monserv [OPTIONS]
       monserv rule check RULE [--settings FILE.toml]
       monserv rule test RULE [--settings FILE.toml] --snapshot FILE [--active KEY,KEY...] [--set KEY=VALUE]...
       monserv rule test RULE [--settings FILE.toml] --cases TESTS.toml
       monserv rule test RULE [--settings FILE.toml] --history FILE [--set KEY=VALUE]...
       monserv rule snapshot [-c monserv.toml] [--target URL] [--out FILE]
       monserv rule new NAME
       monserv rule build [DIR] [--out FILE]

Options:
  -c, --config PATH   TOML configuration file (on the appliance /etc/monserv/monserv.toml)
      --print-config  print the effective configuration (secrets masked) and exit
      --check-config  validate the configuration and exit
  -h, --help          print this help
  -V, --version       print the version

Rule commands (RULE is a component, NAME.wasm, or an expression rule, NAME.toml with `when`):
  rule check RULE     check a rule (contract, settings, expression syntax); print its settings
  rule test RULE      --snapshot: run once on a snapshot (from `rule snapshot`, GET /api/state or
                      a metrics_update message) and print the events; --active: keys reported as
                      firing, --set: settings (repeatable). --cases: run a test file of steps and
                      expected alerts and recoveries (exit 1 on a mismatch); see rules-wasm/README.md
                      --history: replay a recorded history (GET /api/v1/history) and print every
                      alert and recovery the rule would have produced, with its time
  rule snapshot       capture this machine, the targets of -c monserv.toml, or --target URL
                      (read like SERVERS; its host key is checked as the daemon would)
  rule new NAME       write a rule crate NAME/ (SDK vendored, standalone) to start from
  rule build [DIR]    build the rule crate in DIR (default .) into a component, NAME.wasm

Environment: the Go MonServ names (SERVERS, SERVER_PORT, ...), MONSERV_LOG, see README.md.
";

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Run { config: Option<PathBuf>, print_config: bool, check_config: bool },
    Rule(Box<RuleArgs>),
    Help,
    Version,
}

#[derive(Debug, PartialEq, Eq, Default, Clone, Copy)]
pub enum RuleAction {
    #[default]
    Check,
    Test,
    Snapshot,
    New,
    Build,
}

/// `monserv rule ...`: what to do and with what (each action uses its own subset).
#[derive(Debug, PartialEq, Eq, Default)]
pub struct RuleArgs {
    pub action: RuleAction,
    /// The rule file (`check`, `test`), the name (`new`) or the crate dir (`build`).
    pub rule: Option<PathBuf>,
    pub settings_file: Option<PathBuf>,
    pub snapshot: Option<PathBuf>,
    pub cases: Option<PathBuf>,
    /// `rule test --history`: a history export to replay.
    pub history: Option<PathBuf>,
    pub target: Option<String>,
    /// `rule snapshot`: monserv.toml (targets, keys, known_hosts), as the daemon reads it.
    pub config: Option<PathBuf>,
    pub out: Option<PathBuf>,
    pub active: Vec<String>,
    pub set: Vec<(String, String)>,
}

/// Parse the arguments after the program name. An error is one line for stderr
/// (the binary adds the usage hint and exits 2, as argument errors do).
pub fn parse(args: &[String]) -> Result<Command, String> {
    let mut it = args.iter().map(String::as_str).peekable();
    let (mut config, mut print_config, mut check_config) = (None, false, false);
    while let Some(arg) = it.next() {
        // `--flag=value` is `--flag value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v)),
            _ => (arg, None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            inline.map(str::to_string).or_else(|| it.next().map(str::to_string)).ok_or(format!("{name} needs a value"))
        };
        match flag {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "-c" | "--config" => config = Some(PathBuf::from(value("--config")?)),
            "--print-config" => print_config = true,
            "--check-config" => check_config = true,
            "rule" if config.is_none() && !print_config && !check_config => return parse_rule(&mut it),
            other if other.starts_with('-') => return Err(format!("unknown option {other:?}")),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    Ok(Command::Run { config, print_config, check_config })
}

fn parse_rule<'a>(it: &mut impl Iterator<Item = &'a str>) -> Result<Command, String> {
    let action = match it.next() {
        Some("check") => RuleAction::Check,
        Some("test") => RuleAction::Test,
        Some("snapshot") => RuleAction::Snapshot,
        Some("new") => RuleAction::New,
        Some("build") => RuleAction::Build,
        Some(other) => return Err(format!("unknown rule command {other:?} (check, test, snapshot, new, build)")),
        None => return Err("rule needs a command: check, test, snapshot, new or build".into()),
    };
    let mut r = RuleArgs { action, ..RuleArgs::default() };
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg, None),
        };
        let mut value = |name: &str| {
            inline.clone().or_else(|| it.next().map(str::to_string)).ok_or(format!("{name} needs a value"))
        };
        match flag {
            "--snapshot" => r.snapshot = Some(PathBuf::from(value("--snapshot")?)),
            "--settings" => r.settings_file = Some(PathBuf::from(value("--settings")?)),
            "--cases" => r.cases = Some(PathBuf::from(value("--cases")?)),
            "--history" => r.history = Some(PathBuf::from(value("--history")?)),
            "--target" => r.target = Some(value("--target")?),
            "-c" | "--config" => r.config = Some(PathBuf::from(value("--config")?)),
            "--out" | "-o" => r.out = Some(PathBuf::from(value("--out")?)),
            "--active" => r.active.extend(value("--active")?.split(',').filter(|k| !k.is_empty()).map(String::from)),
            "--set" => {
                let kv = value("--set")?;
                let (k, v) = kv.split_once('=').ok_or(format!("--set {kv:?} is not key=value"))?;
                r.set.push((k.to_string(), v.to_string()));
            }
            other if other.starts_with('-') => return Err(format!("unknown option {other:?}")),
            other if r.rule.is_none() => r.rule = Some(PathBuf::from(other)),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    match r.action {
        RuleAction::Check if r.rule.is_none() => {
            Err("rule check needs RULE (a .wasm, or an expression rule's .toml)".into())
        }
        RuleAction::Test if r.rule.is_none() => {
            Err("rule test needs RULE (a .wasm, or an expression rule's .toml)".into())
        }
        RuleAction::Test
            if [r.snapshot.is_some(), r.cases.is_some(), r.history.is_some()].iter().filter(|b| **b).count() != 1 =>
        {
            Err("rule test needs one of --snapshot FILE (one evaluation), --cases FILE (a test file) or --history FILE (a backtest)".into())
        }
        RuleAction::New if r.rule.is_none() => Err("rule new needs NAME".into()),
        RuleAction::Snapshot if r.rule.is_some() => {
            Err("rule snapshot takes no file (it prints JSON; use --target URL for a remote host)".into())
        }
        _ => Ok(Command::Rule(Box::new(r))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Command, String> {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn flags_and_subcommands() {
        assert_eq!(p(&[]).unwrap(), Command::Run { config: None, print_config: false, check_config: false });
        assert_eq!(
            p(&["-c", "/etc/m.toml", "--print-config"]).unwrap(),
            Command::Run { config: Some("/etc/m.toml".into()), print_config: true, check_config: false }
        );
        assert_eq!(
            p(&["--config=/x.toml", "--check-config"]).unwrap(),
            Command::Run { config: Some("/x.toml".into()), print_config: false, check_config: true }
        );
        assert_eq!(p(&["--help"]).unwrap(), Command::Help);
        assert_eq!(p(&["-V"]).unwrap(), Command::Version);
        assert_eq!(
            p(&["rule", "check", "r.wasm"]).unwrap(),
            Command::Rule(Box::new(RuleArgs { rule: Some("r.wasm".into()), ..RuleArgs::default() }))
        );
        assert_eq!(
            p(&["rule", "test", "r.wasm", "--snapshot", "s.json", "--active", "a,b", "--set", "k=v=w", "--set=x=1"])
                .unwrap(),
            Command::Rule(Box::new(RuleArgs {
                action: RuleAction::Test,
                rule: Some("r.wasm".into()),
                snapshot: Some("s.json".into()),
                active: vec!["a".into(), "b".into()],
                set: vec![("k".into(), "v=w".into()), ("x".into(), "1".into())],
                ..RuleArgs::default()
            }))
        );
        assert_eq!(
            p(&["rule", "test", "d.toml", "--cases=t.toml", "--settings", "s.toml"]).unwrap(),
            Command::Rule(Box::new(RuleArgs {
                action: RuleAction::Test,
                rule: Some("d.toml".into()),
                cases: Some("t.toml".into()),
                settings_file: Some("s.toml".into()),
                ..RuleArgs::default()
            }))
        );
        assert_eq!(
            p(&["rule", "snapshot", "-c", "m.toml", "--target=ssh://u@h"]).unwrap(),
            Command::Rule(Box::new(RuleArgs {
                action: RuleAction::Snapshot,
                config: Some("m.toml".into()),
                target: Some("ssh://u@h".into()),
                ..RuleArgs::default()
            }))
        );
        assert_eq!(
            p(&["rule", "build", "--out", "x.wasm"]).unwrap(),
            Command::Rule(Box::new(RuleArgs {
                action: RuleAction::Build,
                out: Some("x.wasm".into()),
                ..RuleArgs::default()
            }))
        );
    }

    #[test]
    fn mistakes_are_named() {
        assert!(p(&["--confg", "x"]).unwrap_err().contains("--confg"));
        assert!(p(&["--config"]).unwrap_err().contains("needs a value"));
        assert!(p(&["extra"]).unwrap_err().contains("extra"));
        assert!(p(&["rule"]).unwrap_err().contains("check, test"));
        assert!(p(&["rule", "test", "r.wasm"]).unwrap_err().contains("--snapshot"));
        assert!(p(&["rule", "test", "r.wasm", "--snapshot", "s", "--cases", "c"]).unwrap_err().contains("--cases"));
        assert!(p(&["rule", "new"]).unwrap_err().contains("NAME"));
        assert!(p(&["rule", "test", "r.wasm", "--snapshot", "s", "--set", "novalue"])
            .unwrap_err()
            .contains("key=value"));
        assert!(p(&["rule", "check"]).unwrap_err().contains("RULE"));
    }
}
