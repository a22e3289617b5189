//! Real SSH hosts on loopback: OpenSSH `sshd`, and `dropbear` in a BusyBox-only
//! chroot with its own hostname and PID namespace. Each runs under
//! `unshare --pid --fork --kill-child`, so killing it ends every session process too,
//! like pulling a host's plug.

use std::fs;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::fixtures::{self, fixtures};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn wait_listening(port: u16, child: &mut Child, what: &str) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} did not listen on {port} within 10 s");
}

/// Kill a host's `unshare` process; `--kill-child` takes its whole PID namespace down.
fn stop(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// An OpenSSH server with the fixture users.
pub struct Sshd {
    pub port: u16,
    pub log: PathBuf,
    child: Option<Child>,
    host_key: PathBuf,
    config: PathBuf,
}

impl Sshd {
    pub fn start() -> Sshd {
        Self::start_with_key(fixtures().host_key_a.clone(), free_port())
    }

    pub fn start_with_key(host_key: PathBuf, port: u16) -> Sshd {
        let f = fixtures();
        let tag = format!("sshd-{port}-{}", std::process::id());
        let config = f.dir.join(format!("{tag}.conf"));
        let log = f.dir.join(format!("{tag}.log"));
        let _ = fs::remove_file(&log);
        fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile none\nAuthorizedKeysFile {}/authorized_keys/%u\n\
                 StrictModes no\nUsePAM no\nPasswordAuthentication yes\nKbdInteractiveAuthentication no\nPermitRootLogin no\n\
                 AllowUsers {} {} {} {} {}\nMaxStartups 200\nMaxSessions 200\nLogLevel INFO\n",
                host_key.display(),
                f.dir.display(),
                fixtures::PW_USER,
                fixtures::KEY_USER,
                fixtures::GARBAGE_USER,
                fixtures::FLOOD_USER,
                fixtures::CROWD_USER
            ),
        )
        .unwrap();
        let mut s = Sshd { port, log, child: None, host_key, config };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let mut child = Command::new("unshare")
            .args(["--pid", "--fork", "--kill-child", "/usr/sbin/sshd", "-D", "-f"])
            .arg(&self.config)
            .arg("-E")
            .arg(&self.log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start sshd");
        wait_listening(self.port, &mut child, "sshd");
        self.child = Some(child);
    }

    pub fn kill(&mut self) {
        stop(&mut self.child);
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Restart the same address with another host key (a replaced host or an attacker).
    pub fn restart_with_key(&mut self, key: PathBuf) {
        self.kill();
        let _ = &self.host_key;
        let text = fs::read_to_string(&self.config).unwrap();
        let text = text.replace(&format!("HostKey {}", self.host_key.display()), &format!("HostKey {}", key.display()));
        fs::write(&self.config, text).unwrap();
        self.host_key = key;
        self.spawn();
    }

    /// PID of the `unshare` process that holds this host's PID namespace.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// How many logins sshd accepted for `user` (one per SSH connection).
    pub fn accepted_logins(&self, user: &str) -> usize {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        log.lines().filter(|l| l.contains("Accepted") && l.contains(&format!(" for {user} "))).count()
    }

    pub fn url_password(&self) -> String {
        format!("ssh://{}:{}@127.0.0.1:{}", fixtures::PW_USER, fixtures::PASSWORD_ENCODED, self.port)
    }

    pub fn url_key(&self) -> String {
        format!("ssh://{}@127.0.0.1:{}", fixtures::KEY_USER, self.port)
    }

    pub fn url_user(&self, user: &str) -> String {
        format!("ssh://{user}:{}@127.0.0.1:{}", fixtures::PASSWORD_ENCODED, self.port)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_file(&self.config);
    }
}

/// A BusyBox-only host: dropbear in a chroot, own UTS and PID namespace, fresh /proc.
pub struct BusyBoxHost {
    pub port: u16,
    pub hostname: String,
    child: Option<Child>,
}

impl BusyBoxHost {
    pub fn start(hostname: &str) -> BusyBoxHost {
        let mut h = BusyBoxHost { port: free_port(), hostname: hostname.into(), child: None };
        h.spawn();
        h
    }

    fn spawn(&mut self) {
        let root = fixtures().bb_root.display().to_string();
        let script = format!(
            "busybox hostname {host} && mount --bind {root} {root} && mount -t proc proc {root}/proc && \
             mount --rbind /dev {root}/dev && exec chroot {root} /usr/sbin/dropbear -F -E -p 127.0.0.1:{port} \
             -r /etc/dropbear/dropbear_ed25519_host_key -P /var/run/dropbear.pid",
            host = self.hostname,
            port = self.port
        );
        let mut child = Command::new("unshare")
            .args(["--uts", "--pid", "--mount", "--fork", "--kill-child", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dropbear");
        wait_listening(self.port, &mut child, "dropbear");
        self.child = Some(child);
    }

    pub fn kill(&mut self) {
        stop(&mut self.child);
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn url(&self) -> String {
        format!("ssh://{}:{}@127.0.0.1:{}", fixtures::BB_USER, fixtures::BB_PASSWORD, self.port)
    }

    /// Run `program` (a path inside the chroot) inside this host's namespaces, as
    /// its own processes see it. Returns the `nsenter` process; the program is its
    /// child (see [`kill_children_named`]).
    pub fn run_inside(&self, program: &str) -> Child {
        let unshare = self.child.as_ref().expect("host running").id();
        let children = fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children")).unwrap_or_default();
        let inner: u32 = children.split_whitespace().next().and_then(|p| p.parse().ok()).expect("dropbear pid");
        Command::new("nsenter")
            .args(["-t", &inner.to_string(), "--pid", "--mount", "--uts", "--root", "--wd", program])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nsenter")
    }
}

/// Kill (SIGKILL) the children of `parent` whose name (`comm`) is `name`.
pub fn kill_children_named(parent: u32, name: &str) {
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().to_string();
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // pid (comm) state ppid ...
        let Some((comm, rest)) = stat.split_once(" (").and_then(|(_, r)| r.rsplit_once(") ")) else { continue };
        let ppid: u32 = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
        if comm == name && ppid == parent {
            let _ = Command::new("kill").args(["-9", &pid]).status();
        }
    }
}

impl Drop for BusyBoxHost {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Loopback ports nobody listens on (connecting is refused at once).
pub fn closed_ports(n: usize) -> Vec<u16> {
    (20_000u16..60_000)
        .filter(|p| {
            matches!(
                std::net::TcpStream::connect(("127.0.0.1", *p)),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
            )
        })
        .take(n)
        .collect()
}

/// A peer process (broker, receiver, server) killed when the test ends.
pub struct Peer(pub Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Wait until a peer listens on `port` (30 s; it exiting first is a failure).
pub fn wait_port(port: u16, child: &mut Child, what: &str) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited: {status}");
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{what} never listened on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
