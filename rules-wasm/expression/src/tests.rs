//! The language against hand-built targets (the wire types, no sandbox).

use super::lang::{self, Each, Type};
use super::*;

fn target(online: bool) -> Target {
    Target {
        key: "ssh://ops@web1:22".into(),
        hostname: "web1".into(),
        status: if online { Reachability::Online } else { Reachability::Offline },
        consecutive_failures: if online { 0 } else { 4 },
        last_error_kind: (!online).then(|| "connect".into()),
        metrics: Some(Metrics {
            hostname: "web1".into(),
            uptime_seconds: 7200,
            memory: Memory { total: 8 << 30, used: 6 << 30, free: 2 << 30, used_percent: 75.0 },
            disks: vec![Disk {
                device: "/dev/sda1".into(),
                mountpoint: "/".into(),
                fstype: "ext4".into(),
                total: 100 << 30,
                used: 85 << 30,
                free: 15 << 30,
                used_percent: 85.0,
            }],
            top_procs_by_mem: vec![Process {
                pid: 42,
                name: "postgres".into(),
                username: "pg".into(),
                rss_bytes: 1 << 30,
                percent_ram: 12.5,
                cmdline: "postgres -D /data".into(),
            }],
            cpu: Cpu { cores: 4, used_percent: 37.25, model_name: "ARM".into() },
            generated_at_utc: String::new(),
        }),
    }
}

fn eval(src: &str, t: &Target) -> String {
    let e = lang::parse(src, Each::Host, Type::Bool).unwrap_or_else(|e| panic!("{}", e.render(src)));
    lang::eval(&e, &TargetScope { t, disk: None, process: None }).show()
}

fn error(src: &str) -> String {
    lang::parse(src, Each::Host, Type::Bool).map(|_| ()).unwrap_err().render(src)
}

#[test]
fn conditions() {
    let t = target(true);
    assert_eq!(eval(r#"disk("/").used_percent > 80 and memory.used_percent > 70"#, &t), "true");
    assert_eq!(eval(r#"disk("/").used_percent > 80 and memory.used_percent > 90"#, &t), "false");
    assert_eq!(eval("memory.free < 4GiB && cpu.cores >= 4", &t), "true");
    assert_eq!(eval("uptime_seconds < 1h or not online", &t), "false");
    assert_eq!(eval("memory.used / memory.total * 100 == memory.used_percent", &t), "true");
    assert_eq!(eval(r#"matches(hostname, "web*") and process("postgres").percent_ram > 10"#, &t), "true");
    assert_eq!(eval(r#"exists(process("nginx"))"#, &t), "false");
    assert_eq!(eval("-(1 + 2) * 3 == -9 and 7 % 4 == 3 and max(1, 2) == abs(-2)", &t), "true");
}

#[test]
fn unknown_values_neither_fire_nor_recover() {
    let t = target(true);
    assert_eq!(eval(r#"disk("/data").used_percent > 80"#, &t), "unknown");
    assert_eq!(eval(r#"disk("/data").used_percent > 80 or memory.used_percent > 50"#, &t), "true");
    assert_eq!(eval(r#"disk("/data").used_percent > 80 and memory.used_percent > 90"#, &t), "false");
    assert_eq!(eval("memory.used / 0 > 1", &t), "unknown");
    // An offline host's metrics are stale; its reachability is not.
    let off = target(false);
    assert_eq!(eval("memory.used_percent > 50", &off), "unknown");
    assert_eq!(eval("not online and consecutive_failures >= 3", &off), "true");
    assert_eq!(eval(r#"last_error == "connect""#, &off), "true");
}

#[test]
fn errors_name_the_place_and_the_fix() {
    assert_eq!(
        error("memory.usd_percent > 90"),
        "line 1, column 8: memory has no field `usd_percent` (fields: total, used, free, used_percent)"
    );
    assert!(error("memry.used_percent > 90").starts_with("line 1, column 1: unknown name `memry`; names: memory,"));
    assert_eq!(
        error("memory.used_percent > 90 and\n  cpu.used_percent >"),
        "line 2, column 21: the expression ends too early"
    );
    assert_eq!(error("memory.used_percent = 90"), "line 1, column 21: `=` assigns nothing here: compare with `==`");
    assert_eq!(error("memory.used_percent"), "line 1, column 1: this is a number, expected a condition");
    assert_eq!(
        error("disk(\"/\") > 80"),
        "line 1, column 11: cannot compare a disk with a number (pick a field, e.g. .used_percent)"
    );
    assert!(error("disk.used_percent > 1").contains("set each = \"disk\""));
    assert_eq!(error("1 < 2 < 3"), "line 1, column 7: comparisons do not chain: write `a < b and b < c`");
    assert_eq!(
        error("memory.used > 10XB"),
        "line 1, column 17: unknown unit \"XB\" (units: KB MB GB TB, KiB MiB GiB TiB, s m h d)"
    );
    assert_eq!(error("hostname == 'web"), "line 1, column 13: this string is not closed");
    assert!(error("foo(1) > 2").contains("unknown function `foo`"));
    assert_eq!(error("max(1) > 0"), "line 1, column 1: max takes 2 arguments");
    assert_eq!(error(""), "line 1, column 1: empty expression");
    assert_eq!(
        error("memory.used_percent > 90 90"),
        "line 1, column 26: expected an operator (and, or, >, +, ...) or the end here"
    );
    // Hostile nesting is refused, not a stack overflow.
    let deep = format!("{}true{}", "(".repeat(10_000), ")".repeat(10_000));
    assert!(error(&deep).contains("nested deeper than 64"));
    assert!(error(&"not ".repeat(10_000)).contains("nested deeper"));
}

#[test]
fn templates_and_each() {
    let t = target(true);
    let d = &t.metrics.as_ref().unwrap().disks[0];
    let scope = TargetScope { t: &t, disk: Some(d), process: None };
    let parts = lang::template(
        "{hostname}: {disk.mountpoint} at {disk.used_percent}% ({{raw}}) {cpu.used_percent}",
        Each::Disk,
    )
    .unwrap();
    assert_eq!(lang::render(&parts, &scope), "web1: / at 85% ({raw}) 37.2");
    let e = lang::template("x {memory.nope}", Each::Host).unwrap_err();
    assert_eq!(
        e.render("x {memory.nope}"),
        "line 1, column 11: memory has no field `nope` (fields: total, used, free, used_percent)"
    );
    assert!(lang::template("x {", Each::Host).is_err());
    assert!(lang::template("x }", Each::Host).is_err());
    assert_eq!(subject_of(&scope).0, "ssh://ops@web1:22/disk//");
}

#[test]
fn globs() {
    for (p, t, ok) in [
        ("web*", "web1", true),
        ("*", "", true),
        ("w?b", "web", true),
        ("a*b*c", "axxbyc", true),
        ("a*c", "ab", false),
        ("web", "web1", false),
    ] {
        assert_eq!(lang::glob(p, t), ok, "{p} {t}");
    }
}
