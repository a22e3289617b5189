//! Host key verification against an OpenSSH-format known_hosts file.
//!
//! The Go MonServ used `InsecureIgnoreHostKey`; on a plant network that lets anyone
//! who can answer on a host's address collect the monitoring password. Here a key
//! must match the recorded one. With no record for the host, the first key seen is
//! trusted and persisted (TOFU) unless the policy is `strict`, which requires keys to
//! be pinned in advance. A host with a recorded key that presents any other key, of
//! the same algorithm or not, is refused: offering a different algorithm must not be
//! a way around a pin.

use std::path::PathBuf;
use std::sync::Mutex;

use russh::keys::PublicKey;

pub use crate::config::HostKeyPolicy;
use crate::store;

/// Why a host key could not be checked (the host is then offline with this reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KnownHostsError {
    #[error("reading {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("writing {path}: {reason}")]
    Write { path: String, reason: String },
    #[error("encoding host key: {0}")]
    Encode(String),
    #[error("host key check task failed: {0}")]
    Task(String),
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Known,
    /// First use: the key was recorded.
    Learned,
    /// No record and the policy is strict.
    Unknown,
    /// A different key is recorded at this line.
    Changed {
        line: usize,
    },
}

pub struct KnownHosts {
    path: PathBuf,
    policy: HostKeyPolicy,
    /// Serializes read-modify-write of the file between host sessions.
    lock: Mutex<()>,
}

impl KnownHosts {
    pub fn new(path: impl Into<PathBuf>, policy: HostKeyPolicy) -> Self {
        KnownHosts { path: path.into(), policy, lock: Mutex::new(()) }
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Check `key` for `host:port` (and on first use under TOFU, record it). Blocking
    /// file I/O: call off the async workers.
    pub fn verify(&self, host: &str, port: u16, key: &PublicKey) -> Result<Verdict, KnownHostsError> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let path = || self.path.display().to_string();
        let recorded = russh::keys::known_hosts::known_host_keys_path(host, port, &self.path)
            .map_err(|e| KnownHostsError::Read { path: path(), reason: e.to_string() })?;
        if recorded.iter().any(|(_, k)| k.key_data() == key.key_data()) {
            return Ok(Verdict::Known);
        }
        if let Some((line, _)) = recorded.first() {
            return Ok(Verdict::Changed { line: *line });
        }
        if self.policy == HostKeyPolicy::Strict {
            return Ok(Verdict::Unknown);
        }
        let mut contents = match std::fs::read(&self.path) {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(KnownHostsError::Read { path: path(), reason: e.to_string() }),
        };
        if !contents.is_empty() && contents.last() != Some(&b'\n') {
            contents.push(b'\n');
        }
        let host_field = if port == 22 { host.to_string() } else { format!("[{host}]:{port}") };
        let key_text = key.to_openssh().map_err(|e| KnownHostsError::Encode(e.to_string()))?;
        contents.extend_from_slice(format!("{host_field} {key_text}\n").as_bytes());
        store::write_atomic(&self.path, &contents)
            .map_err(|e| KnownHostsError::Write { path: path(), reason: e.to_string() })?;
        Ok(Verdict::Learned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> PublicKey {
        let private =
            russh::keys::PrivateKey::from(russh::keys::ssh_key::private::Ed25519Keypair::from_seed(&[seed; 32]));
        private.public_key().clone()
    }

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("monserv-kh-{name}-{}", std::process::id()))
    }

    #[test]
    fn tofu_learns_then_pins() {
        let path = temp_path("tofu");
        let _ = std::fs::remove_file(&path);
        let kh = KnownHosts::new(&path, HostKeyPolicy::Tofu);
        assert_eq!(kh.verify("10.0.0.5", 2222, &key(1)), Ok(Verdict::Learned));
        assert_eq!(kh.verify("10.0.0.5", 2222, &key(1)), Ok(Verdict::Known));
        assert_eq!(kh.verify("10.0.0.5", 2222, &key(2)), Ok(Verdict::Changed { line: 1 }));
        // Other host, other port: separate entries.
        assert_eq!(kh.verify("10.0.0.5", 22, &key(2)), Ok(Verdict::Learned));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("[10.0.0.5]:2222 ssh-ed25519 "));
        assert!(text.contains("\n10.0.0.5 ssh-ed25519 "));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn strict_refuses_unknown() {
        let path = temp_path("strict");
        let _ = std::fs::remove_file(&path);
        let kh = KnownHosts::new(&path, HostKeyPolicy::Strict);
        assert_eq!(kh.verify("h", 22, &key(3)), Ok(Verdict::Unknown));
        assert!(!path.exists());
    }
}
