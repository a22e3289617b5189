//! Collection from real hosts: OpenSSH (password and key), a BusyBox-only dropbear
//! host, and the local machine, all in one daemon.

use std::time::Duration;

use serde_json::Value;

use crate::support::{self, fixtures, BusyBoxHost, Sshd, TestDaemon};

fn host<'a>(data: &'a Value, key: &str) -> &'a Value {
    data.get(key)
        .unwrap_or_else(|| panic!("no key {key:?} in {:?}", data.as_object().map(|o| o.keys().collect::<Vec<_>>())))
}

fn root_disk(m: &Value) -> &Value {
    m["disks"].as_array().unwrap().iter().find(|d| d["mountpoint"] == "/").unwrap_or_else(|| panic!("no / in {m:#}"))
}

fn all_online(data: &Value) -> bool {
    data.as_object().is_some_and(|o| o.values().all(|m| m["status"] == "online"))
}

/// The user name this machine's passwd gives the process `pid` now (its real UID),
/// or the UID as text; `None` if the process is gone.
fn user_of_pid(pid: u64) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uid = status.lines().find(|l| l.starts_with("Uid:"))?.split_whitespace().nth(1)?.to_string();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let name = passwd.lines().map(|l| l.split(':').collect::<Vec<_>>()).find(|f| f.len() > 2 && f[2] == uid);
    Some(name.map_or(uid, |f| f[0].to_string()))
}

/// Sorted by RSS, percentages consistent, and each user name the one the host's own
/// passwd gives the process's UID (`user_of` answers for the host).
fn assert_procs_sorted_with_users(m: &Value, user_of: impl Fn(&Value) -> Option<String>) {
    let procs = m["topProcsByMem"].as_array().unwrap();
    assert!(!procs.is_empty(), "no processes: {m:#}");
    assert!(procs.len() <= 5);
    let rss: Vec<u64> = procs.iter().map(|p| p["rssBytes"].as_u64().unwrap()).collect();
    assert!(rss.windows(2).all(|w| w[0] >= w[1]), "not sorted by RSS: {rss:?}");
    let mut checked = 0;
    for p in procs {
        let user = p["username"].as_str().unwrap();
        if let Some(expected) = user_of(p) {
            assert_eq!(user, expected, "{p}");
            checked += 1;
        }
        assert!(p["rssBytes"].as_u64().unwrap() > 0);
        let pct = p["percentRAM"].as_f64().unwrap();
        let expect = p["rssBytes"].as_f64().unwrap() / m["memory"]["total"].as_f64().unwrap() * 100.0;
        assert!((pct - expect).abs() < 0.01, "{pct} vs {expect}");
    }
    assert!(checked > 0, "every listed process exited before it could be checked: {procs:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_busybox_and_local_report_real_values() {
    let sshd = Sshd::start();
    let bb = BusyBoxHost::start("bb-plc-01");
    let targets = vec![sshd.url_password(), sshd.url_key(), bb.url(), "local".to_string()];
    let d = TestDaemon::start(&targets, "poll_interval_seconds = 1").await;
    let mut ws = d.connect().await;
    let data = support::wait_metrics(&mut ws, Duration::from_secs(20), all_online).await;

    let pw_key = format!("ssh://{}:***@127.0.0.1:{}", support::fixtures::PW_USER, sshd.port);
    let mut keys: Vec<&String> = data.as_object().unwrap().keys().collect();
    keys.sort();
    let bb_key = format!("ssh://scada:***@127.0.0.1:{}", bb.port);
    let mut expected = vec![&pw_key, &targets[1], &bb_key, &targets[3]];
    expected.sort();
    assert_eq!(keys, expected);

    let mem_total = support::machine_mem_total();
    let hostname = support::machine_hostname();
    for (key, expect_host) in [
        (pw_key.as_str(), hostname.as_str()),
        (sshd.url_key().as_str(), hostname.as_str()),
        ("local", hostname.as_str()),
    ] {
        let m = host(&data, key);
        assert_eq!(m["hostname"], expect_host, "{key}");
        assert!(m["uptimeSeconds"].as_u64().unwrap() > 0, "{key}");
        assert_eq!(m["memory"]["total"].as_u64().unwrap(), mem_total, "{key}");
        let root = root_disk(m);
        assert_eq!(root["fstype"], support::fstype_of("/"), "{key}");
        assert!(root["total"].as_u64().unwrap() > root["used"].as_u64().unwrap());
        assert!(m["disks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| !["proc", "sysfs", "tmpfs", "devtmpfs", "cgroup2"].contains(&d["fstype"].as_str().unwrap())));
        assert!(m["cpu"]["cores"].as_u64().unwrap() >= 1);
        // This machine's processes: checked against its own /proc and passwd.
        assert_procs_sorted_with_users(m, |p| user_of_pid(p["pid"].as_u64().unwrap()));
    }

    // The BusyBox host: its own hostname and PID namespace, same kernel.
    let m = host(&data, &format!("ssh://scada:***@127.0.0.1:{}", bb.port));
    assert_eq!(m["hostname"], "bb-plc-01");
    assert!(m["uptimeSeconds"].as_u64().unwrap() > 0);
    assert_eq!(m["memory"]["total"].as_u64().unwrap(), mem_total);
    let root = root_disk(m);
    assert_eq!(root["fstype"], support::fstype_of(&fixtures().bb_root.display().to_string()));
    // The BusyBox host's passwd has root (0) and scada (1000); its PIDs are its own.
    assert_procs_sorted_with_users(m, |p| Some(if p["username"] == "root" { "root" } else { "scada" }.to_string()));
    let procs = m["topProcsByMem"].as_array().unwrap();
    let init =
        procs.iter().find(|p| p["pid"] == 1).unwrap_or_else(|| panic!("pid 1 (dropbear) not in top list: {procs:#?}"));
    assert_eq!(init["name"], "dropbear");
    assert_eq!(init["username"], "root");
    assert!(init["cmdline"].as_str().unwrap().starts_with("/usr/sbin/dropbear -F -E -p 127.0.0.1:"), "{init}");
    assert!(
        procs.iter().all(|p| p["pid"].as_u64().unwrap() < 100),
        "PIDs should be from the host's own namespace: {procs:#?}"
    );

    // CPU usage comes from deltas between polls, not the average since boot: with
    // every core spinning, this machine's targets report it within a few rounds.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hogs: Vec<_> = (0..std::thread::available_parallelism().map_or(2, |n| n.get()))
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    let busy = |d: &Value| d["local"]["cpu"]["usedPercent"].as_f64().is_some_and(|p| p >= 50.0);
    let seen =
        tokio::time::timeout(Duration::from_secs(15), support::wait_metrics(&mut ws, Duration::from_secs(15), busy))
            .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    hogs.into_iter().for_each(|h| h.join().unwrap());
    assert!(seen.is_ok(), "local never reported the spinning cores as busy");
    assert!(d.shutdown().await, "daemon did not stop in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ssh_connection_serves_many_polls() {
    let sshd = Sshd::start();
    // 1 s rounds: even on a loaded machine no poll hits its deadline (which would,
    // rightly, drop the session).
    let d = TestDaemon::start(&[sshd.url_password()], "poll_interval_seconds = 1").await;
    let mut ws = d.connect().await;
    for _ in 0..5 {
        support::wait_metrics(&mut ws, Duration::from_secs(10), all_online).await;
    }
    assert_eq!(sshd.accepted_logins(support::fixtures::PW_USER), 1, "expected one persistent session");
    assert!(d.shutdown().await);
}
