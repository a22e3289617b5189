//! The appliance image boots under QEMU (aarch64, TCG) and serves metrics of itself
//! and of an SSH host, as a gateway would. Built by `image/build-aarch64.sh` and
//! `image/qemu/build.sh` (tests/run.sh runs both before the suite).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{self, fixtures, hosts::free_port, Sshd};

/// Kills the VM however the test ends.
struct Vm(Child);

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appliance_image_boots_and_serves_metrics() {
    let image = format!("{}/target/qemu", env!("CARGO_MANIFEST_DIR"));
    for f in ["vmlinuz", "initrd.cpio.gz"] {
        assert!(
            std::path::Path::new(&format!("{image}/{f}")).exists(),
            "{image}/{f} missing: run image/build-aarch64.sh and image/qemu/build.sh (tests/run.sh does)"
        );
    }
    let sshd = Sshd::start();
    // The guest reaches the host's loopback as 10.0.2.2 (QEMU user networking).
    let target = format!("ssh://{}:{}@10.0.2.2:{}", fixtures::PW_USER, fixtures::PASSWORD_ENCODED, sshd.port);
    let port = free_port();
    let console = tempfile::NamedTempFile::new().unwrap();
    let started = Instant::now();
    let _vm = Vm(Command::new("qemu-system-aarch64")
        .args(["-M", "virt", "-cpu", "cortex-a53", "-m", "512", "-nographic", "-no-reboot"])
        .args(["-kernel", &format!("{image}/vmlinuz"), "-initrd", &format!("{image}/initrd.cpio.gz")])
        .args(["-append", &format!("console=ttyAMA0 panic=-1 rdinit=/sbin/init monserv.servers={target}")])
        .args([
            "-netdev",
            &format!("user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:18904"),
            "-device",
            "virtio-net-pci,netdev=n0,romfile=",
        ])
        .stdin(Stdio::null())
        .stdout(console.reopen().unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("qemu-system-aarch64 (Debian package qemu-system-arm)"));
    let url = format!("ws://127.0.0.1:{port}/ws");
    let mut ws = loop {
        if let Ok(Ok((ws, _))) =
            tokio::time::timeout(Duration::from_secs(2), tokio_tungstenite::connect_async(&url)).await
        {
            break ws;
        }
        let log = std::fs::read_to_string(console.path()).unwrap_or_default();
        assert!(started.elapsed() < Duration::from_secs(120), "no /ws within 120 s; console:\n{log}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let first = support::next_json(&mut ws, Duration::from_secs(30)).await;
    let first_message = started.elapsed();
    assert_eq!(first["type"], "metrics_update");
    let ssh_key = format!("ssh://{}:***@10.0.2.2:{}", fixtures::PW_USER, sshd.port);
    let host = support::machine_hostname();
    let data = support::wait_metrics(&mut ws, Duration::from_secs(60), |d| {
        d["local"]["status"] == "online" && d[&ssh_key]["status"] == "online"
    })
    .await;
    let local = &data["local"];
    assert_eq!(local["hostname"], "monserv-gw", "the appliance's own /proc");
    let total = local["memory"]["total"].as_u64().unwrap();
    assert!((300 << 20..=512 << 20).contains(&total), "the VM has 512 MiB: {total}");
    assert!(local["cpu"]["cores"].as_u64().unwrap() >= 1);
    assert_eq!(data[&ssh_key]["hostname"], host.as_str(), "the SSH target on the host");
    println!(
        "boot to first metrics_update: {:.1} s; both targets online after {:.1} s",
        first_message.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
