//! Command-line arguments, parsed by hand: a handful of flags and two subcommands do
//! not pay for an argument-parsing library on the appliance (clap cost about 100 KB of
//! the 7 MB budget). Pure: `parse` takes the arguments, the binary does the I/O.

use std::path::PathBuf;

pub const USAGE: &str = "\
monserv: agentless SSH monitoring appliance speaking the MonServ WebSocket protocol

Usage: monserv [OPTIONS]
       monserv rule check RULE.wasm
       monserv rule test RULE.wasm --snapshot FILE [--active KEY,KEY...] [--set KEY=VALUE]...

Options:
  -c, --config PATH   TOML configuration file (on the appliance /etc/monserv/monserv.toml)
      --print-config  print the effective configuration (secrets masked) and exit
      --check-config  validate the configuration and exit
  -h, --help          print this help
  -V, --version       print the version

Rule commands:
  rule check RULE     check that a component implements the rule contract; print its description
  rule test RULE      run a rule once on a snapshot (GET /api/state output or a metrics_update
                      message) and print its events; --active: keys reported as firing,
                      --set: rule config values (repeatable)

Environment: the Go MonServ names (SERVERS, SERVER_PORT, ...), MONSERV_LOG, see README.md.
";

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Run { config: Option<PathBuf>, print_config: bool, check_config: bool },
    RuleCheck { rule: PathBuf },
    RuleTest { rule: PathBuf, snapshot: PathBuf, active: Vec<String>, settings: Vec<(String, String)> },
    Help,
    Version,
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
    match it.next() {
        Some("check") => {
            let rule = it.next().ok_or("rule check needs RULE.wasm")?;
            if let Some(extra) = it.next() {
                return Err(format!("unexpected argument {extra:?}"));
            }
            Ok(Command::RuleCheck { rule: rule.into() })
        }
        Some("test") => {
            let (mut rule, mut snapshot, mut active, mut settings) = (None, None, Vec::new(), Vec::new());
            while let Some(arg) = it.next() {
                let (flag, inline) = match arg.split_once('=') {
                    Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
                    _ => (arg, None),
                };
                let mut value = |name: &str| {
                    inline.clone().or_else(|| it.next().map(str::to_string)).ok_or(format!("{name} needs a value"))
                };
                match flag {
                    "--snapshot" => snapshot = Some(PathBuf::from(value("--snapshot")?)),
                    "--active" => {
                        active.extend(value("--active")?.split(',').filter(|k| !k.is_empty()).map(String::from))
                    }
                    "--set" => {
                        let kv = value("--set")?;
                        let (k, v) = kv.split_once('=').ok_or(format!("--set {kv:?} is not key=value"))?;
                        settings.push((k.to_string(), v.to_string()));
                    }
                    other if other.starts_with('-') => return Err(format!("unknown option {other:?}")),
                    other if rule.is_none() => rule = Some(PathBuf::from(other)),
                    other => return Err(format!("unexpected argument {other:?}")),
                }
            }
            Ok(Command::RuleTest {
                rule: rule.ok_or("rule test needs RULE.wasm")?,
                snapshot: snapshot.ok_or("rule test needs --snapshot FILE")?,
                active,
                settings,
            })
        }
        Some(other) => Err(format!("unknown rule command {other:?} (check, test)")),
        None => Err("rule needs a command: check or test".into()),
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
        assert_eq!(p(&["rule", "check", "r.wasm"]).unwrap(), Command::RuleCheck { rule: "r.wasm".into() });
        assert_eq!(
            p(&["rule", "test", "r.wasm", "--snapshot", "s.json", "--active", "a,b", "--set", "k=v=w", "--set=x=1"])
                .unwrap(),
            Command::RuleTest {
                rule: "r.wasm".into(),
                snapshot: "s.json".into(),
                active: vec!["a".into(), "b".into()],
                settings: vec![("k".into(), "v=w".into()), ("x".into(), "1".into())],
            }
        );
    }

    #[test]
    fn mistakes_are_named() {
        assert!(p(&["--confg", "x"]).unwrap_err().contains("--confg"));
        assert!(p(&["--config"]).unwrap_err().contains("needs a value"));
        assert!(p(&["extra"]).unwrap_err().contains("extra"));
        assert!(p(&["rule"]).unwrap_err().contains("check or test"));
        assert!(p(&["rule", "test", "r.wasm"]).unwrap_err().contains("--snapshot"));
        assert!(p(&["rule", "test", "r.wasm", "--snapshot", "s", "--set", "novalue"])
            .unwrap_err()
            .contains("key=value"));
        assert!(p(&["rule", "check"]).unwrap_err().contains("RULE.wasm"));
    }
}
