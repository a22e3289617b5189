//! The `monserv` binary: arguments, logging, signals and exit codes.
//!
//! Exit status: 0 after a clean shutdown (SIGTERM/SIGINT), 78 (EX_CONFIG) for any
//! configuration problem including a port already in use, 1 for anything else (such
//! as a wasm engine or thread that cannot start), which the service manager restarts.

use std::process::ExitCode;
use std::time::Duration;

mod args;

use args::{Command, RuleAction, RuleArgs};
use monserv::config::{Config, ProcessEnv, EXIT_CONFIG};
use monserv::Daemon;

fn rule_command(r: RuleArgs) -> ExitCode {
    use monserv::rules::{cases, cli};
    let rule = r.rule.as_deref();
    let settings = r.settings_file.as_deref();
    let result = match (r.action, rule) {
        (RuleAction::Check, Some(rule)) => cli::check(rule, settings, &r.set),
        (RuleAction::Test, Some(rule)) => match (&r.snapshot, &r.cases, &r.history) {
            (_, _, Some(history)) => cli::backtest(rule, settings, history, &r.set),
            (Some(snapshot), _, _) => cli::test(rule, settings, snapshot, &r.active, &r.set),
            (None, Some(file), _) => match cases::run(rule, settings, file) {
                Ok((report, true)) => Ok(report),
                Ok((report, false)) => {
                    print!("{report}");
                    return ExitCode::FAILURE;
                }
                Err(e) => Err(e),
            },
            (None, None, None) => Err("rule test needs --snapshot, --cases or --history".into()),
        },
        (RuleAction::Snapshot, _) => snapshot(r.config.as_deref(), r.target.as_deref(), r.out.as_deref()),
        #[cfg(feature = "authoring")]
        (RuleAction::New, Some(name)) => monserv::rules::scaffold::new(name, r.out.as_deref()),
        #[cfg(feature = "authoring")]
        (RuleAction::Build, dir) => monserv::rules::scaffold::build(dir, r.out.as_deref()),
        #[cfg(not(feature = "authoring"))]
        (RuleAction::New | RuleAction::Build, _) => Err(
            "rule new and rule build are not in this build (the appliance's): run them on a workstation, with monserv built with default features".into(),
        ),
        _ => Err("missing argument (see monserv --help)".into()),
    };
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("monserv: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `rule snapshot`: this machine, or the configured targets, or `--target URL` (read
/// like SERVERS), polled without a daemon.
fn snapshot(
    config: Option<&std::path::Path>,
    target: Option<&str>,
    out: Option<&std::path::Path>,
) -> Result<String, String> {
    struct WithTarget<'a>(Option<&'a str>);
    impl monserv::config::Env for WithTarget<'_> {
        fn get(&self, name: &str) -> Option<String> {
            match (name, self.0) {
                ("SERVERS", Some(t)) => Some(t.to_string()),
                _ => ProcessEnv.get(name),
            }
        }
    }
    let config = Config::load(config, &WithTarget(target)).map_err(|e| format!("config error: {e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let json = runtime.block_on(monserv::snapshot_once(&config))?;
    match out {
        Some(path) => {
            std::fs::write(path, &json).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(format!("wrote {} ({} targets)\n", path.display(), config.targets.len()))
        }
        None => Ok(String::from_utf8_lossy(&json).into_owned() + "\n"),
    }
}

/// Log to stderr (journald on the appliance). `MONSERV_LOG` picks levels per module,
/// e.g. `debug` or `info,monserv::collect=trace`; a bad value is reported, not fatal.
fn init_logging() {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let default = || "info,russh=warn".parse::<Targets>().unwrap_or_default();
    let (filter, bad) = match std::env::var("MONSERV_LOG").map(|spec| (spec.parse::<Targets>(), spec)) {
        Ok((Ok(filter), _)) => (filter, None),
        Ok((Err(e), spec)) => (default(), Some(format!("MONSERV_LOG={spec:?} ignored: {e}"))),
        Err(_) => (default(), None),
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: journald and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    tracing_subscriber::registry().with(fmt).with(filter).init();
    if let Some(warning) = bad {
        tracing::warn!("{warning}");
    }
}

fn main() -> ExitCode {
    // A rule compiler child (rules::compiler): no logging, no runtime, no config.
    if std::env::args_os().nth(1).is_some_and(|a| a == monserv::rules::compiler::CHILD_ARG) {
        return monserv::rules::compiler::child_main();
    }
    let argv: Vec<String> = std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
    let (config_path, print_config, check_config) = match args::parse(&argv) {
        Ok(Command::Help) => {
            print!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("monserv {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Command::Run { config, print_config, check_config }) => (config, print_config, check_config),
        Ok(Command::Rule(rule)) => {
            init_logging();
            return rule_command(*rule);
        }
        Err(e) => {
            eprintln!("monserv: {e}\n\nTry 'monserv --help'.");
            return ExitCode::from(2);
        }
    };
    init_logging();
    let mut config = match Config::load(config_path.as_deref(), &ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("monserv: config error: {e}");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    if print_config {
        print!("{}", config.to_masked_toml());
        return ExitCode::SUCCESS;
    }
    if check_config {
        println!("configuration OK ({} targets)", config.targets.len());
        return ExitCode::SUCCESS;
    }
    config.rules.compile_in = monserv::config::CompileIn::for_daemon();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("monserv: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(config));
    // Blocking work still running (a `statvfs` hung on a dead NFS server, say) must
    // not keep a finished daemon from exiting.
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}

async fn run(config: Config) -> ExitCode {
    // Handlers first: a SIGTERM that lands while the daemon starts (clients may already
    // be connected) must shut it down cleanly, not kill it with the default action.
    let signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("monserv: cannot listen for signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    let daemon = match Daemon::start(config).await {
        Ok(d) => d,
        Err(e) if e.is_config() => {
            eprintln!("monserv: config error: {e}");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
        Err(e) => {
            eprintln!("monserv: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    signals.wait().await;
    tracing::info!("shutting down");
    if !daemon.shutdown(Duration::from_secs(4)).await {
        tracing::warn!("some tasks did not stop within 4 s");
    }
    ExitCode::SUCCESS
}

/// SIGTERM (systemd, init) and SIGINT (a terminal) both mean a clean shutdown.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {},
            _ = self.int.recv() => {},
        }
    }
}
