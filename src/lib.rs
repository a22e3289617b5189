//! monserv: an agentless monitoring appliance for industrial networks.
//!
//! Data flows one way: targets from [`config`] -> [`collect`] (one persistent SSH
//! session per host, a Go MonServ agent, or the gateway's own /proc) -> [`poll`] (one
//! snapshot per round, each host under a deadline) -> [`rules`] (sandboxed Wasm alert
//! rules, then alert once, recover once, committed to [`store`]) -> [`hub`] (serialized
//! once) -> [`http`] (`/ws` clients, REST, the web page) and [`notify`] (email, Slack,
//! Telegram, Kafka, webhook, Alertmanager, from the store's outbox). [`model`] holds the
//! wire types, [`store`] what must survive a restart, [`tls`] the one TLS setup (out
//! to notifiers, in for `https://` and `wss://`).
//!
//! Layout:
//! - `config`: TOML + Go MonServ environment variables, validated up front.
//! - `collect/`: `local`, `ssh` (+ `known_hosts`, `backoff`, `script`), `agent`, and the
//!   pure parsers `parse`, `agent_json` and `sample`.
//! - `poll`: the round loop. `rules/`: `validate`, `sandbox`, `convert`, `output`,
//!   `alert` (firing state), `engine`, `runner`, `loader`. `store/`: `alerts` (active,
//!   history, outbox), `silence`, `token`. `hub`: fan-out. `notify/`: the delivery loop
//!   and one module per kind of sink. `http/`: `ws`, `api`, `alerts_api`,
//!   `silences_api`, `rules_api`, `openapi`, `page`, and the perimeter: `origin`,
//!   `limits`, `conn_io`, `serve_tls`.
//! - [`Daemon`]: wires it together; `main.rs` adds arguments (`args`), signals and exit codes.

// One reviewed exception: loading our own compiler child's artifact
// (`rules::compiler::load_artifact`).
#![deny(unsafe_code)]

pub mod collect;
pub mod config;
pub mod embedded;
pub mod export;
pub mod facts;
pub mod history;
pub mod http;
pub mod hub;
pub mod model;
pub mod notify;
pub mod poll;
pub mod rules;
pub mod snappy;
pub mod store;
pub mod systemd;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use collect::backoff::Backoff;
use collect::known_hosts::KnownHosts;
use collect::local::LocalCollector;
use collect::ssh::SshCollector;
use collect::{Collector, FsFilter, SampleSpec};
use config::{Config, TargetKind};

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("listen address {addr} unavailable: {reason}")]
    Bind { addr: SocketAddr, reason: String },
    #[error("{0}")]
    Target(String),
    /// Not the configuration's fault (no threads, no executable memory, ...): the
    /// service manager should restart, not wait for a config change.
    #[error("rule engine: {0}")]
    Internal(String),
}

impl StartError {
    /// A problem with the configuration (exit 78, no restart loop), or not.
    pub fn is_config(&self) -> bool {
        !matches!(self, StartError::Internal(_))
    }
}

/// What the HTTP server needs from the configuration and the machine before it runs.
struct Perimeter {
    tls: Option<Arc<http::serve_tls::ServingTls>>,
    limits: http::Limits,
    auth_token: Option<config::Secret>,
}

impl Perimeter {
    /// Load the certificate, fit `max_clients` to the descriptor limit, find or make
    /// the token.
    async fn prepare(config: &Config) -> Result<Perimeter, StartError> {
        let perimeter = &config.perimeter;
        let tls = match &perimeter.tls {
            None => None,
            Some(files) => Some(http::serve_tls::ServingTls::load(files).map_err(StartError::Target)?),
        };
        // Descriptors kept for everything but clients: what is open now (runtime,
        // listener), the store, the rules watcher, sockets to hosts and sinks, the
        // compiler child's pipes, /proc and rule files being read, TLS refusals.
        let reserve = http::limits::open_descriptors()
            + 96
            + 2 * config.targets.len() as u64
            + 2 * config.notify.sink_names().len() as u64;
        let max_clients = http::limits::fit_to_descriptors(config.max_clients, reserve).map_err(StartError::Target)?;
        let limits = http::Limits { max_clients, per_ip: perimeter.max_clients_per_ip.min(max_clients) };
        let auth_token = match (&config.auth_token, perimeter.generate_auth_token) {
            (Some(token), _) => Some(token.clone()),
            (None, false) => None,
            (None, true) => {
                let dir = config.state_dir.clone();
                let (token, path, created) = tokio::task::spawn_blocking(move || store::token::load_or_create(&dir))
                    .await
                    .map_err(|e| StartError::Internal(e.to_string()))?
                    .map_err(|e| StartError::Target(format!("generate_auth_token: {e}")))?;
                if created {
                    tracing::warn!(path = %path.display(), "no auth_token configured: generated one (mode 0600); clients need it as ?token= or Authorization: Bearer");
                } else {
                    tracing::info!(path = %path.display(), "using the generated auth token");
                }
                Some(token)
            }
        };
        Ok(Perimeter { tls, limits, auth_token })
    }
}

/// A collector for every configured target.
fn polled_targets(config: &Config) -> Result<Vec<poll::PolledTarget>, StartError> {
    let known_hosts = Arc::new(KnownHosts::new(&config.known_hosts, config.host_key_policy));
    let mut targets = Vec::with_capacity(config.targets.len());
    for t in &config.targets {
        let (collector, fallback) = match &t.kind {
            TargetKind::Local => (Collector::Local(LocalCollector::default()), "local".to_string()),
            TargetKind::Ssh(ssh) => {
                let backoff = Backoff::new(Duration::from_secs(1), config.reconnect_max);
                let c = SshCollector::new(ssh.clone(), known_hosts.clone(), backoff)
                    .map_err(|e| StartError::Target(format!("target {:?}: {e}", t.key)))?;
                (Collector::Ssh(Box::new(c)), ssh.host.clone())
            }
            TargetKind::Agent(url) => {
                let backoff = Backoff::new(Duration::from_secs(1), config.reconnect_max);
                (Collector::Agent(collect::agent::AgentCollector::new(url.clone(), backoff)), url.host.clone())
            }
        };
        targets.push(poll::PolledTarget::new(t.key.clone(), fallback, collector));
    }
    Ok(targets)
}

/// What every collector is asked for.
fn sample_spec(config: &Config) -> SampleSpec {
    SampleSpec {
        top_n: config.top_processes,
        fs_filter: FsFilter::new(&config.include_fstypes),
        max_output_bytes: config.max_output_bytes,
        facts: Arc::from([]),
    }
}

/// `monserv rule snapshot`: poll the configured targets twice (CPU use is a
/// difference between two samples), one second apart, without a daemon; the result
/// is the `metrics_update` data, which `rule test --snapshot` reads.
pub async fn snapshot_once(config: &Config) -> Result<Vec<u8>, String> {
    let targets = polled_targets(config).map_err(|e| e.to_string())?;
    let spec = sample_spec(config);
    let mut poller = poll::Poller::new(targets, spec, config.poll_interval, config.host_timeout, Box::new(|_| {}));
    poller.round().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let snapshot = poller.round().await;
    for t in &mut poller.targets {
        t.collector.close().await;
    }
    Ok(snapshot.data_json())
}

/// How long the first load of the rules waits for the first round to be published.
const FIRST_ROUND_HEAD_START: Duration = Duration::from_secs(1);

/// A running monserv: the poll loop and the HTTP server, owned by one tracker.
pub struct Daemon {
    addr: SocketAddr,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    hub: Arc<hub::Hub>,
    rules: Arc<rules::RuleEngine>,
    notifier: Option<Arc<systemd::Notifier>>,
}

impl Daemon {
    /// Bind the listener and start polling. Returns once the port is bound.
    pub async fn start(config: Config) -> Result<Daemon, StartError> {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| StartError::Bind { addr: config.listen, reason: e.to_string() })?;
        let addr =
            listener.local_addr().map_err(|e| StartError::Bind { addr: config.listen, reason: e.to_string() })?;

        // The perimeter first: a bad certificate or state directory fails the start
        // before any task runs.
        let Perimeter { tls, limits, auth_token } = Perimeter::prepare(&config).await?;
        let targets = polled_targets(&config)?;
        let spec = sample_spec(&config);

        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let hub = Arc::new(hub::Hub::new());
        let sandbox = rules::sandbox::Sandbox::with_compiler(config.rules.limits, config.rules.compile_in.clone())
            .map_err(StartError::Internal)?;
        // Alert state survives restarts; without a usable state directory monserv
        // still monitors and alerts, it only forgets on restart (and says so).
        let store_path = config.state_dir.join("alerts.redb");
        let sinks = notify::sinks(&config.notify).map_err(StartError::Target)?;
        let names = config.notify.sink_names();
        let store = tokio::task::spawn_blocking(move || store::alerts::AlertStore::open_with_sinks(&store_path, names))
            .await
            .map_err(|e| StartError::Internal(e.to_string()))?
            .inspect_err(
                |e| tracing::error!(error = %e, "alert state will not survive a restart, nor queued notifications"),
            )
            .ok()
            .map(Arc::new);
        // The recent past of every target: rules query it, the API serves it.
        let history = Arc::new(history::History::new(history::Sizing {
            window: config.history_window,
            interval: config.poll_interval,
        }));
        let engine = Arc::new(rules::RuleEngine::with_store(sandbox, store.clone()).with_history(history.clone()));
        let notifier = match (&store, sinks.is_empty()) {
            (Some(store), false) => {
                Some(notify::Notifier::start(sinks, store.clone(), engine.commits(), &tracker, shutdown.clone()))
            }
            (None, false) => {
                tracing::error!("notifiers are configured but the alert store is unusable: nothing will be delivered");
                None
            }
            _ => None,
        };
        let t = &config.thresholds;
        let threshold_base = [
            ("memory_percent", t.memory_percent),
            ("disk_percent", t.disk_percent),
            ("cpu_percent", t.cpu_percent),
            ("proc_ram_percent", t.proc_ram_percent),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let rules_dir =
            rules::loader::RulesDir { dir: config.rules.dir.clone(), builtin: config.rules.builtin, threshold_base };
        let mut loader = rules::loader::Loader::new(engine.clone(), rules_dir.clone());
        // Watch, then load beside the poller and the server: compiling the rules
        // takes seconds on a small or emulated CPU, and the first metrics must not
        // wait for it (boot to first data is a budget). The runner holds rounds until
        // this first load is done, then evaluates the newest; the API says `loading`.
        // Metrics go out first; the rules get the round on their own task, so a slow
        // rule never delays a metrics_update or the next round.
        let (rounds, rounds_rx) = rules::runner::channel();
        loader.watch();
        engine.first_load_started();
        let first = engine.clone();
        let stop = shutdown.clone();
        let mut first_round = rounds_rx.clone();
        tracker.spawn(async move {
            // The first round gets a head start (on a one-core box the two compete).
            let head_start = tokio::time::timeout(FIRST_ROUND_HEAD_START, first_round.wait_for(|r| r.is_some()));
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = head_start => {}
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = loader.sync() => {}
            }
            first.forget_unloaded().await;
            first.first_load_finished();
            tracing::info!(rules = first.status().len(), "rules loaded");
            loader.run(stop).await
        });
        let publish_hub = hub.clone();
        // remote_write receivers get every round (queued on flash while away).
        let exporter =
            export::remote_write::Exporter::start(&config.export, &config.state_dir, &tracker, shutdown.clone())
                .map_err(StartError::Target)?
                .map(Arc::new);
        // A Sparkplug B edge node on the plant's broker, each host a device.
        let edge = match &config.export.sparkplug {
            Some(sp) => Some(Arc::new(
                export::edge::Edge::start(sp, &config.state_dir, &tracker, shutdown.clone())
                    .map_err(StartError::Target)?,
            )),
            None => None,
        };
        let publish_export = exporter.clone();
        let publish_edge = edge.clone();
        let publish: poll::Publish = Box::new(move |snapshot| {
            publish_hub.publish_metrics(snapshot.clone());
            history.record(&snapshot);
            if let Some(e) = &publish_export {
                e.publish(&snapshot);
            }
            if let Some(e) = &publish_edge {
                e.publish_round(&snapshot);
            }
            rounds.send_replace(Some(snapshot));
        });
        let alerts_hub = hub.clone();
        let publish_alerts = move |alerts: Vec<model::AlertMessage>| {
            for alert in &alerts {
                alerts_hub.publish_alert(alert);
                if let Some(e) = &edge {
                    e.publish_alert(&serde_json::to_string(alert).unwrap_or_default());
                }
            }
        };
        tracker.spawn(rules::runner::run(engine.clone(), rounds_rx, publish_alerts, shutdown.clone()));
        let mut poller = poll::Poller::new(targets, spec, config.poll_interval, config.host_timeout, publish);
        poller.wanted = Some(engine.wanted());
        let heartbeat = poller.heartbeat.clone();
        tracker.spawn(poller.run(shutdown.clone()));
        if let Some(tls) = &tls {
            tracker.spawn(tls.clone().watch(shutdown.clone()));
        }
        let state = Arc::new(http::AppState {
            gate: http::origin::Gate::new(&config.perimeter),
            throttle: http::limits::AuthThrottle::new(config.perimeter.http.auth_failures_per_minute),
            http: config.perimeter.http,
            tls,
            hub: hub.clone(),
            auth_token,
            shutdown: shutdown.clone(),
            tracker: tracker.clone(),
            started: std::time::Instant::now(),
            poll_interval: config.poll_interval,
            ws: config.websocket,
            rules: http::rules_api::RulesApi { engine: engine.clone(), dir: rules_dir },
            notifier,
            exporter,
        });
        tracker.spawn(http::serve(listener, state, limits));
        let notifier = systemd::Notifier::from_env().map(Arc::new);
        if let Some(n) = &notifier {
            n.notify(&format!("READY=1\nSTATUS=serving {} targets on {addr}", config.targets.len()));
            if let Some(period) = systemd::watchdog_period() {
                // A round takes at most the interval plus the host deadline (rules run
                // on their own task); three rounds' worth of silence means it is stuck.
                let stale_after = (config.poll_interval + config.host_timeout) * 3 + Duration::from_secs(5);
                tracker.spawn(systemd::watchdog(n.clone(), period, heartbeat, stale_after, shutdown.clone()));
            }
        }
        tracker.close();
        let scheme = if config.perimeter.tls.is_some() { "https" } else { "http" };
        tracing::info!(%addr, scheme, targets = config.targets.len(), interval = ?config.poll_interval, "monserv listening");
        Ok(Daemon { addr, shutdown, tracker, hub, rules: engine, notifier })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn hub(&self) -> &Arc<hub::Hub> {
        &self.hub
    }

    pub fn rules(&self) -> &Arc<rules::RuleEngine> {
        &self.rules
    }

    /// Stop polling, close every client with a close frame, wait up to `grace`.
    /// Returns false when some task did not finish in time.
    pub async fn shutdown(self, grace: Duration) -> bool {
        if let Some(n) = &self.notifier {
            n.notify("STOPPING=1");
        }
        self.shutdown.cancel();
        tokio::time::timeout(grace, self.tracker.wait()).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_configuration_problems_are_config_errors() {
        // 78 stops systemd's restarts until the config changes; an engine that could
        // not start (no threads, no executable memory) must be restarted instead.
        let addr = SocketAddr::from(([127, 0, 0, 1], 1));
        assert!(StartError::Bind { addr, reason: "in use".into() }.is_config());
        assert!(StartError::Target("bad key".into()).is_config());
        assert!(!StartError::Internal("cannot start the wasm engine".into()).is_config());
    }
}
