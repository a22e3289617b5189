//! Pure parsers for the kernel's text formats, shared by the local and SSH collectors.
//!
//! Everything here takes bytes and returns values; no I/O. The input is untrusted (a
//! remote host may be broken, hostile or a BusyBox box with odd formatting), so every
//! function tolerates missing fields, extra whitespace, invalid UTF-8 and absurd
//! numbers, and reports what it could not use instead of panicking. The unit tests
//! at the bottom and in `tests/fixtures/` use output captured from Debian (GNU) and
//! BusyBox hosts.

use std::collections::HashMap;

use crate::model::is_unsafe_char;

/// What a parser could not make sense of. Names the file, so the host's error says
/// where to look.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("{0} is missing from the host's output")]
    Missing(&'static str),
    #[error("{what} is malformed: {detail}")]
    Malformed { what: &'static str, detail: String },
}

/// `detail` may quote the host's bytes: cleaned like any host text.
fn malformed(what: &'static str, detail: impl Into<String>) -> ParseError {
    let mut detail = detail.into();
    clean_field(&mut detail, 200);
    ParseError::Malformed { what, detail }
}

/// Lossy UTF-8 with control characters replaced, trimmed: safe to show in a UI.
pub fn clean_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if is_unsafe_char(c) { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// Host text made safe to show, keeping its shape (no trimming): each control
/// character or bidi override becomes U+FFFD, and the whole is cut to `max` bytes.
/// Every text field of a host's metrics passes through here once
/// (`sample::build_metrics`), so nothing a host sends reaches `/ws`, an alert
/// subject or a log line with terminal escapes in it.
pub fn clean_field(text: &mut String, max: usize) {
    if text.chars().any(is_unsafe_char) {
        *text = text.chars().map(|c| if is_unsafe_char(c) { '\u{fffd}' } else { c }).collect();
    }
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
}

/// `/proc/sys/kernel/hostname`: one line. Capped at 255 bytes (the kernel's own limit is 64).
pub fn hostname(bytes: &[u8]) -> Result<String, ParseError> {
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let name = clean_text(&line[..line.len().min(255)]);
    if name.is_empty() {
        return Err(ParseError::Missing("hostname"));
    }
    Ok(name)
}

/// `/proc/uptime`: `"350735.47 234388.90"`; the first number is seconds since boot.
pub fn uptime_seconds(bytes: &[u8]) -> Result<u64, ParseError> {
    let text = String::from_utf8_lossy(bytes);
    let first = text.split_whitespace().next().ok_or(ParseError::Missing("/proc/uptime"))?;
    let secs: f64 = first.parse().map_err(|_| malformed("/proc/uptime", format!("not a number: {:.20}", first)))?;
    if !secs.is_finite() || secs < 0.0 {
        return Err(malformed("/proc/uptime", "negative or infinite"));
    }
    Ok(secs as u64)
}

/// The two numbers of `/proc/meminfo` that the protocol needs, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemInfo {
    pub total: u64,
    /// MemAvailable, or on kernels older than 3.14 (no MemAvailable) the classic
    /// estimate MemFree + Buffers + Cached + SReclaimable.
    pub available: u64,
}

/// `/proc/meminfo`: lines of `Key:   value kB`.
pub fn meminfo(bytes: &[u8]) -> Result<MemInfo, ParseError> {
    let mut fields: HashMap<&str, u64> = HashMap::new();
    let text = String::from_utf8_lossy(bytes);
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let Some(Ok(value)) = parts.next().map(str::parse::<u64>) else {
            continue;
        };
        let scale = match parts.next() {
            Some("kB") | Some("KB") | Some("kb") => 1024,
            None => 1,
            Some(_) => continue,
        };
        if let Some(bytes) = value.checked_mul(scale) {
            fields.insert(key.trim(), bytes);
        }
    }
    let total = *fields.get("MemTotal").ok_or(ParseError::Missing("MemTotal in /proc/meminfo"))?;
    if total == 0 {
        return Err(malformed("/proc/meminfo", "MemTotal is 0"));
    }
    let available = match fields.get("MemAvailable") {
        Some(&v) => v,
        None => ["MemFree", "Buffers", "Cached", "SReclaimable"]
            .iter()
            .filter_map(|k| fields.get(k))
            .fold(0u64, |acc, v| acc.saturating_add(*v)),
    };
    Ok(MemInfo { total, available: available.min(total) })
}

/// Aggregate CPU jiffies from the `cpu` line of `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTimes {
    /// All jiffies (guest time is already counted in user and nice, so it is not added).
    pub total: u64,
    /// idle + iowait.
    pub idle: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuStat {
    pub times: CpuTimes,
    /// Number of `cpuN` lines: the CPUs online now.
    pub cores: u32,
}

/// `/proc/stat`: `cpu  user nice system idle iowait irq softirq steal guest guest_nice`,
/// then one `cpuN` line per online CPU. Old kernels have only the first 4 or 7 columns.
pub fn cpu_stat(bytes: &[u8]) -> Result<CpuStat, ParseError> {
    let text = String::from_utf8_lossy(bytes);
    let mut times = None;
    let mut cores = 0u32;
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        match parts.next() {
            Some("cpu") => {
                let values: Vec<u64> = parts.take(8).map_while(|v| v.parse().ok()).collect();
                if values.len() < 4 {
                    return Err(malformed("/proc/stat", "cpu line has fewer than 4 numbers"));
                }
                let total = values.iter().fold(0u64, |a, v| a.saturating_add(*v));
                let idle = values[3].saturating_add(values.get(4).copied().unwrap_or(0));
                times = Some(CpuTimes { total, idle });
            }
            Some(name) if name.starts_with("cpu") && name[3..].bytes().all(|b| b.is_ascii_digit()) => {
                cores = cores.saturating_add(1);
            }
            _ => {}
        }
    }
    let times = times.ok_or(ParseError::Missing("cpu line of /proc/stat"))?;
    Ok(CpuStat { times, cores: cores.max(1) })
}

/// CPU busy percentage between two samples. With no earlier sample (first poll after
/// connecting) this is the average since boot, a real value rather than a made-up 0.
pub fn cpu_used_percent(previous: Option<CpuTimes>, now: CpuTimes) -> f64 {
    let (total, idle) = match previous {
        Some(p) if now.total > p.total && now.idle >= p.idle => (now.total - p.total, now.idle - p.idle),
        _ => (now.total, now.idle),
    };
    if total == 0 {
        return 0.0;
    }
    let busy = total.saturating_sub(idle) as f64;
    (busy / total as f64 * 100.0).clamp(0.0, 100.0)
}

/// The CPU model from `/proc/cpuinfo`: x86 `model name`, ARM `Processor`/`Hardware`
/// or `Model`, MIPS `cpu model`. Empty when none is there (many ARM boards).
pub fn cpu_model(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut fallback = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = clean_text(value.as_bytes());
        if value.is_empty() {
            continue;
        }
        match key.trim() {
            "model name" | "cpu model" => return value,
            "Processor" | "Hardware" | "Model" if fallback.is_none() => fallback = Some(value),
            _ => {}
        }
    }
    fallback.unwrap_or_default()
}

/// One line of `/proc/mounts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub device: String,
    pub mountpoint: String,
    pub fstype: String,
}

/// `/proc/mounts`: `device mountpoint fstype options 0 0`, with spaces, tabs,
/// newlines and backslashes in paths written as `\040`, `\011`, `\012`, `\134`.
pub fn mounts(bytes: &[u8]) -> Vec<Mount> {
    bytes
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let mut f = line.split(|b| b.is_ascii_whitespace()).filter(|f| !f.is_empty());
            let device = f.next()?;
            let mountpoint = f.next()?;
            let fstype = f.next()?;
            Some(Mount {
                // Shown as is here; `sample::clean_metrics` cleans every text field.
                device: String::from_utf8_lossy(&unescape_octal(device)).into_owned(),
                mountpoint: String::from_utf8_lossy(&unescape_octal(mountpoint)).into_owned(),
                fstype: clean_text(fstype),
            })
        })
        .collect()
}

/// Undo the kernel's `\ooo` escaping in /proc/mounts.
pub fn unescape_octal(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' && i + 3 < field.len() && field[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let v = (field[i + 1] - b'0') as u32 * 64 + (field[i + 2] - b'0') as u32 * 8 + (field[i + 3] - b'0') as u32;
            if let Ok(b) = u8::try_from(v) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

/// Size of one mounted filesystem, in bytes, as `statvfs` or `df -Pk` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Space {
    pub mountpoint: String,
    pub total: u64,
    /// blocks - bfree
    pub used: u64,
    /// bavail: what unprivileged users may still write.
    pub avail: u64,
}

/// `df -Pk` output (GNU and BusyBox):
/// `Filesystem 1024-blocks Used Available Capacity Mounted on`, one line per filesystem.
/// The header and any line whose numbers do not parse are skipped.
pub fn df_posix(bytes: &[u8]) -> Vec<Space> {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 6 || !fields[4].ends_with('%') {
                return None;
            }
            let kib = |s: &str| s.parse::<u64>().ok().and_then(|v| v.checked_mul(1024));
            Some(Space {
                total: kib(fields[1])?,
                used: kib(fields[2])?,
                avail: kib(fields[3])?,
                mountpoint: fields[5..].join(" "),
            })
        })
        .collect()
}

/// The fields of `/proc/[pid]/status` the protocol uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcStatus {
    pub name: String,
    /// Real UID (first number of `Uid:`).
    pub uid: Option<u32>,
    /// Resident set size in bytes; `None` for kernel threads.
    pub rss: Option<u64>,
}

/// `/proc/[pid]/status`: `Key:\tvalue` lines. Also accepts `Key: value` (as the
/// remote script re-emits them with single spaces).
pub fn proc_status(bytes: &[u8]) -> ProcStatus {
    let mut status = ProcStatus::default();
    for line in bytes.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (key, value) = (&line[..colon], &line[colon + 1..]);
        match key {
            b"Name" => status.name = clean_text(value),
            b"Uid" => {
                status.uid = String::from_utf8_lossy(value).split_whitespace().next().and_then(|v| v.parse().ok())
            }
            b"VmRSS" => {
                let text = String::from_utf8_lossy(value);
                let mut parts = text.split_whitespace();
                status.rss = parts.next().and_then(|v| v.parse::<u64>().ok()).and_then(|v| match parts.next() {
                    Some("kB") | None => v.checked_mul(1024),
                    Some(_) => None,
                });
            }
            _ => {}
        }
    }
    status
}

/// `/proc/[pid]/cmdline`: arguments separated (and terminated) by NUL. Joined with
/// spaces, like `ps -o args`. Empty for kernel threads.
pub fn cmdline(bytes: &[u8]) -> String {
    let joined: Vec<u8> = bytes.split(|&b| b == 0).filter(|arg| !arg.is_empty()).collect::<Vec<_>>().join(&b' ');
    clean_text(&joined)
}

/// `/etc/passwd` (or the script's `name:uid` extract of it): UID -> user name.
pub fn passwd(bytes: &[u8]) -> HashMap<u32, String> {
    let mut users = HashMap::new();
    for line in String::from_utf8_lossy(bytes).lines() {
        let fields: Vec<&str> = line.split(':').collect();
        let (name, uid) = match fields.len() {
            2 => (fields[0], fields[1]),
            n if n >= 3 => (fields[0], fields[2]),
            _ => continue,
        };
        if let (false, Ok(uid)) = (name.is_empty(), uid.trim().parse::<u32>()) {
            // First entry wins, as with getpwuid.
            users.entry(uid).or_insert_with(|| clean_text(name.as_bytes()));
        }
    }
    users
}

/// `/proc/[pid]/statm`: `size resident shared ...` in pages. Returns `resident`.
/// Only used to rank processes, so the page size does not matter here.
pub fn statm_resident(bytes: &[u8]) -> Option<u64> {
    String::from_utf8_lossy(bytes).split_whitespace().nth(1).and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_text_loses_terminal_escapes_but_keeps_its_shape() {
        let mut t = "/mnt/esc\x1b]0;pwned\x07 \u{202e}txt.exe".to_string();
        clean_field(&mut t, 4096);
        assert_eq!(t, "/mnt/esc\u{fffd}]0;pwned\u{fffd} \u{fffd}txt.exe");
        let mut long = "é".repeat(3000);
        clean_field(&mut long, 4095);
        assert_eq!(long.len(), 4094, "cut on a character boundary");
        // Parse errors quote the host's bytes: cleaned too.
        let e = uptime_seconds(b"\x1b[2Jpwn 1").unwrap_err().to_string();
        assert!(!e.contains('\x1b') && e.contains('\u{fffd}'), "{e}");
    }

    #[test]
    fn hostname_trims_and_rejects_empty() {
        assert_eq!(hostname(b"scadanas\n").unwrap(), "scadanas");
        assert_eq!(hostname(b"  gw-01 \nrest"), Ok("gw-01".to_string()));
        assert_eq!(hostname(b"\n"), Err(ParseError::Missing("hostname")));
        assert_eq!(hostname(b"a\x1bb").unwrap(), "a b");
    }

    #[test]
    fn uptime_takes_first_number() {
        assert_eq!(uptime_seconds(b"350735.47 234388.90\n").unwrap(), 350735);
        assert_eq!(uptime_seconds(b"12 7").unwrap(), 12);
        assert!(uptime_seconds(b"").is_err());
        assert!(uptime_seconds(b"abc def").is_err());
        assert!(uptime_seconds(b"-5.0 1").is_err());
        assert!(uptime_seconds(b"inf 1").is_err());
    }

    #[test]
    fn meminfo_prefers_memavailable() {
        let m = meminfo(b"MemTotal:        8000000 kB\nMemFree:  100 kB\nMemAvailable:    6000000 kB\n").unwrap();
        assert_eq!(m.total, 8_000_000 * 1024);
        assert_eq!(m.available, 6_000_000 * 1024);
    }

    #[test]
    fn meminfo_falls_back_on_old_kernels() {
        let m = meminfo(b"MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 200 kB\n").unwrap();
        assert_eq!(m.available, 350 * 1024);
    }

    #[test]
    fn meminfo_rejects_garbage() {
        assert_eq!(meminfo(b"garbage\n\x00\xff"), Err(ParseError::Missing("MemTotal in /proc/meminfo")));
        assert!(meminfo(b"MemTotal: 0 kB\n").is_err());
        // Overflowing numbers are skipped rather than wrapped.
        assert!(meminfo(b"MemTotal: 99999999999999999999 kB\n").is_err());
        // Available larger than total is clamped.
        let m = meminfo(b"MemTotal: 10 kB\nMemAvailable: 20 kB\n").unwrap();
        assert_eq!(m.available, m.total);
    }

    #[test]
    fn cpu_stat_counts_cores_and_idle() {
        let s = cpu_stat(b"cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\ncpu1 50 0 25 400 25 0 0 0 0 0\nintr 1 2 3\n").unwrap();
        assert_eq!(s.cores, 2);
        assert_eq!(s.times, CpuTimes { total: 1000, idle: 850 });
        // 2.4 kernels: only 4 columns.
        let s = cpu_stat(b"cpu 1 2 3 4\n").unwrap();
        assert_eq!(s.times, CpuTimes { total: 10, idle: 4 });
        assert_eq!(s.cores, 1);
        assert!(cpu_stat(b"cpu 1 2\n").is_err());
        assert!(cpu_stat(b"nothing").is_err());
    }

    #[test]
    fn cpu_percent_uses_deltas() {
        let a = CpuTimes { total: 1000, idle: 900 };
        let b = CpuTimes { total: 1200, idle: 950 };
        assert!((cpu_used_percent(Some(a), b) - 75.0).abs() < 1e-9);
        assert!((cpu_used_percent(None, a) - 10.0).abs() < 1e-9);
        // A counter that went backwards (host rebooted) falls back to since-boot.
        assert!((cpu_used_percent(Some(b), a) - 10.0).abs() < 1e-9);
        assert_eq!(cpu_used_percent(None, CpuTimes::default()), 0.0);
    }

    #[test]
    fn cpu_model_x86_and_arm() {
        assert_eq!(cpu_model(b"processor\t: 0\nmodel name\t: AMD EPYC 7B13\n"), "AMD EPYC 7B13");
        assert_eq!(
            cpu_model(b"processor\t: 0\nBogoMIPS\t: 108.00\n\nHardware\t: BCM2835\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n"),
            "BCM2835"
        );
        assert_eq!(cpu_model(b"processor : 0\nBogoMIPS : 125.00\n"), "");
    }

    #[test]
    fn mounts_unescape_paths() {
        let m = mounts(b"/dev/sda1 / ext4 rw,relatime 0 0\n/dev/sdb1 /mnt/my\\040disk xfs rw 0 0\nbroken\n");
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].mountpoint, "/mnt/my disk");
        assert_eq!(m[1].fstype, "xfs");
        assert_eq!(unescape_octal(b"a\\134b\\"), b"a\\b\\".to_vec());
        assert_eq!(unescape_octal(b"\\777"), b"\\777".to_vec());
    }

    #[test]
    fn df_parses_gnu_and_busybox() {
        let gnu = b"Filesystem     1024-blocks     Used Available Capacity Mounted on\n/dev/vda         263112772 10896640 238755464       5% /\n";
        let bb = b"Filesystem           1024-blocks      Used Available Use% Mounted on\n/dev/root              7941000   1234567   6297457  16% /\n/dev/x 10 5 5 50% /mnt/with space\n";
        let g = df_posix(gnu);
        assert_eq!(
            g,
            vec![Space {
                mountpoint: "/".into(),
                total: 263112772 * 1024,
                used: 10896640 * 1024,
                avail: 238755464 * 1024
            }]
        );
        let b = df_posix(bb);
        assert_eq!(b.len(), 2);
        assert_eq!(b[1].mountpoint, "/mnt/with space");
        // Error lines and non-numeric rows are skipped, the rest kept.
        let mixed = df_posix(b"df: /x: Permission denied\n/dev/y 4 2 2 50% /data\n/dev/z - - - -% /z\n");
        assert_eq!(mixed, vec![Space { mountpoint: "/data".into(), total: 4096, used: 2048, avail: 2048 }]);
    }

    #[test]
    fn status_reads_name_uid_rss() {
        let s = proc_status(
            b"Name:\tpostgres\nUmask:\t0077\nState:\tS (sleeping)\nUid:\t106\t106\t106\t106\nVmRSS:\t  524288 kB\n",
        );
        assert_eq!(s, ProcStatus { name: "postgres".into(), uid: Some(106), rss: Some(524288 * 1024) });
        // Re-emitted by the remote script's `read` loop.
        let s = proc_status(b"Name: kworker/0:1 events\nUid: 0 0 0 0\n");
        assert_eq!(s.name, "kworker/0:1 events");
        assert_eq!(s.rss, None);
        assert_eq!(proc_status(b"\xff\xfe garbage"), ProcStatus::default());
    }

    #[test]
    fn cmdline_joins_args() {
        assert_eq!(cmdline(b"postgres\0-D\0/var/lib/postgresql/data\0"), "postgres -D /var/lib/postgresql/data");
        assert_eq!(cmdline(b""), "");
        assert_eq!(cmdline(b"a\0\0b\n"), "a b");
    }

    #[test]
    fn passwd_maps_uids() {
        let u = passwd(b"root:x:0:0:root:/root:/bin/bash\npostgres:x:106:113::/var/lib/postgresql:/bin/bash\nbad line\ndup:x:0:0::/:/bin/sh\nscada:1000\n");
        assert_eq!(u.get(&0).map(String::as_str), Some("root"));
        assert_eq!(u.get(&106).map(String::as_str), Some("postgres"));
        assert_eq!(u.get(&1000).map(String::as_str), Some("scada"));
    }

    #[test]
    fn statm_second_field() {
        assert_eq!(statm_resident(b"2454 776 640 1 0 194 0\n"), Some(776));
        assert_eq!(statm_resident(b"x"), None);
    }
}
