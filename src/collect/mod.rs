//! Collectors: fetch the raw bytes of one target per poll.
//!
//! `local` reads the gateway's own /proc and `statvfs`; `ssh` runs one script over a
//! persistent SSH session. Both yield a [`sample::RawSample`]; `parse` and `sample`
//! alone know the formats. A collector is owned by the poll loop and driven once per
//! round; it never spawns work of its own besides the SSH session's I/O task.

pub mod agent;
pub mod agent_json;
pub mod backoff;
pub mod facts;
pub mod known_hosts;
pub mod local;
pub mod parse;
pub mod sample;
pub mod script;
pub mod ssh;

use std::time::Duration;

use futures_util::future::BoxFuture;

pub use sample::{FsFilter, RawSample};

/// What every collector needs to know to take a sample.
#[derive(Debug, Clone)]
pub struct SampleSpec {
    pub top_n: usize,
    pub fs_filter: FsFilter,
    /// Most bytes a target may send per poll; more is an error for that target.
    pub max_output_bytes: usize,
    /// Facts the loaded rules declared (usually none); refreshed every round.
    pub facts: std::sync::Arc<[crate::facts::Fact]>,
}

/// Why a target produced no sample this round. Messages never contain secrets.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CollectError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("host key changed (known_hosts line {line}); refusing to connect until the old entry is removed")]
    HostKeyChanged { line: usize },
    #[error("host key not in known_hosts and host_key_policy is \"strict\"")]
    HostKeyUnknown,
    #[error("host key check failed: {0}")]
    HostKeyCheck(String),
    #[error("authentication as {user:?} failed")]
    Auth { user: String },
    #[error("ssh: {0}")]
    Ssh(String),
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
    #[error("output exceeded {limit} bytes; closed the session")]
    OutputTooLarge { limit: usize },
    #[error("unusable output: {0}")]
    Parse(#[from] parse::ParseError),
    #[error("remote script exited with status {0}")]
    Remote(u32),
    #[error("agent answered HTTP {0}")]
    Http(u16),
    #[error("reading local /proc: {0}")]
    Local(String),
    #[error("next reconnect in {retry_in_ms} ms (last error: {last})")]
    Backoff { retry_in_ms: u64, last: String },
}

impl CollectError {
    /// A short stable name for the error kind (REST, logs, and later the rules).
    pub fn kind(&self) -> &'static str {
        match self {
            CollectError::Connect(_) => "connect",
            CollectError::HostKeyChanged { .. } => "host_key_changed",
            CollectError::HostKeyUnknown => "host_key_unknown",
            CollectError::HostKeyCheck(_) => "host_key_check",
            CollectError::Auth { .. } => "auth",
            CollectError::Ssh(_) => "ssh",
            CollectError::Timeout(_) => "timeout",
            CollectError::OutputTooLarge { .. } => "output_too_large",
            CollectError::Parse(_) => "parse",
            CollectError::Remote(_) => "remote",
            CollectError::Http(_) => "http",
            CollectError::Local(_) => "local",
            CollectError::Backoff { .. } => "backoff",
        }
    }
}

/// Any other source of samples: for tests of the poll loop under paused time, and
/// benchmarks, without hosts.
pub trait Collect: Send {
    fn sample<'a>(&'a mut self, spec: &'a SampleSpec) -> BoxFuture<'a, Result<RawSample, CollectError>>;
}

/// One target's collector.
pub enum Collector {
    Local(local::LocalCollector),
    Ssh(Box<ssh::SshCollector>),
    /// A Go MonServ agent over HTTP.
    Agent(agent::AgentCollector),
    Other(Box<dyn Collect>),
}

impl Collector {
    pub async fn sample(&mut self, spec: &SampleSpec) -> Result<RawSample, CollectError> {
        match self {
            Collector::Local(c) => c.sample(spec).await,
            Collector::Ssh(c) => c.sample(spec).await,
            Collector::Agent(c) => c.sample(spec).await,
            Collector::Other(c) => c.sample(spec).await,
        }
    }

    /// Tell the collector its last sample was abandoned at the deadline.
    pub fn timed_out(&mut self) {
        match self {
            Collector::Ssh(c) => c.timed_out(),
            Collector::Agent(c) => c.timed_out(),
            _ => {}
        }
    }

    /// Close any session politely (shutdown).
    pub async fn close(&mut self) {
        if let Collector::Ssh(c) = self {
            c.close().await;
        }
    }
}
