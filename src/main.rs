//! The `monserv` binary: arguments, logging, signals and exit codes.
//!
//! Exit status: 0 after a clean shutdown (SIGTERM/SIGINT), 78 (EX_CONFIG) for any
//! configuration problem including a port already in use, 1 for anything else (such
//! as a wasm engine or thread that cannot start), which the service manager restarts.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use monserv::config::{Config, ProcessEnv, EXIT_CONFIG};
use monserv::Daemon;

#[derive(Parser)]
#[command(version, about = "Agentless SSH monitoring appliance speaking the MonServ WebSocket protocol")]
struct Args {
    /// TOML configuration file (on the appliance /etc/monserv/monserv.toml).
    #[arg(long, short, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Print the effective configuration (secrets masked) and exit.
    #[arg(long)]
    print_config: bool,
    /// Validate the configuration and exit.
    #[arg(long)]
    check_config: bool,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// Work with alert rules (WebAssembly components).
    #[command(subcommand)]
    Rule(RuleCmd),
}

#[derive(clap::Subcommand)]
enum RuleCmd {
    /// Check that a component implements the rule contract and print its description.
    Check { rule: PathBuf },
    /// Run a rule once on a snapshot (a captured /api/state) and print its events.
    Test {
        rule: PathBuf,
        /// JSON snapshot: GET /api/state output, or a metrics_update message.
        #[arg(long)]
        snapshot: PathBuf,
        /// Keys the host would report as firing (comma-separated).
        #[arg(long, value_delimiter = ',')]
        active: Vec<String>,
        /// Rule config values, `key=value` (repeatable).
        #[arg(long = "set", value_parser = parse_setting)]
        settings: Vec<(String, String)>,
    },
}

fn parse_setting(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or_else(|| format!("{s:?} is not key=value"))
}

fn rule_command(cmd: RuleCmd) -> ExitCode {
    let result = match cmd {
        RuleCmd::Check { rule } => monserv::rules::cli::check(&rule),
        RuleCmd::Test { rule, snapshot, active, settings } => {
            monserv::rules::cli::test(&rule, &snapshot, &active, &settings)
        }
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
    let args = Args::parse();
    init_logging();

    if let Some(Cmd::Rule(cmd)) = args.command {
        return rule_command(cmd);
    }
    let mut config = match Config::load(args.config.as_deref(), &ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("monserv: config error: {e}");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    if args.print_config {
        print!("{}", config.to_masked_toml());
        return ExitCode::SUCCESS;
    }
    if args.check_config {
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
