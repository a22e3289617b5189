//! The gateway itself: /proc and `statvfs` read directly, no shell, no SSH.
//!
//! The reads are blocking file I/O, so they run on tokio's blocking pool; `statvfs`
//! on a hung network mount would block, which is why network filesystems are
//! excluded by default and the poll loop puts a deadline on every target.

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
}

impl Default for LocalCollector {
    fn default() -> Self {
        LocalCollector::new("/proc", "/etc/passwd")
    }
}

impl LocalCollector {
    pub fn new(proc_root: impl Into<PathBuf>, passwd: impl Into<PathBuf>) -> Self {
        LocalCollector { proc_root: proc_root.into(), passwd: passwd.into() }
    }

    pub async fn sample(&mut self, spec: &SampleSpec) -> Result<RawSample, CollectError> {
        let proc_root = self.proc_root.clone();
        let passwd = self.passwd.clone();
        let spec = spec.clone();
        tokio::task::spawn_blocking(move || read_sample(&proc_root, &passwd, &spec))
            .await
            .map_err(|e| CollectError::Local(format!("reader task failed: {e}")))?
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
