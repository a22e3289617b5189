//! From raw /proc bytes to `ServerMetrics`.
//!
//! Both collectors produce a [`RawSample`] (the local one by reading files, the SSH
//! one by splitting the script's output); [`build_metrics`] turns it into the wire
//! type. Keeping one path means a GNU host, a BusyBox host and the gateway itself are
//! measured the same way.

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use super::parse::{self, CpuTimes, ParseError, Space};
use super::script::Section;
use crate::model::{self, Cpu, Disk, HostStatus, Memory, Process, ServerMetrics};

/// Filesystem types that are not real storage: pseudo filesystems, read-only images,
/// RAM-backed mounts, and network filesystems (a dead NFS server would hang `df`).
/// `include_fstypes` in the config takes names out of this list.
pub const DEFAULT_EXCLUDED_FSTYPES: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "cifs",
    "configfs",
    "cramfs",
    "debugfs",
    "devfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "erofs",
    "fuse.gvfsd-fuse",
    "fuse.lxcfs",
    "fuse.portal",
    "fuse.snapfuse",
    "fuse.sshfs",
    "fusectl",
    "hugetlbfs",
    "iso9660",
    "mqueue",
    "nfs",
    "nfs4",
    "nfsd",
    "nsfs",
    "overlay",
    "proc",
    "pstore",
    "ramfs",
    "romfs",
    "rootfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "smb3",
    "smbfs",
    "squashfs",
    "sysfs",
    "tmpfs",
    "tracefs",
    "udf",
    "9p",
    "ceph",
    "glusterfs",
];

/// Which filesystems count as disks.
#[derive(Debug, Clone)]
pub struct FsFilter {
    excluded: Vec<String>,
}

impl FsFilter {
    pub fn new(include: &[String]) -> Self {
        let include: HashSet<&str> = include.iter().map(String::as_str).collect();
        FsFilter {
            excluded: DEFAULT_EXCLUDED_FSTYPES
                .iter()
                .filter(|t| !include.contains(*t))
                .map(|t| t.to_string())
                .collect(),
        }
    }

    pub fn is_real(&self, fstype: &str) -> bool {
        !self.excluded.iter().any(|t| t == fstype)
    }

    pub fn excluded(&self) -> &[String] {
        &self.excluded
    }
}

/// What one poll read from a target, before interpretation.
#[derive(Debug, Default, Clone)]
pub struct RawSample {
    /// A Go MonServ agent's JSON answer; when set, the other fields are unused.
    pub agent_json: Option<Vec<u8>>,
    pub hostname: Vec<u8>,
    pub uptime: Vec<u8>,
    pub meminfo: Vec<u8>,
    pub stat: Vec<u8>,
    pub cpuinfo: Vec<u8>,
    pub mounts: Vec<u8>,
    pub space: Vec<Space>,
    /// The top processes by resident memory (already narrowed on the target).
    pub procs: Vec<RawProc>,
    /// `/etc/passwd`, or the script's `name:uid` lines for the UIDs that matter.
    pub passwd: Vec<u8>,
    /// Answers to the declared facts (see `collect::facts`).
    pub facts: crate::facts::Answers,
}

#[derive(Debug, Default, Clone)]
pub struct RawProc {
    pub pid: u32,
    pub status: Vec<u8>,
    pub cmdline: Vec<u8>,
}

impl RawSample {
    /// Assemble a sample from the remote script's sections.
    pub fn from_sections(sections: &[Section<'_>], facts: &[crate::facts::Fact]) -> Self {
        let mut raw = RawSample::default();
        let mut procs: HashMap<u32, RawProc> = HashMap::new();
        let mut order = Vec::new();
        let mut cmdlines: &[u8] = &[];
        for s in sections {
            let body = s.body.to_vec();
            match s.name {
                b"hostname" => raw.hostname = body,
                b"uptime" => raw.uptime = body,
                b"meminfo" => raw.meminfo = body,
                b"stat" => raw.stat = body,
                b"cpuinfo" => raw.cpuinfo = body,
                b"mounts" => raw.mounts = body,
                b"df" => raw.space = parse::df_posix(&body),
                b"passwd" => raw.passwd = body,
                b"proc" => {
                    let Some(pid) = std::str::from_utf8(s.arg).ok().and_then(|a| a.trim().parse::<u32>().ok()) else {
                        continue;
                    };
                    if !procs.contains_key(&pid) {
                        order.push(pid);
                    }
                    procs.insert(pid, RawProc { pid, status: body, cmdline: Vec::new() });
                }
                b"cmdlines" => cmdlines = s.body,
                _ => {}
            }
        }
        for (pid, cmdline) in split_head_output(cmdlines, &order) {
            if let Some(p) = procs.get_mut(&pid) {
                p.cmdline = cmdline.to_vec();
            }
        }
        raw.procs = order.into_iter().filter_map(|pid| procs.remove(&pid)).collect();
        if !facts.is_empty() {
            let body = |name: &[u8]| sections.iter().find(|s| s.name == name).map(|s| s.body);
            super::facts::count_processes(facts, body(b"comms"), &mut raw.facts);
            super::facts::file_ages(facts, body(b"fileage"), &mut raw.facts);
            super::facts::unit_states(facts, body(b"units"), &mut raw.facts);
        }
        raw
    }
}

/// Split `head -v -c N 1/cmdline 2/cmdline ...` output (GNU and BusyBox alike:
/// `==> 1/cmdline <==` before each file, a newline before every header but the first)
/// into each PID's bytes. Headers are looked for at line starts, in the order the
/// script listed the files; a file that vanished has no header and gets nothing.
fn split_head_output<'a>(body: &'a [u8], pids: &[u32]) -> Vec<(u32, &'a [u8])> {
    let mut found: Vec<(u32, usize, usize)> = Vec::new(); // (pid, header start, content start)
    let mut pos = 0;
    for &pid in pids {
        let header = format!("==> {pid}/cmdline <==\n");
        let mut from = pos;
        while let Some(i) = find(&body[from..], header.as_bytes()) {
            let at = from + i;
            if at == 0 || body[at - 1] == b'\n' {
                found.push((pid, at, at + header.len()));
                pos = at + header.len();
                break;
            }
            from = at + 1;
        }
    }
    (0..found.len())
        .map(|i| {
            let (pid, _, start) = found[i];
            let end = found.get(i + 1).map_or(body.len(), |next| next.1.saturating_sub(1).max(start));
            (pid, &body[start..end])
        })
        .collect()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Interpret a sample. `previous_cpu` is the last poll's CPU counters of the same
/// target; the returned counters are to be kept for the next poll.
pub fn build_metrics(
    raw: &RawSample,
    previous_cpu: Option<CpuTimes>,
    top_n: usize,
    filter: &FsFilter,
    now: SystemTime,
) -> Result<(ServerMetrics, CpuTimes), ParseError> {
    if let Some(json) = &raw.agent_json {
        let mut metrics = super::agent_json::agent_metrics(json, top_n)?;
        metrics.generated_at_utc = model::rfc3339_utc(now);
        clean_metrics(&mut metrics);
        return Ok((metrics, CpuTimes::default()));
    }
    let hostname = parse::hostname(&raw.hostname)?;
    let uptime_seconds = parse::uptime_seconds(&raw.uptime)?;
    let mem = parse::meminfo(&raw.meminfo)?;
    let cpu_stat = parse::cpu_stat(&raw.stat)?;
    let memory = Memory {
        total: mem.total,
        used: mem.total - mem.available,
        free: mem.available,
        used_percent: model::round1((mem.total - mem.available) as f64 / mem.total as f64 * 100.0),
    };
    let mut metrics = ServerMetrics {
        hostname,
        uptime_seconds,
        disks: disks(&parse::mounts(&raw.mounts), &raw.space, filter),
        top_procs_by_mem: processes(raw, mem.total, top_n),
        memory,
        generated_at_utc: model::rfc3339_utc(now),
        cpu: Cpu {
            cores: cpu_stat.cores,
            used_percent: model::round1(parse::cpu_used_percent(previous_cpu, cpu_stat.times)),
            model_name: parse::cpu_model(&raw.cpuinfo),
        },
        status: HostStatus::Online,
        error: None,
    };
    clean_metrics(&mut metrics);
    Ok((metrics, cpu_stat.times))
}

/// Longest text field kept from a host (PATH_MAX): longer is cut.
pub const MAX_FIELD_BYTES: usize = 4096;

/// The one place host-supplied text is made safe: every text field of the metrics.
/// Matching (mounts against `df`, UIDs against passwd) happened on the raw text.
pub fn clean_metrics(m: &mut ServerMetrics) {
    let clean = |s: &mut String| parse::clean_field(s, MAX_FIELD_BYTES);
    clean(&mut m.hostname);
    clean(&mut m.cpu.model_name);
    for d in &mut m.disks {
        clean(&mut d.device);
        clean(&mut d.mountpoint);
        clean(&mut d.fstype);
    }
    for p in &mut m.top_procs_by_mem {
        clean(&mut p.name);
        clean(&mut p.username);
        clean(&mut p.cmdline);
    }
}

/// Real filesystems with their sizes, in /proc/mounts order. A mountpoint mounted over
/// twice counts once (the top mount, which is what `df` measured); a device mounted
/// at several places (bind mounts) counts once, at its first mountpoint.
pub fn disks(mounts: &[parse::Mount], space: &[Space], filter: &FsFilter) -> Vec<Disk> {
    let sizes: HashMap<&str, &Space> = space.iter().map(|s| (s.mountpoint.as_str(), s)).collect();
    let top_mount: HashMap<&str, usize> = mounts.iter().enumerate().map(|(i, m)| (m.mountpoint.as_str(), i)).collect();
    let mut seen_devices = HashSet::new();
    let mut out = Vec::new();
    for (i, m) in mounts.iter().enumerate() {
        if top_mount.get(m.mountpoint.as_str()) != Some(&i) || !filter.is_real(&m.fstype) {
            continue;
        }
        let Some(size) = sizes.get(m.mountpoint.as_str()) else {
            continue;
        };
        if size.total == 0 || !seen_devices.insert(m.device.as_str()) {
            continue;
        }
        let denominator = size.used.saturating_add(size.avail);
        out.push(Disk {
            device: m.device.clone(),
            mountpoint: m.mountpoint.clone(),
            fstype: m.fstype.clone(),
            total: size.total,
            used: size.used,
            free: size.avail,
            used_percent: if denominator == 0 {
                0.0
            } else {
                model::round1(size.used as f64 / denominator as f64 * 100.0)
            },
        });
    }
    out
}

/// The `top_n` processes by RSS, largest first, with user names resolved.
fn processes(raw: &RawSample, mem_total: u64, top_n: usize) -> Vec<Process> {
    let users = parse::passwd(&raw.passwd);
    let mut procs: Vec<Process> = raw
        .procs
        .iter()
        .filter_map(|p| {
            let status = parse::proc_status(&p.status);
            let rss = status.rss?;
            Some(Process {
                pid: p.pid,
                username: status
                    .uid
                    .map(|uid| users.get(&uid).cloned().unwrap_or_else(|| uid.to_string()))
                    .unwrap_or_default(),
                name: status.name,
                rss_bytes: rss,
                percent_ram: model::round2(rss as f64 / mem_total as f64 * 100.0),
                cmdline: parse::cmdline(&p.cmdline),
            })
        })
        .collect();
    procs.sort_by(|a, b| b.rss_bytes.cmp(&a.rss_bytes).then(a.pid.cmp(&b.pid)));
    procs.truncate(top_n);
    procs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space(m: &str, total: u64, used: u64, avail: u64) -> Space {
        Space { mountpoint: m.into(), total, used, avail }
    }

    #[test]
    fn disks_skip_pseudo_bind_and_overmounts() {
        let mounts = parse::mounts(
            b"/dev/sda1 / ext4 rw 0 0\nproc /proc proc rw 0 0\ntmpfs /run tmpfs rw 0 0\n/dev/sda1 /srv/bind ext4 rw 0 0\n/dev/sdb1 /data xfs rw 0 0\n/dev/sdc1 /data ext4 rw 0 0\n",
        );
        let sp = vec![
            space("/", 100, 40, 50),
            space("/run", 10, 1, 9),
            space("/srv/bind", 100, 40, 50),
            space("/data", 200, 20, 180),
        ];
        let d = disks(&mounts, &sp, &FsFilter::new(&[]));
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].mountpoint.as_str(), d[0].fstype.as_str(), d[0].used_percent), ("/", "ext4", 44.4));
        assert_eq!((d[1].device.as_str(), d[1].fstype.as_str()), ("/dev/sdc1", "ext4"));
        // tmpfs can be opted in.
        let d = disks(&mounts, &sp, &FsFilter::new(&["tmpfs".into()]));
        assert!(d.iter().any(|d| d.mountpoint == "/run"));
    }

    #[test]
    fn head_output_split_by_pid() {
        let body = b"==> 7/cmdline <==\na\0b\0\n==> 9/cmdline <==\nc\0x==> 12/cmdline <==\n";
        let got = split_head_output(body, &[7, 8, 9, 12]);
        assert_eq!(got, vec![(7, &b"a\0b\0"[..]), (9, &b"c\0x==> 12/cmdline <==\n"[..])]);
        assert!(split_head_output(b"garbage", &[1]).is_empty());
        assert!(split_head_output(b"", &[]).is_empty());
    }

    #[test]
    fn processes_sorted_and_named() {
        let raw = RawSample {
            passwd: b"postgres:106\nroot:0\n".to_vec(),
            procs: vec![
                RawProc {
                    pid: 1,
                    status: b"Name: init\nUid: 0\nVmRSS: 1000 kB\n".to_vec(),
                    cmdline: b"/sbin/init\0".to_vec(),
                },
                RawProc {
                    pid: 2,
                    status: b"Name: postgres\nUid: 106\nVmRSS: 4000 kB\n".to_vec(),
                    cmdline: b"postgres\0-D\0/d\0".to_vec(),
                },
                RawProc { pid: 3, status: b"Name: kthreadd\nUid: 0\n".to_vec(), cmdline: vec![] },
                RawProc { pid: 4, status: b"Name: x\nUid: 4242\nVmRSS: 2000 kB\n".to_vec(), cmdline: vec![] },
            ],
            ..RawSample::default()
        };
        let p = processes(&raw, 8000 * 1024, 5);
        let pids: Vec<u32> = p.iter().map(|p| p.pid).collect();
        assert_eq!(pids, vec![2, 4, 1]);
        assert_eq!(p[0].username, "postgres");
        assert_eq!(p[0].percent_ram, 50.0);
        assert_eq!(p[0].cmdline, "postgres -D /d");
        assert_eq!(p[1].username, "4242");
        assert_eq!(processes(&raw, 8000 * 1024, 1).len(), 1);
    }

    /// Parse output captured from a real host running the poll script.
    fn fixture(bytes: &[u8]) -> (ServerMetrics, CpuTimes) {
        let sections = crate::collect::script::split_sections(bytes, "fixture").unwrap();
        let raw = RawSample::from_sections(&sections, &[]);
        build_metrics(&raw, None, 5, &FsFilter::new(&[]), std::time::UNIX_EPOCH).unwrap()
    }

    #[test]
    fn escapes_from_a_host_are_cleaned_after_matching() {
        let capture = include_bytes!("../../tests/fixtures/gnu-debian12.out").to_vec();
        let text = String::from_utf8(capture).unwrap();
        let text = text
            .replace("@@fixture mounts\n", "@@fixture mounts\n/dev/e\x1bx /mnt/e\x1b[1m\u{202e} ext4\n")
            .replace("@@fixture df\n", "@@fixture df\n/dev/e\x1bx 1000 900 100 90% /mnt/e\x1b[1m\u{202e}\n")
            .replace("Name: ", "Name: \x07");
        let (m, _) = fixture(text.as_bytes());
        let disk =
            m.disks.iter().find(|d| d.mountpoint.starts_with("/mnt/e")).expect("matched with df despite escapes");
        assert_eq!((disk.device.as_str(), disk.mountpoint.as_str()), ("/dev/e\u{fffd}x", "/mnt/e\u{fffd}[1m\u{fffd}"));
        assert_eq!(disk.used_percent, 90.0);
        let all = serde_json::to_string(&m).unwrap();
        assert!(!all.contains("\\u001b") && !all.contains("\\u0007") && !all.contains('\u{202e}'), "{all}");
        assert!(m.top_procs_by_mem.iter().all(|p| !p.name.chars().any(crate::model::is_unsafe_char)));
    }

    #[test]
    fn captured_gnu_host() {
        let (m, cpu) = fixture(include_bytes!("../../tests/fixtures/gnu-debian12.out"));
        assert_eq!(m.hostname, "vm");
        assert_eq!(m.uptime_seconds, 1255);
        assert_eq!(m.memory.total, 24684084 * 1024);
        assert_eq!(m.memory.free, 24025216 * 1024);
        assert_eq!(m.memory.used, (24684084 - 24025216) * 1024);
        assert_eq!(m.memory.used_percent, 2.7);
        // Only the ext4 root survives the filter (tmpfs, cgroup, proc... are dropped).
        assert_eq!(m.disks.len(), 1);
        let d = &m.disks[0];
        assert_eq!((d.device.as_str(), d.mountpoint.as_str(), d.fstype.as_str()), ("/dev/vda", "/", "ext4"));
        assert_eq!((d.total, d.used, d.free), (264212084 * 1024, 15805768 * 1024, 79480120 * 1024));
        assert_eq!(d.used_percent, 16.6);
        let pids: Vec<u32> = m.top_procs_by_mem.iter().map(|p| p.pid).collect();
        assert_eq!(pids, vec![1, 1055, 20993, 20994, 21314]);
        let first = &m.top_procs_by_mem[0];
        assert_eq!(
            (first.name.as_str(), first.username.as_str(), first.rss_bytes),
            ("process_api", "root", 9196 * 1024)
        );
        assert!(first.cmdline.starts_with("/process_api --firecracker-init --addr 0.0.0.0:2024"));
        assert_eq!(m.top_procs_by_mem[4].cmdline, "sh /tmp/poll-script.sh");
        assert_eq!((m.cpu.cores, m.cpu.model_name.as_str()), (2, "AMD EPYC"));
        assert_eq!(cpu, CpuTimes { total: 52263 + 43 + 18402 + 178448 + 598 + 198 + 29, idle: 178448 + 598 });
        assert_eq!(m.generated_at_utc, "1970-01-01T00:00:00Z");
    }

    #[test]
    fn captured_busybox_host() {
        let (m, _) = fixture(include_bytes!("../../tests/fixtures/busybox-1.35.out"));
        assert_eq!(m.hostname, "bb-capture");
        assert_eq!(m.memory.total, 24684084 * 1024);
        assert_eq!(m.memory.free, 24025816 * 1024);
        assert_eq!(m.disks.len(), 1);
        assert_eq!(m.disks[0].mountpoint, "/");
        assert_eq!(m.disks[0].used, 15805772 * 1024);
        // Processes that exited between ranking and reading (sort, head) are skipped.
        let procs: Vec<(u32, &str, u64)> =
            m.top_procs_by_mem.iter().map(|p| (p.pid, p.name.as_str(), p.rss_bytes)).collect();
        assert_eq!(procs, vec![(6, "sh", 1744 * 1024), (1, "sh", 1708 * 1024), (7, "sleep", 1380 * 1024)]);
        assert_eq!(m.top_procs_by_mem[0].cmdline, "/bin/sh /tmp/s.sh");
        assert!(m.top_procs_by_mem[1].cmdline.starts_with("sh -c busybox hostname bb-capture && mount"));
        assert_eq!(m.top_procs_by_mem[2].cmdline, "sleep 30");
    }

    #[test]
    fn truncated_capture_is_an_error_not_a_panic() {
        let full = include_bytes!("../../tests/fixtures/busybox-1.35.out");
        for cut in [0, 10, 100, 900, full.len() / 2, full.len() - 5] {
            assert!(crate::collect::script::split_sections(&full[..cut], "fixture").is_err(), "cut at {cut}");
        }
        // Sections present but empty: a clear error naming the missing file.
        let empty = b"@@fixture hostname\nh\n@@fixture uptime\n1 1\n@@fixture end\n";
        let raw = RawSample::from_sections(&crate::collect::script::split_sections(empty, "fixture").unwrap(), &[]);
        let err = build_metrics(&raw, None, 5, &FsFilter::new(&[]), SystemTime::now()).unwrap_err();
        assert_eq!(err.to_string(), "MemTotal in /proc/meminfo is missing from the host's output");
    }
}
