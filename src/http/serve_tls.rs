//! `https://` and `wss://`: the current certificate, re-read when its files change.
//!
//! Certificates are renewed in place (certbot, a plant PKI, a systemd credential
//! refreshed on restart): every 2 s the files' size, mtime and inode are compared,
//! and a change builds a new server configuration that the next handshake uses.
//! Connected clients keep their session. A bad new file (half written, a key that
//! does not match) is logged and the old certificate stays.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::ServeTls;
use crate::tls::{server_config, ServePem, TlsError};

type Stamp = Vec<Option<(i64, i64, u64, u64)>>;

pub struct ServingTls {
    files: ServeTls,
    current: RwLock<(TlsAcceptor, Stamp)>,
}

const CHECK_EVERY: Duration = Duration::from_secs(2);

fn stamp(files: &ServeTls) -> Stamp {
    let paths = [Some(&files.cert_file), Some(&files.key_file), files.client_ca_file.as_ref()];
    paths
        .into_iter()
        .flatten()
        .map(|p| std::fs::metadata(p).ok().map(|m| (m.mtime(), m.mtime_nsec(), m.len(), m.ino())))
        .collect()
}

/// PEM files are small; a FIFO or device put where one belongs must neither hang the
/// start nor the reload task.
const PEM_LIMIT: usize = 1 << 20;

fn read(what: &str, path: &Path) -> Result<Vec<u8>, String> {
    crate::store::read_regular(path, PEM_LIMIT).map_err(|e| format!("{what} {}: {e}", path.display()))
}

/// Build the acceptor from the files; errors name the file and what is wrong.
fn build(files: &ServeTls) -> Result<TlsAcceptor, String> {
    let cert = read("tls certificate file", &files.cert_file)?;
    let key = read("tls key file", &files.key_file)?;
    let ca = match &files.client_ca_file {
        Some(p) => Some(read("tls client CA file", p)?),
        None => None,
    };
    let pem = ServePem { cert: &cert, key: &key, client_ca: ca.as_deref() };
    let config = server_config(&pem).map_err(|e| match e {
        TlsError::ServeFile { what, reason, .. } => {
            let path = match what {
                "certificate file" => &files.cert_file,
                "key file" => &files.key_file,
                _ => files.client_ca_file.as_ref().unwrap_or(&files.cert_file),
            };
            format!("tls {what} {}: {reason}", path.display())
        }
        other => format!("tls: {other}"),
    })?;
    Ok(TlsAcceptor::from(config))
}

impl ServingTls {
    pub fn load(files: &ServeTls) -> Result<Arc<ServingTls>, String> {
        let before = stamp(files);
        let acceptor = build(files)?;
        if std::fs::metadata(&files.key_file).is_ok_and(|m| m.mode() & 0o004 != 0) {
            tracing::warn!(key_file = %files.key_file.display(), "the TLS key file is readable by every local user");
        }
        Ok(Arc::new(ServingTls { files: files.clone(), current: RwLock::new((acceptor, before)) }))
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        self.current.read().unwrap_or_else(PoisonError::into_inner).0.clone()
    }

    /// Re-read the files when they changed. Some(result) when they did.
    pub fn reload_if_changed(&self) -> Option<Result<(), String>> {
        let now = stamp(&self.files);
        if self.current.read().unwrap_or_else(PoisonError::into_inner).1 == now {
            return None;
        }
        let result = build(&self.files);
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        // Remember the stamp either way: a bad file is reported once, not every 2 s.
        current.1 = now;
        Some(result.map(|acceptor| current.0 = acceptor))
    }

    /// Check the files until shutdown.
    pub async fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.reload_if_changed() {
                Some(Ok(())) => tracing::info!(cert_file = %self.files.cert_file.display(), "TLS certificate reloaded"),
                Some(Err(e)) => tracing::error!("TLS certificate not reloaded, the previous one stays: {e}"),
                None => {}
            }
        }
    }
}
