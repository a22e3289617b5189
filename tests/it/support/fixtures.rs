//! One-time machine fixtures shared by every test process: system users for the
//! OpenSSH host, keys, and the BusyBox chroot for the dropbear host.
//!
//! Created once under a file lock (nextest runs tests as parallel processes), then
//! reused; a stamp file marks completion. Needs root, as the suite's own hosts do.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Bump when the fixture layout changes.
const STAMP: &str = "stamp-v4";
pub const FIXTURE_DIR: &str = "/tmp/monserv-it";

pub const PW_USER: &str = "monserv-pw";
pub const KEY_USER: &str = "monserv-key";
pub const GARBAGE_USER: &str = "monserv-garbage";
pub const FLOOD_USER: &str = "monserv-flood";
/// Runs monserv's real script, then reports 1500 extra full disks, one mounted at a
/// 600-byte path, and mount points and devices carrying terminal escapes.
pub const CROWD_USER: &str = "monserv-crowd";
pub const CROWD_DISKS: usize = 1500;
/// Holds the characters a target URL must percent-encode.
pub const PASSWORD: &str = "pw,with@odd:chars";
pub const PASSWORD_ENCODED: &str = "pw%2Cwith%40odd%3Achars";
pub const BB_USER: &str = "scada";
pub const BB_PASSWORD: &str = "bb-secret-7";

pub struct Fixtures {
    pub dir: PathBuf,
    pub host_key_a: PathBuf,
    pub host_key_b: PathBuf,
    pub client_key: PathBuf,
    pub bb_root: PathBuf,
}

pub fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        let dir = PathBuf::from(FIXTURE_DIR);
        let f = Fixtures {
            host_key_a: dir.join("ssh_host_a"),
            host_key_b: dir.join("ssh_host_b"),
            client_key: dir.join("id_ed25519"),
            bb_root: dir.join("bbroot"),
            dir,
        };
        fs::create_dir_all(&f.dir).expect("create fixture dir");
        let lock = fs::File::create("/tmp/monserv-it.lock").expect("lock file");
        let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).expect("flock");
        if !f.dir.join(STAMP).exists() {
            build(&f);
            fs::write(f.dir.join(STAMP), b"ok").expect("stamp");
        }
        f
    })
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write_exec(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

fn keygen(path: &Path) {
    let _ = fs::remove_file(path);
    let _ = fs::remove_file(path.with_extension("pub"));
    run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", "monserv-test", "-f"]).arg(path));
}

fn build(f: &Fixtures) {
    fs::set_permissions(&f.dir, fs::Permissions::from_mode(0o755)).unwrap();
    // Hostile login shells: sshd runs `shell -c <script>`, they ignore it.
    let garbage = f.dir.join("garbage-shell");
    write_exec(
        &garbage,
        "#!/bin/sh\nprintf 'MemTotal: lots\\n\\377\\376garbage\\n@@0123 end\\n'\nhead -c 3000 /dev/urandom\n",
    );
    let flood = f.dir.join("flood-shell");
    write_exec(&flood, "#!/bin/sh\nexec head -c 100000000 /dev/zero\n");
    let crowd = f.dir.join("crowd-shell");
    let long = format!("/mnt/{}", "p".repeat(595));
    write_exec(
        &crowd,
        &format!(
            r#"#!/bin/sh
# sshd runs `crowd-shell -c SCRIPT`: run it, then add disks to its mounts and df sections.
/bin/sh -c "$2" | awk -v n={CROWD_DISKS} -v long={long} '
/^@@[^ ]+ mounts$/ {{ print; print "/dev/longpath " long " ext4"; print "/dev/esc\033[2J /mnt/esc\033]0;pwned\007 ext4";
  for (i = 0; i < n; i++) print "/dev/full" i " /mnt/full" i " ext4"; next }}
/^@@[^ ]+ df$/ {{ print; print "/dev/longpath 1000 990 10 99% " long; print "/dev/esc 1000 990 10 99% /mnt/esc\033]0;pwned\007";
  for (i = 0; i < n; i++) print "/dev/full" i " 1000 950 50 95% /mnt/full" i; next }}
{{ print }}'
"#
        ),
    );
    for (user, shell) in [
        (PW_USER, "/bin/sh".into()),
        (KEY_USER, "/bin/sh".into()),
        (GARBAGE_USER, garbage),
        (FLOOD_USER, flood),
        (CROWD_USER, crowd),
    ] {
        let exists = Command::new("id").arg(user).output().map(|o| o.status.success()).unwrap_or(false);
        if exists {
            run(Command::new("usermod").arg("-s").arg(&shell).arg(user));
        } else {
            run(Command::new("useradd").args(["-M", "-d", "/nonexistent", "-s"]).arg(&shell).arg(user));
        }
    }
    let mut chpasswd = Command::new("chpasswd");
    chpasswd.stdin(std::process::Stdio::piped());
    let mut child = chpasswd.spawn().expect("chpasswd");
    {
        use std::io::Write;
        let stdin = child.stdin.as_mut().unwrap();
        for u in [PW_USER, KEY_USER, GARBAGE_USER, FLOOD_USER, CROWD_USER] {
            writeln!(stdin, "{u}:{PASSWORD}").unwrap();
        }
    }
    assert!(child.wait().unwrap().success(), "chpasswd failed");
    fs::create_dir_all("/run/sshd").unwrap();

    keygen(&f.host_key_a);
    keygen(&f.host_key_b);
    keygen(&f.client_key);
    let auth_dir = f.dir.join("authorized_keys");
    fs::create_dir_all(&auth_dir).unwrap();
    fs::copy(f.client_key.with_extension("pub"), auth_dir.join(KEY_USER)).unwrap();

    build_busybox_root(&f.bb_root);
}

/// A root filesystem with nothing but busybox-static, dropbear and the libraries
/// dropbear links against: a BusyBox-only host.
fn build_busybox_root(root: &Path) {
    let _ = fs::remove_dir_all(root);
    for d in ["bin", "usr/sbin", "etc/dropbear", "proc", "dev", "tmp", "root", "home/scada", "var/run"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    let busybox = run(Command::new("sh").args(["-c", "command -v busybox"])).trim().to_string();
    fs::copy(&busybox, root.join("bin/busybox")).unwrap();
    let applets = run(Command::new(&busybox).arg("--list"));
    for applet in applets.lines().map(str::trim).filter(|a| !a.is_empty() && *a != "busybox") {
        let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
    }
    fs::copy("/usr/sbin/dropbear", root.join("usr/sbin/dropbear")).unwrap();
    for lib in run(Command::new("ldd").arg("/usr/sbin/dropbear")).split_whitespace().filter(|w| w.starts_with('/')) {
        let dest = root.join(lib.trim_start_matches('/'));
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(lib, &dest).unwrap();
    }
    let hash = run(Command::new("openssl").args(["passwd", "-6", BB_PASSWORD])).trim().to_string();
    fs::write(
        root.join("etc/passwd"),
        format!("root:x:0:0:root:/root:/bin/sh\n{BB_USER}:x:1000:1000:SCADA operator:/home/scada:/bin/sh\n"),
    )
    .unwrap();
    fs::write(root.join("etc/shadow"), format!("root:*:19000:0:99999:7:::\n{BB_USER}:{hash}:19000:0:99999:7:::\n"))
        .unwrap();
    fs::set_permissions(root.join("etc/shadow"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(root.join("etc/group"), "root:x:0:\nscada:x:1000:\n").unwrap();
    fs::write(root.join("etc/shells"), "/bin/sh\n").unwrap();
    fs::write(root.join("etc/nsswitch.conf"), "passwd: files\ngroup: files\nshadow: files\n").unwrap();
    run(Command::new("chown").args(["1000:1000"]).arg(root.join("home/scada")));
    run(Command::new("dropbearkey")
        .args(["-t", "ed25519", "-f"])
        .arg(root.join("etc/dropbear/dropbear_ed25519_host_key")));
}
