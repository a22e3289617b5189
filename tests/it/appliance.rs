//! The appliance image boots under QEMU (aarch64, TCG) and behaves as a gateway would:
//! it serves metrics of itself and of an SSH host, compiles and sandboxes rules on the
//! device, keeps its state (host keys, rules) on its own partition under a read-only
//! root across a reboot, and does not restart-loop on a bad config.
//! Built by `image/build-aarch64.sh` and `image/qemu/build.sh` (tests/run.sh runs both
//! before the suite).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{self, fixtures, hosts::free_port, Sshd};

/// The REST token the test image gets as a credential.
const TOKEN: &str = "appliance-test-token";

fn image_dir() -> PathBuf {
    let image = PathBuf::from(format!("{}/target/qemu", env!("CARGO_MANIFEST_DIR")));
    for f in ["vmlinuz", "initrd.cpio", "initrd-gnu.cpio", "cmdline", "state.img"] {
        assert!(
            image.join(f).exists(),
            "{} missing: run image/build-aarch64.sh and image/qemu/build.sh (tests/run.sh does)",
            image.join(f).display()
        );
    }
    image
}

/// A booted test image; killed however the test ends.
struct Vm {
    child: Child,
    console: tempfile::NamedTempFile,
    /// The files behind the firmware config entries, kept until the VM is gone.
    _secrets: tempfile::TempDir,
    port: u16,
    started: Instant,
    /// The REST and `/ws` token: the one given, or read back after a first boot.
    token: String,
}

impl Vm {
    /// Boot with `servers` (the whole target list, `local` included) and, if given, a
    /// state partition image as the first virtio disk.
    fn boot(servers: &str, state: Option<&Path>) -> Vm {
        Self::boot_with(servers, "", state)
    }

    /// The secrets (target list, REST token) go in as QEMU firmware config entries,
    /// which the image turns into credentials: on the kernel command line, or any
    /// command line, the password would show up in the process lists that monitored
    /// hosts (this machine, for other tests) report.
    fn boot_with(servers: &str, cmdline: &str, state: Option<&Path>) -> Vm {
        Self::boot_token(servers, cmdline, state, Some(TOKEN))
    }

    /// As `boot_with`; with no token the image generates one on first boot.
    fn boot_token(servers: &str, cmdline: &str, state: Option<&Path>, token: Option<&str>) -> Vm {
        let image = image_dir();
        let port = free_port();
        let console = tempfile::NamedTempFile::new().unwrap();
        let secrets = tempfile::tempdir().unwrap();
        std::fs::write(secrets.path().join("servers"), servers).unwrap();
        if let Some(token) = token {
            std::fs::write(secrets.path().join("auth_token"), token).unwrap();
        }
        // The glibc build comes as a second archive, appended to the image's.
        let initrd = if cmdline.contains("monserv.binary=gnu") {
            let both = secrets.path().join("initrd-with-gnu.cpio");
            let mut bytes = std::fs::read(image.join("initrd.cpio")).unwrap();
            bytes.extend(std::fs::read(image.join("initrd-gnu.cpio")).unwrap());
            std::fs::write(&both, bytes).unwrap();
            both
        } else {
            image.join("initrd.cpio")
        };
        let image_cmdline = std::fs::read_to_string(image.join("cmdline")).unwrap();
        let mut cmd = Command::new("qemu-system-aarch64");
        cmd.args(["-M", "virt", "-cpu", "cortex-a53", "-m", "512", "-nographic", "-no-reboot"])
            .arg("-kernel")
            .arg(image.join("vmlinuz"))
            .arg("-initrd")
            .arg(initrd)
            .args(["-append", &format!("{} {cmdline}", image_cmdline.trim())])
            .args([
                "-netdev",
                &format!("user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:18904"),
                "-device",
                "virtio-net-pci,netdev=n0,romfile=",
            ]);
        for name in ["servers", "auth_token"].into_iter().filter(|n| secrets.path().join(n).exists()) {
            cmd.arg("-fw_cfg").arg(format!("name=opt/monserv/{name},file={}", secrets.path().join(name).display()));
        }
        if let Some(disk) = state {
            cmd.arg("-drive").arg(format!("file={},if=virtio,format=raw", disk.display()));
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(console.reopen().unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("qemu-system-aarch64 (Debian package qemu-system-arm)");
        let token = token.unwrap_or_default().to_string();
        Vm { child, console, _secrets: secrets, port, started: Instant::now(), token }
    }

    fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    async fn put_rule(&self, name: &str, wasm: &[u8]) -> (u16, String) {
        let auth = format!("Bearer {}", self.token);
        support::http_send(self.addr(), "PUT", &format!("/api/v1/rules/{name}"), &[("Authorization", &auth)], wasm)
            .await
    }

    /// `GET /api/v1/rules`: the rule named `name`, if loaded.
    async fn rule(&self, name: &str) -> Option<Value> {
        let auth = format!("Bearer {}", self.token);
        let (status, body) = support::http_get(self.addr(), "/api/v1/rules", &[("Authorization", &auth)]).await;
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["data"]["rules"].as_array().unwrap().iter().find(|r| r["name"] == name).cloned()
    }

    /// Wait until the rules are loaded: they compile (emulated, seconds) beside the
    /// first rounds, which do not wait for them.
    async fn wait_rules_loaded(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (status, body) = support::http_get(self.addr(), "/api/v1/health", &[]).await;
            if status == 200 && body.contains("\"rules_loaded\":true") {
                return;
            }
            assert!(Instant::now() < deadline, "rules never loaded: {body}\n{}", self.console());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn console(&self) -> String {
        std::fs::read_to_string(self.console.path()).unwrap_or_default()
    }

    /// Wait until the console shows `text`; fail with the console after `limit`.
    async fn wait_console(&self, text: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let log = self.console();
            if log.contains(text) {
                return log;
            }
            assert!(Instant::now() < deadline, "console never showed {text:?} within {limit:?}:\n{log}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn connect(&self) -> support::Ws {
        let url = format!("ws://127.0.0.1:{}/ws?token={}", self.port, self.token);
        loop {
            if let Ok(Ok((ws, _))) =
                tokio::time::timeout(Duration::from_secs(2), tokio_tungstenite::connect_async(&url)).await
            {
                return ws;
            }
            assert!(
                self.started.elapsed() < Duration::from_secs(120),
                "no /ws within 120 s; console:\n{}",
                self.console()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A file on the ext4 state image of a VM that was killed, as the next mount would see
/// it: a copy gets its journal replayed (e2fsck), then debugfs reads the file.
fn read_from_image(image: &Path, file: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("state.img");
    std::fs::copy(image, &copy).unwrap();
    let fsck = Command::new("e2fsck").arg("-fy").arg(&copy).output().expect("e2fsck");
    // 0: clean, 1: errors corrected (a replayed journal counts as that).
    assert!(matches!(fsck.status.code(), Some(0 | 1)), "e2fsck: {}", String::from_utf8_lossy(&fsck.stdout));
    let out = Command::new("debugfs").arg("-R").arg(format!("cat {file}")).arg(&copy).output().expect("debugfs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The target list for the VM: itself and `sshd` on the host; and the ssh target's key.
fn ssh_target(sshd: &Sshd) -> (String, String) {
    // The guest reaches the host's loopback as 10.0.2.2 (QEMU user networking).
    let url = format!("local,ssh://{}:{}@10.0.2.2:{}", fixtures::PW_USER, fixtures::PASSWORD_ENCODED, sshd.port);
    let key = format!("ssh://{}:***@10.0.2.2:{}", fixtures::PW_USER, sshd.port);
    (url, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appliance_image_boots_and_serves_metrics() {
    let f = fixtures::fixtures();
    let mut sshd = Sshd::start();
    let (url, key) = ssh_target(&sshd);
    let state_dir = tempfile::tempdir().unwrap();
    let state = state_dir.path().join("state.img");
    std::fs::copy(image_dir().join("state.img"), &state).unwrap();

    let vm = Vm::boot(&url, Some(&state));
    let mut ws = vm.connect().await;
    let first = support::next_json(&mut ws, Duration::from_secs(30)).await;
    let first_message = vm.started.elapsed();
    assert_eq!(first["type"], "metrics_update");
    let host = support::machine_hostname();
    let data = support::wait_metrics(&mut ws, Duration::from_secs(60), |d| {
        d["local"]["status"] == "online" && d[&key]["status"] == "online"
    })
    .await;
    let local = &data["local"];
    assert_eq!(local["hostname"], "monserv-gw", "the appliance's own /proc");
    let total = local["memory"]["total"].as_u64().unwrap();
    assert!((300 << 20..=512 << 20).contains(&total), "the VM has 512 MiB: {total}");
    assert!(local["cpu"]["cores"].as_u64().unwrap() >= 1);
    assert_eq!(data[&key]["hostname"], host.as_str(), "the SSH target on the host");
    println!(
        "boot to first metrics_update: {:.1} s; both targets online after {:.1} s",
        first_message.as_secs_f64(),
        vm.started.elapsed().as_secs_f64()
    );
    // Idle memory on the device with the built-in rule: monserv's RSS as its own `local`
    // collector sees it (the VM's top processes), after a few more rounds.
    vm.wait_rules_loaded().await;
    for _ in 0..3 {
        support::wait_metrics(&mut ws, Duration::from_secs(20), |d| d["local"]["status"] == "online").await;
    }
    let data = support::wait_metrics(&mut ws, Duration::from_secs(20), |d| d["local"]["status"] == "online").await;
    let rss = data["local"]["topProcsByMem"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "monserv")
        .and_then(|p| p["rssBytes"].as_u64())
        .expect("monserv among the VM's top processes");
    println!("idle RSS on the device: {:.1} MiB", rss as f64 / 1048576.0);
    assert!(rss <= 14 << 20, "idle RSS {rss} bytes, over the 14 MB budget");
    let console = vm.console();
    let qemu_cmdline = std::fs::read(format!("/proc/{}/cmdline", vm.child.id())).unwrap();
    for secret in [fixtures::PASSWORD, fixtures::PASSWORD_ENCODED] {
        assert!(!String::from_utf8_lossy(&qemu_cmdline).contains(secret), "password on QEMU's command line");
        assert!(!console.contains(secret), "password on the console:\n{console}");
    }
    assert!(console.contains("rcS: state partition /dev/vda on /var/lib/monserv"), "{console}");
    assert!(console.contains("rcS: root is read-only"), "{console}");
    assert!(!console.contains("Read-only file system"), "monserv wrote outside its state partition:\n{console}");
    assert_eq!(console.matches("monserv-run: starting monserv").count(), 1, "{console}");

    // Rules on the device: compiled by cranelift for aarch64 and swapped in over REST;
    // hostile ones are stopped by the deadline and by traps (signal handlers on aarch64)
    // and rejected without disturbing the running rules.
    let (status, body) = vm.put_rule("reboot", &support::dist("examples/reboot.wasm")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = vm.put_rule("spin", &support::dist("test/spin.wasm")).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("exceeded its 1s time limit"), "{body}");
    for hostile in ["panic", "membomb"] {
        let (status, body) = vm.put_rule(hostile, &support::dist(&format!("test/{hostile}.wasm"))).await;
        assert_eq!(status, 422, "{body}");
        assert!(body.contains("trapped"), "{hostile}: {body}");
    }
    assert_eq!(vm.rule("threshold").await.unwrap()["status"], "ok");
    assert_eq!(vm.rule("reboot").await.unwrap()["status"], "ok");
    assert!(vm.rule("spin").await.is_none());
    support::wait_metrics(&mut ws, Duration::from_secs(20), |d| d["local"]["status"] == "online").await;
    let console = vm.console();
    assert_eq!(console.matches("monserv-run: starting monserv").count(), 1, "monserv restarted:\n{console}");
    drop(vm);

    // The host key was pinned on the state partition (TOFU), written through to disk.
    let pub_key = std::fs::read_to_string(f.host_key_a.with_extension("pub")).unwrap();
    let pub_key: Vec<&str> = pub_key.split_whitespace().take(2).collect();
    let pinned = read_from_image(&state, "/known_hosts");
    assert_eq!(pinned.trim(), format!("[10.0.2.2]:{} {}", sshd.port, pub_key.join(" ")), "known_hosts on /dev/vda");

    // Reboot with the same partition while the host presents another key: the pin
    // survived, so the appliance refuses the host instead of trusting the new key.
    sshd.restart_with_key(f.host_key_b.clone());
    let vm = Vm::boot(&url, Some(&state));
    let mut ws = vm.connect().await;
    let data = support::wait_metrics(&mut ws, Duration::from_secs(60), |d| {
        d["local"]["status"] == "online" && d[&key]["error"].as_str().is_some_and(|e| e.contains("host key changed"))
    })
    .await;
    assert_eq!(data[&key]["status"], "offline");
    vm.wait_rules_loaded().await;
    let reboot = vm.rule("reboot").await.expect("the uploaded rule survives a reboot");
    assert_eq!((reboot["source"].as_str(), reboot["status"].as_str()), (Some("file"), Some("ok")));
    drop(vm);
    assert_eq!(read_from_image(&state, "/known_hosts"), pinned, "the pin must not be replaced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appliance_bad_config_exits_78_and_is_not_restarted() {
    // Port 99999 cannot be a TCP port: a config error, found before anything starts.
    let vm = Vm::boot("local,ssh://scada@10.0.2.2:99999", None);
    let console = vm.wait_console("monserv-run: configuration error (exit status 78)", Duration::from_secs(120)).await;
    assert!(console.contains("monserv: config error"), "{console}");
    assert!(console.contains("99999"), "the error must name the bad value:\n{console}");
    assert!(console.contains("rcS: no state partition"), "{console}");
    // BusyBox init would respawn at once; the runner must hold it like
    // RestartPreventExitStatus=78 does.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let console = vm.console();
    assert_eq!(console.matches("monserv-run: starting monserv").count(), 1, "restarted on a config error:\n{console}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appliance_glibc_build_serves_metrics() {
    // The same image runs the glibc build (image/build-aarch64.sh gnu) on Debian's glibc.
    // First boot with no token given: the image generates one (generate_auth_token in
    // its monserv.toml), 0600 on the state partition, and the API is closed without it.
    let sshd = Sshd::start();
    let (url, key) = ssh_target(&sshd);
    let state_dir = tempfile::tempdir().unwrap();
    let state = state_dir.path().join("state.img");
    std::fs::copy(image_dir().join("state.img"), &state).unwrap();
    let mut vm = Vm::boot_token(&url, "monserv.binary=gnu", Some(&state), None);
    let console = vm.wait_console("no auth_token configured: generated one", Duration::from_secs(120)).await;
    assert!(console.contains("/var/lib/monserv/auth_token"), "{console}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, _) = support::http_get(vm.addr(), "/api/v1/health", &[]).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "no API; console:\n{}", vm.console());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(support::http_get(vm.addr(), "/api/v1/servers", &[]).await.0, 401);
    vm.token = read_from_image(&state, "/auth_token").trim().to_string();
    assert_eq!(vm.token.len(), 48, "{:?}", vm.token);
    assert!(!vm.console().contains(&vm.token), "the token reached the console");
    let mut ws = vm.connect().await;
    let data = support::wait_metrics(&mut ws, Duration::from_secs(60), |d| {
        d["local"]["status"] == "online" && d[&key]["status"] == "online"
    })
    .await;
    assert_eq!(data["local"]["hostname"], "monserv-gw");
    assert_eq!(data[&key]["hostname"], support::machine_hostname().as_str());
    // Not while the first load compiles: two compiles on the one emulated CPU can
    // outlast the client's 10 s.
    vm.wait_rules_loaded().await;
    let (status, body) = vm.put_rule("reboot", &support::dist("examples/reboot.wasm")).await;
    assert_eq!(status, 200, "rules compile in the glibc build too: {body}");
    let console = vm.console();
    assert_eq!(console.matches("monserv-run: starting monserv (/usr/bin/monserv-gnu)").count(), 1, "{console}");
}
