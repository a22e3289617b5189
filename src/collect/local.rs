//! The gateway itself: /proc and `statvfs` read directly, no shell, no SSH.
//!
//! The reads are blocking file I/O, so they run on tokio's blocking pool; `statvfs`
//! on a hung network mount would block, which is why network filesystems are
//! excluded by default and the poll loop puts a deadline on every target. A read
//! that outlives its deadline is not started again: the next poll waits for the same
//! one, so a hung mount holds one thread, not one per round.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::parse::{self, Space};
use super::sample::{RawProc, RawSample};
use super::script::CMDLINE_MAX;
use super::{CollectError, SampleSpec};

/// Reads a /proc tree. `root` is `/proc` except in tests, which point it at a
/// captured copy.
pub struct LocalCollector {
    proc_root: PathBuf,
    passwd: PathBuf,
    /// The blocking read in progress, kept across a missed deadline.
    in_flight: Option<tokio::task::JoinHandle<Result<RawSample, CollectError>>>,
}

impl Default for LocalCollector {
    fn default() -> Self {
        LocalCollector::new("/proc", "/etc/passwd")
    }
}

impl LocalCollector {
    pub fn new(proc_root: impl Into<PathBuf>, passwd: impl Into<PathBuf>) -> Self {
        LocalCollector { proc_root: proc_root.into(), passwd: passwd.into(), in_flight: None }
    }

    /// Cancel-safe: when the caller's deadline drops this future, the read goes on
    /// and the next call picks up its result.
    pub async fn sample(&mut self, spec: &SampleSpec) -> Result<RawSample, CollectError> {
        let handle = self.in_flight.get_or_insert_with(|| {
            let (proc_root, passwd, spec) = (self.proc_root.clone(), self.passwd.clone(), spec.clone());
            tokio::task::spawn_blocking(move || read_sample(&proc_root, &passwd, &spec))
        });
        let result = handle.await;
        self.in_flight = None;
        result.map_err(|e| CollectError::Local(format!("reader task failed: {e}")))?
    }
}

/// Read at most `limit` bytes of a file.
fn read_capped(path: &Path, limit: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    fs::File::open(path)?.take(limit as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

fn read_sample(proc_root: &Path, passwd: &Path, spec: &SampleSpec) -> Result<RawSample, CollectError> {
    let limit = spec.max_output_bytes;
    let must =
        |name: &str| read_capped(&proc_root.join(name), limit).map_err(|e| CollectError::Local(format!("{name}: {e}")));
    let mut raw = RawSample {
        hostname: must("sys/kernel/hostname")?,
        uptime: must("uptime")?,
        meminfo: must("meminfo")?,
        stat: must("stat")?,
        cpuinfo: read_capped(&proc_root.join("cpuinfo"), 64 * 1024).unwrap_or_default(),
        mounts: must("mounts")?,
        passwd: read_capped(passwd, limit).unwrap_or_default(),
        ..RawSample::default()
    };
    raw.space = parse::mounts(&raw.mounts)
        .into_iter()
        .filter(|m| spec.fs_filter.is_real(&m.fstype))
        .filter_map(|m| statvfs_space(&m.mountpoint))
        .collect();
    raw.procs = top_processes(proc_root, spec.top_n);
    if !spec.facts.is_empty() {
        raw.facts = super::facts::local_answers(proc_root, &spec.facts);
    }
    Ok(raw)
}

fn statvfs_space(mountpoint: &str) -> Option<Space> {
    let st = nix::sys::statvfs::statvfs(mountpoint).ok()?;
    let frsize = st.fragment_size() as u64;
    let blocks = st.blocks() as u64;
    Some(Space {
        mountpoint: mountpoint.to_string(),
        total: blocks.saturating_mul(frsize),
        used: blocks.saturating_sub(st.blocks_free() as u64).saturating_mul(frsize),
        avail: (st.blocks_available() as u64).saturating_mul(frsize),
    })
}

/// Rank every process by resident pages (`statm`), then read status and cmdline of
/// the top ones only: the same narrowing the remote script does.
fn top_processes(proc_root: &Path, top_n: usize) -> Vec<RawProc> {
    let Ok(entries) = fs::read_dir(proc_root) else {
        return Vec::new();
    };
    let mut ranked: Vec<(u64, u32)> = entries
        .filter_map(|e| {
            let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let statm = read_capped(&proc_root.join(pid.to_string()).join("statm"), 256).ok()?;
            Some((parse::statm_resident(&statm)?, pid))
        })
        .collect();
    ranked.sort_unstable_by(|a, b| b.cmp(a));
    ranked
        .into_iter()
        .take(top_n)
        .filter_map(|(_, pid)| {
            let dir = proc_root.join(pid.to_string());
            Some(RawProc {
                pid,
                status: read_capped(&dir.join("status"), 16 * 1024).ok()?,
                cmdline: read_capped(&dir.join("cmdline"), CMDLINE_MAX).unwrap_or_default(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::FsFilter;

    fn spec() -> SampleSpec {
        SampleSpec {
            top_n: 3,
            fs_filter: FsFilter::new(&[]),
            max_output_bytes: 1 << 20,
            facts: std::sync::Arc::from([]),
        }
    }

    #[tokio::test]
    async fn reads_this_machine() {
        let raw = LocalCollector::default().sample(&spec()).await.unwrap();
        let (m, _) =
            crate::collect::sample::build_metrics(&raw, None, 3, &spec().fs_filter, std::time::SystemTime::now())
                .unwrap();
        assert_eq!(m.hostname, std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim());
        assert_eq!(m.top_procs_by_mem.len(), 3);
        assert!(m.disks.iter().any(|d| d.mountpoint == "/"));
    }

    #[tokio::test]
    async fn missing_proc_is_a_clear_error() {
        let mut c = LocalCollector::new("/nonexistent-proc", "/nonexistent-passwd");
        let e = c.sample(&spec()).await.unwrap_err();
        assert!(e.to_string().starts_with("reading local /proc: sys/kernel/hostname: "), "{e}");
    }

    #[tokio::test]
    async fn abandoned_read_is_resumed_not_restarted() {
        use std::time::Duration;
        // A /proc whose hostname is a FIFO: reading it blocks like a hung mount.
        let dir = std::env::temp_dir().join(format!("monserv-fifo-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sys/kernel")).unwrap();
        let fifo = dir.join("sys/kernel/hostname");
        let _ = std::fs::remove_file(&fifo);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let mut c = LocalCollector::new(&dir, "/nonexistent-passwd");
        let first = tokio::time::timeout(Duration::from_millis(100), c.sample(&spec())).await;
        assert!(first.is_err(), "the read should hang on the FIFO");
        assert!(c.in_flight.is_some(), "the hung read must be kept, not abandoned");
        // Unblock it: the same read now goes on and fails on the next missing file. A
        // fresh read would block on the FIFO again and time out.
        std::fs::write(&fifo, b"fifo-host\n").unwrap();
        let second = tokio::time::timeout(Duration::from_secs(5), c.sample(&spec())).await.expect("resumed read");
        assert!(second.unwrap_err().to_string().contains("uptime"));
        assert!(c.in_flight.is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
