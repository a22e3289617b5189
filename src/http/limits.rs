//! What a connection holds while it is open, and what slows a token guesser.
//!
//! Every connection, WebSockets included for their whole life, holds a [`Conn`]: one
//! of `max_clients` permits and one of its address's `max_clients_per_ip` places.
//! Addresses are counted as a client sees them from one machine: an IPv4 address, or
//! an IPv6 /64 (one host usually owns a whole /64, so counting /128s would let it
//! take every slot). Wrong tokens are counted per address the same way; past
//! `auth_failures_per_minute` the address gets 429 until its minute is over, whatever
//! it sends, while other addresses are not affected.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;

/// The address a limit is counted against.
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Open connections per address.
pub struct PerIp {
    counts: Mutex<HashMap<IpAddr, usize>>,
    max: usize,
}

impl PerIp {
    pub fn new(max: usize) -> Arc<PerIp> {
        Arc::new(PerIp { counts: Mutex::new(HashMap::new()), max })
    }

    /// A place for one more connection from `ip`, or None when it has `max`.
    pub fn try_take(self: &Arc<Self>, ip: IpAddr) -> Option<IpPlace> {
        let key = ip_key(ip);
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let n = counts.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(IpPlace { table: self.clone(), key })
    }

    pub fn open_from(&self, ip: IpAddr) -> usize {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner).get(&ip_key(ip)).copied().unwrap_or(0)
    }
}

/// One connection's place under `max_clients_per_ip`; given back on drop.
pub struct IpPlace {
    table: Arc<PerIp>,
    key: IpAddr,
}

impl Drop for IpPlace {
    fn drop(&mut self) {
        let mut counts = self.table.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// A connection: its limits' places and who is on the other end.
pub struct Conn {
    _permit: OwnedSemaphorePermit,
    _place: IpPlace,
    pub peer: SocketAddr,
    /// The common name of a verified client certificate (mTLS).
    pub client_cert: Option<String>,
}

impl Conn {
    pub fn new(permit: OwnedSemaphorePermit, place: IpPlace, peer: SocketAddr, client_cert: Option<String>) -> Self {
        Conn { _permit: permit, _place: place, peer, client_cert }
    }

    /// Who acts, for audit lines: the client certificate's name, else how the request
    /// was let in.
    pub fn who(&self, token_configured: bool) -> String {
        match (&self.client_cert, token_configured) {
            (Some(cn), _) => format!("client-cert:{cn}"),
            (None, true) => "token".into(),
            (None, false) => "anonymous".into(),
        }
    }
}

/// Held by the connection and, after an upgrade, by its WebSocket.
pub type Slot = Arc<Conn>;

/// Addresses with recent wrong tokens. Bounded: past `MAX_TRACKED` addresses, new
/// ones share one bucket, so a spread-out guesser is slowed as a whole.
pub struct AuthThrottle {
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    per_minute: u32,
}

const WINDOW: Duration = Duration::from_secs(60);
const MAX_TRACKED: usize = 4096;

impl AuthThrottle {
    pub fn new(per_minute: u32) -> Self {
        AuthThrottle { windows: Mutex::new(HashMap::new()), per_minute }
    }

    /// Seconds until `ip` may try again, when it is over its limit.
    pub fn blocked(&self, ip: IpAddr) -> Option<u64> {
        let windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let key = ip_key(ip);
        let (start, n) = windows.get(&key).or_else(|| windows.get(&OVERFLOW))?;
        let left = WINDOW.checked_sub(start.elapsed())?;
        (*n >= self.per_minute).then(|| left.as_secs().max(1))
    }

    /// Count a wrong token from `ip`.
    pub fn failed(&self, ip: IpAddr) {
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let mut key = ip_key(ip);
        if !windows.contains_key(&key) && windows.len() >= MAX_TRACKED {
            windows.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
            if windows.len() >= MAX_TRACKED {
                key = OVERFLOW;
            }
        }
        let entry = windows.entry(key).or_insert((now, 0));
        if now.duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

/// Raise the soft `RLIMIT_NOFILE` to the hard limit, then fit `max_clients` under it
/// with `reserve` descriptors kept for everything that is not a client (hosts, rules,
/// the state directory, notifiers, the runtime). Returns the `max_clients` to use.
pub fn fit_to_descriptors(max_clients: usize, reserve: u64) -> Result<usize, String> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| format!("cannot read RLIMIT_NOFILE: {e}"))?;
    // The kernel refuses a limit over fs.nr_open, which an unlimited hard limit is.
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open").ok().and_then(|s| s.trim().parse::<u64>().ok());
    let target = nr_open.map_or(hard, |n| hard.min(n));
    let limit = if soft < target {
        match setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
            Ok(()) => target,
            Err(e) => {
                tracing::warn!(soft, hard, error = %e, "cannot raise the file descriptor limit");
                soft
            }
        }
    } else {
        soft
    };
    let room = limit.saturating_sub(reserve);
    if room == 0 {
        return Err(format!(
            "only {limit} file descriptors (RLIMIT_NOFILE) and monserv keeps {reserve} for its hosts, rules and \
             state: none are left for clients (raise LimitNOFILE= or ulimit -n)"
        ));
    }
    if max_clients as u64 > room {
        tracing::warn!(
            max_clients,
            lowered_to = room,
            rlimit_nofile = limit,
            reserved = reserve,
            "max_clients lowered to fit the file descriptor limit"
        );
        return Ok(room as usize);
    }
    Ok(max_clients)
}

/// Descriptors open now (`/proc/self/fd`).
pub fn open_descriptors() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

const OVERFLOW: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        assert_eq!(ip_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(ip_key(ip("::ffff:10.0.0.7")), ip("10.0.0.7"));
        assert_eq!(ip_key(ip("10.0.0.7")), ip("10.0.0.7"));
    }

    #[test]
    fn places_per_address_come_back_on_drop() {
        let t = PerIp::new(2);
        let a = t.try_take(ip("127.0.0.2")).unwrap();
        let _b = t.try_take(ip("127.0.0.2")).unwrap();
        assert!(t.try_take(ip("127.0.0.2")).is_none());
        let _c = t.try_take(ip("127.0.0.3")).unwrap();
        drop(a);
        assert_eq!(t.open_from(ip("127.0.0.2")), 1);
        assert!(t.try_take(ip("127.0.0.2")).is_some());
    }

    #[test]
    fn throttle_is_per_address() {
        let t = AuthThrottle::new(3);
        for _ in 0..3 {
            assert_eq!(t.blocked(ip("127.0.0.2")), None);
            t.failed(ip("127.0.0.2"));
        }
        let wait = t.blocked(ip("127.0.0.2")).unwrap();
        assert!((1..=60).contains(&wait), "{wait}");
        assert_eq!(t.blocked(ip("127.0.0.3")), None);
    }

    #[test]
    fn throttle_table_is_bounded() {
        let t = AuthThrottle::new(1);
        for i in 0..(MAX_TRACKED as u32 + 10) {
            t.failed(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)));
        }
        assert!(t.windows.lock().unwrap().len() <= MAX_TRACKED + 1);
        // Past the table's size, new addresses share the overflow bucket.
        assert!(t.blocked(ip("192.0.2.1")).is_some());
    }
}
