//! systemd integration without libsystemd: `sd_notify` is one datagram to the socket
//! named by `NOTIFY_SOCKET`.
//!
//! - `READY=1` once the listener is bound and the configuration was valid
//!   (`Type=notify`), so dependants start when monserv really serves.
//! - `WATCHDOG=1` every `WATCHDOG_USEC / 2`, but only while the poll loop makes
//!   progress: the loop stamps a heartbeat each round, and a loop stuck for longer
//!   than the watchdog period stops the pings, so systemd restarts the process.
//! - `STOPPING=1` on shutdown.
//!
//! With no `NOTIFY_SOCKET` (not under systemd) all of this does nothing.

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// A handle to systemd's notification socket.
pub struct Notifier {
    socket: UnixDatagram,
    addr: NotifyAddr,
}

enum NotifyAddr {
    Path(std::path::PathBuf),
    Abstract(Vec<u8>),
}

impl Notifier {
    /// From `NOTIFY_SOCKET`, if set and usable.
    pub fn from_env() -> Option<Notifier> {
        let raw = std::env::var_os("NOTIFY_SOCKET")?;
        let raw = raw.to_string_lossy().into_owned();
        let addr = match raw.strip_prefix('@') {
            Some(name) => NotifyAddr::Abstract(name.as_bytes().to_vec()),
            None => NotifyAddr::Path(raw.into()),
        };
        match UnixDatagram::unbound() {
            Ok(socket) => Some(Notifier { socket, addr }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot open a socket for systemd notifications");
                None
            }
        }
    }

    pub fn notify(&self, state: &str) {
        let sent = match &self.addr {
            NotifyAddr::Path(p) => self.socket.send_to(state.as_bytes(), p),
            NotifyAddr::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name)
                    .and_then(|a| self.socket.send_to_addr(state.as_bytes(), &a))
            }
        };
        if let Err(e) = sent {
            tracing::warn!(error = %e, state, "systemd notification failed");
        }
    }
}

/// The watchdog period systemd asked for (`WATCHDOG_USEC`), if any and meant for us.
pub fn watchdog_period() -> Option<Duration> {
    if let Some(pid) = std::env::var("WATCHDOG_PID").ok().and_then(|p| p.parse::<u32>().ok()) {
        if pid != std::process::id() {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Stamped by the poll loop once per round; read by the watchdog task.
#[derive(Debug)]
pub struct Heartbeat {
    start: Instant,
    last_millis: AtomicU64,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat { start: Instant::now(), last_millis: AtomicU64::new(0) }
    }
}

impl Heartbeat {
    pub fn beat(&self) {
        self.last_millis.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    pub fn age(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_millis.load(Ordering::Relaxed)))
    }
}

/// Ping the watchdog every `period / 2` while the poll loop's heartbeat is younger
/// than `stale_after`.
pub async fn watchdog(
    notifier: Arc<Notifier>,
    period: Duration,
    heartbeat: Arc<Heartbeat>,
    stale_after: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(period / 2);
    let mut warned = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let age = heartbeat.age();
        if age <= stale_after {
            notifier.notify("WATCHDOG=1");
            warned = false;
        } else if !warned {
            tracing::error!(?age, "poll loop stalled; withholding watchdog pings so systemd restarts monserv");
            warned = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pings_only_while_the_heartbeat_is_fresh() {
        let dir = std::env::temp_dir().join(format!("monserv-notify-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let listener = UnixDatagram::bind(&dir).unwrap();
        listener.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let notifier =
            Arc::new(Notifier { socket: UnixDatagram::unbound().unwrap(), addr: NotifyAddr::Path(dir.clone()) });
        let heartbeat = Arc::new(Heartbeat::default());
        heartbeat.beat();
        let stop = CancellationToken::new();
        let task = tokio::spawn(watchdog(
            notifier,
            Duration::from_millis(100),
            heartbeat.clone(),
            Duration::from_millis(250),
            stop.clone(),
        ));
        let mut buf = [0u8; 64];
        let n = tokio::task::spawn_blocking({
            let l = listener.try_clone().unwrap();
            move || {
                let mut b = [0u8; 64];
                let n = l.recv(&mut b).unwrap();
                b[..n].to_vec()
            }
        })
        .await
        .unwrap();
        assert_eq!(n, b"WATCHDOG=1");
        // No beat for longer than `stale_after`: the pings stop.
        tokio::time::sleep(Duration::from_millis(400)).await;
        while listener.recv(&mut buf).is_ok() {}
        let silent = tokio::task::spawn_blocking(move || {
            let mut b = [0u8; 64];
            listener.recv(&mut b).is_err()
        })
        .await
        .unwrap();
        assert!(silent, "a stale heartbeat must stop the pings");
        stop.cancel();
        task.await.unwrap();
        std::fs::remove_file(&dir).unwrap();
    }
}
