//! One persistent SSH session per target, one exec per poll.
//!
//! The Go MonServ dialled a new connection and ran seven commands per host per poll
//! (~0.9 s, ~95 ms of the target's CPU). Here the session is opened once and reused;
//! each poll opens a channel, execs the script from `script`, and reads its output
//! up to a byte cap. A failed, hostile or timed-out session is dropped and reopened
//! with exponential backoff, never in a tight loop.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::RngExt;
use russh::client::{self, Handle};
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::ChannelMsg;

use super::backoff::Backoff;
use super::known_hosts::{KnownHosts, KnownHostsError, Verdict};
use super::sample::RawSample;
use super::script;
use super::{CollectError, SampleSpec};
use crate::config::{SshAuth, SshTarget};

/// The russh event handler: only host key checking. A rejected key is recorded in
/// `problem` so that the caller reports why the connection failed.
struct HostKeyCheck {
    host: String,
    port: u16,
    known_hosts: Arc<KnownHosts>,
    problem: Arc<Mutex<Option<CollectError>>>,
}

impl client::Handler for HostKeyCheck {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            self.report(CollectError::HostKeyCheck("host certificates are not supported; pin the host key".into()));
            return Ok(false);
        };
        // Reading known_hosts and the TOFU write (with fsyncs) are blocking I/O.
        let (kh, host, port, offered) = (self.known_hosts.clone(), self.host.clone(), self.port, key.clone());
        let verdict = tokio::task::spawn_blocking(move || kh.verify(&host, port, &offered))
            .await
            .unwrap_or_else(|e| Err(KnownHostsError::Task(e.to_string())));
        let problem = match verdict {
            Ok(Verdict::Known) => return Ok(true),
            Ok(Verdict::Learned) => {
                tracing::info!(host = %self.host, port = self.port, fingerprint = %key.fingerprint(Default::default()),
                    known_hosts = %self.known_hosts.path().display(), "trusting host key on first use");
                return Ok(true);
            }
            Ok(Verdict::Unknown) => CollectError::HostKeyUnknown,
            Ok(Verdict::Changed { line }) => {
                tracing::error!(host = %self.host, port = self.port, line, fingerprint = %key.fingerprint(Default::default()),
                    "HOST KEY CHANGED: refusing to connect (possible man-in-the-middle)");
                CollectError::HostKeyChanged { line }
            }
            Err(e) => CollectError::HostKeyCheck(e.to_string()),
        };
        self.report(problem);
        Ok(false)
    }
}

impl HostKeyCheck {
    fn report(&self, e: CollectError) {
        *self.problem.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
    }
}

pub struct SshCollector {
    target: SshTarget,
    key: Option<Arc<PrivateKey>>,
    known_hosts: Arc<KnownHosts>,
    config: Arc<client::Config>,
    session: Option<Handle<HostKeyCheck>>,
    backoff: Backoff,
    last_error: String,
}

impl SshCollector {
    /// Fails only when the identity file cannot be loaded (config validation reports
    /// that earlier with the same words).
    pub fn new(target: SshTarget, known_hosts: Arc<KnownHosts>, backoff: Backoff) -> Result<Self, String> {
        let key = match &target.auth {
            SshAuth::Key(path) => Some(Arc::new(load_key(path)?)),
            SshAuth::Password(_) => None,
        };
        let config = client::Config {
            // The session is meant to live for months; keepalives find a dead peer
            // between polls so the next poll reconnects instead of waiting.
            inactivity_timeout: None,
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_max: 3,
            nodelay: true,
            ..Default::default()
        };
        Ok(SshCollector {
            target,
            key,
            known_hosts,
            config: Arc::new(config),
            session: None,
            backoff,
            last_error: String::new(),
        })
    }

    pub async fn sample(&mut self, spec: &SampleSpec) -> Result<RawSample, CollectError> {
        if self.session.as_ref().is_none_or(|s| s.is_closed()) {
            self.session = None;
            if let Some(wait) = self.backoff.remaining() {
                return Err(CollectError::Backoff {
                    retry_in_ms: wait.as_millis() as u64,
                    last: self.last_error.clone(),
                });
            }
            match self.connect().await {
                Ok(s) => self.session = Some(s),
                Err(e) => return Err(self.fail(e)),
            }
        }
        match self.run_script(spec).await {
            Ok(raw) => {
                self.backoff.succeeded();
                Ok(raw)
            }
            Err(e) => {
                // The session may be half-used or the host hostile: start afresh.
                self.drop_session().await;
                Err(self.fail(e))
            }
        }
    }

    /// The poll loop gave up on the sample in flight: the session is in an unknown
    /// state (a channel may still be streaming), so drop it and back off.
    pub fn timed_out(&mut self) {
        self.session = None;
        self.last_error = "no complete answer before the poll deadline".into();
        self.backoff.failed();
    }

    pub async fn close(&mut self) {
        self.drop_session().await;
    }

    fn fail(&mut self, e: CollectError) -> CollectError {
        self.last_error = e.to_string();
        self.backoff.failed();
        e
    }

    async fn drop_session(&mut self) {
        if let Some(s) = self.session.take() {
            let _ = tokio::time::timeout(
                Duration::from_millis(500),
                s.disconnect(russh::Disconnect::ByApplication, "", "en"),
            )
            .await;
        }
    }

    async fn connect(&self) -> Result<Handle<HostKeyCheck>, CollectError> {
        let problem = Arc::new(Mutex::new(None));
        let handler = HostKeyCheck {
            host: self.target.host.clone(),
            port: self.target.port,
            known_hosts: self.known_hosts.clone(),
            problem: problem.clone(),
        };
        let addr = (self.target.host.as_str(), self.target.port);
        let mut handle = match client::connect(self.config.clone(), addr, handler).await {
            Ok(h) => h,
            Err(e) => {
                let reported = problem.lock().unwrap_or_else(|p| p.into_inner()).take();
                return Err(reported.unwrap_or_else(|| CollectError::Connect(e.to_string())));
            }
        };
        let user = self.target.user.clone();
        let result = match (&self.target.auth, &self.key) {
            (SshAuth::Password(pw), _) => handle.authenticate_password(user.clone(), pw.expose()).await,
            (SshAuth::Key(_), Some(key)) => {
                let hash =
                    handle.best_supported_rsa_hash().await.map_err(|e| CollectError::Ssh(e.to_string()))?.flatten();
                handle.authenticate_publickey(user.clone(), PrivateKeyWithHashAlg::new(key.clone(), hash)).await
            }
            (SshAuth::Key(path), None) => {
                return Err(CollectError::Ssh(format!("identity {} not loaded", path.display())))
            }
        };
        match result {
            Ok(r) if r.success() => Ok(handle),
            Ok(_) => Err(CollectError::Auth { user }),
            Err(e) => Err(CollectError::Ssh(e.to_string())),
        }
    }

    async fn run_script(&mut self, spec: &SampleSpec) -> Result<RawSample, CollectError> {
        let session = self.session.as_ref().ok_or_else(|| CollectError::Ssh("no session".into()))?;
        let nonce = format!("{:016x}", rand::rng().random::<u64>());
        let text = script::poll_script(&nonce, spec.top_n, spec.fs_filter.excluded(), &spec.facts);
        let ssh_err = |e: russh::Error| CollectError::Ssh(e.to_string());
        let mut channel = session.channel_open_session().await.map_err(ssh_err)?;
        channel.exec(true, text).await.map_err(ssh_err)?;
        let mut out = Vec::with_capacity(16 * 1024);
        let mut exit = None;
        let limit = spec.max_output_bytes;
        // stdout and stderr together count against the cap; stderr is otherwise ignored.
        let mut received = 0usize;
        while let Some(msg) = channel.wait().await {
            match msg {
                ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. } if received + data.len() > limit => {
                    return Err(CollectError::OutputTooLarge { limit });
                }
                ChannelMsg::Data { data } => {
                    received += data.len();
                    out.extend_from_slice(&data);
                }
                ChannelMsg::ExtendedData { data, .. } => received += data.len(),
                ChannelMsg::ExitStatus { exit_status } => exit = Some(exit_status),
                ChannelMsg::Close => break,
                _ => {}
            }
        }
        let sections = match script::split_sections(&out, &nonce) {
            Ok(s) => s,
            Err(e) => {
                return Err(match exit {
                    Some(code) if code != 0 => CollectError::Remote(code),
                    _ => CollectError::Parse(e),
                })
            }
        };
        Ok(RawSample::from_sections(&sections, &spec.facts))
    }
}

fn load_key(path: &std::path::Path) -> Result<PrivateKey, String> {
    russh::keys::load_secret_key(path, None).map_err(|e| format!("identity file {}: {e}", path.display()))
}
