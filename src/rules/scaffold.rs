//! `monserv rule new NAME` and `monserv rule build`: start a custom rule without a
//! monserv checkout.
//!
//! `new` writes a standalone crate: the rule (a commented example with a test file),
//! the SDK and the WIT contract of this very binary (vendored, so the rule is built
//! against the contract the daemon speaks), a small build tool (the same component
//! step the repository's builder uses, `rules-wasm/builder/src/component.rs`) and
//! the repository's `Cargo.lock`, so a build resolves the versions CI builds with.
//! `build` runs that tool through cargo, showing cargo's progress; the tool checks
//! for a `cdylib` and for `export!` and never packages a stale artifact.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::loader::valid_name;

use crate::embedded::{component_step, rules_lock, rules_wit, sdk_lib, text};
/// The build tool's package name inside every scaffold.
const BUILD_TOOL: &str = "monserv-rule-build";

fn files(name: &str) -> Vec<(&'static str, String)> {
    let lib = name.replace('-', "_");
    let title = name.to_string();
    vec![
        (
            "Cargo.toml",
            format!(
                r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"
rust-version = "1.94"
publish = false

[lib]
# A rule is a cdylib: the .wasm module its component is made from.
crate-type = ["cdylib"]

[dependencies]
monserv-rule-sdk = {{ path = "sdk" }}

# The rule, its SDK and its build tool; `cargo build` builds the rule only.
[workspace]
members = [".", "sdk", "build"]
default-members = ["."]

[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
panic = "abort"
strip = true
"#
            ),
        ),
        ("src/lib.rs", RULE_TEMPLATE.replace("RULE_NAME", &title).replace("RULE_LIB", &lib)),
        ("tests/cases.toml", CASES_TEMPLATE.replace("RULE_NAME", &title)),
        ("README.md", README_TEMPLATE.replace("RULE_NAME", &title)),
        (".gitignore", "/target\n/*.wasm\n".into()),
        ("Cargo.lock", text(rules_lock()).to_string()),
        (
            "sdk/Cargo.toml",
            format!(
                r#"[package]
name = "monserv-rule-sdk"
version = "{}"
description = "monserv rule SDK, vendored by `monserv rule new` (contract of monserv {})"
edition = "2021"
rust-version = "1.94"
publish = false

[dependencies]
wit-bindgen = {{ version = "={}", default-features = false, features = ["macros", "realloc", "std"] }}
"#,
                env!("CARGO_PKG_VERSION"),
                env!("CARGO_PKG_VERSION"),
                locked("wit-bindgen")
            ),
        ),
        ("sdk/src/lib.rs", text(sdk_lib()).replace("path: \"../wit\"", "path: \"wit\"")),
        ("sdk/wit/rules.wit", text(rules_wit()).to_string()),
        (
            "build/Cargo.toml",
            format!(
                r#"[package]
name = "{BUILD_TOOL}"
version = "{}"
edition = "2021"
rust-version = "1.94"
publish = false

[dependencies]
anyhow = "1"
serde_json = "1"
wit-component = "={}"
"#,
                env!("CARGO_PKG_VERSION"),
                locked("wit-component")
            ),
        ),
        ("build/src/component.rs", text(component_step()).to_string()),
        ("build/src/main.rs", BUILD_MAIN.to_string()),
    ]
}

/// The newest version of `package` in the embedded lock file: the scaffold pins what
/// the repository builds with, and follows it when that changes.
fn locked(package: &str) -> String {
    let mut versions: Vec<Vec<u64>> = text(rules_lock())
        .split("[[package]]")
        .filter(|block| block.contains(&format!("\nname = \"{package}\"\n")))
        .filter_map(|block| block.split("\nversion = \"").nth(1)?.split('"').next())
        .map(|v| v.split('.').map(|n| n.parse().unwrap_or(0)).collect())
        .collect();
    versions.sort();
    versions.last().map(|v| v.iter().map(u64::to_string).collect::<Vec<_>>().join(".")).unwrap_or_default()
}

/// Write the crate; returns what to tell the user.
pub fn new(name_arg: &Path, out: Option<&Path>) -> Result<String, String> {
    let name = name_arg.to_string_lossy().to_string();
    if !valid_name(&name) {
        return Err(format!(
            "{name:?}: a rule name is 1-64 lowercase letters, digits, '-' or '_' (it names the .wasm and its alerts)"
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(format!("{name:?}: start the name with a letter (it is also a Rust crate name)"));
    }
    let dir = out.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(&name));
    if dir.exists() {
        return Err(format!("{}: already exists; pick another name or --out DIR", dir.display()));
    }
    for (path, text) in files(&name) {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let d = dir.display();
    Ok(format!(
        "created {d}/ (rule {name}, contract monserv:rules of monserv {})\n\
         next:\n  cd {d}\n  monserv rule build                              # writes {name}.wasm\n  \
         monserv rule test {name}.wasm --cases tests/cases.toml\n  \
         cp {name}.wasm /var/lib/monserv/rules/               # or PUT /api/v1/rules/{name}\n\
         needs: rustup target add wasm32-unknown-unknown\n",
        env!("CARGO_PKG_VERSION")
    ))
}

/// Build the rule crate in `dir` into `<name>.wasm` (or `out`).
pub fn build(dir: Option<&Path>, out: Option<&Path>) -> Result<String, String> {
    let dir = dir.unwrap_or(Path::new("."));
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(format!("{}: no Cargo.toml; run this in a crate made by `monserv rule new NAME`", dir.display()));
    }
    if !dir.join("build/Cargo.toml").is_file() {
        return Err(format!(
            "{}: no build/ tool here (not made by `monserv rule new`); build a crate of your own with \
             `cargo run --manifest-path <monserv>/rules-wasm/Cargo.toml -p builder -- --crate DIR --out FILE`",
            dir.display()
        ));
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["run", "--release", "--manifest-path"]).arg(&manifest).args(["-p", BUILD_TOOL, "--"]).arg(dir);
    if let Some(out) = out {
        cmd.arg(out);
    }
    // The tool's own build (the first time, about a minute) and the rule's show
    // cargo's progress on stderr.
    let status = cmd.status().map_err(|e| format!("cannot run cargo (is Rust installed?): {e}"))?;
    if !status.success() {
        return Err("the build failed (see above)".into());
    }
    Ok(String::new())
}

const BUILD_MAIN: &str = r#"//! Build this rule into a component: `monserv rule build` runs this with cargo.
//! Usage: monserv-rule-build CRATE_DIR [OUT.wasm]

mod component;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().unwrap_or_else(|| ".".into()));
    let (name, bytes) = component::build_external(&dir)?;
    let out = args.next().map(std::path::PathBuf::from).unwrap_or_else(|| dir.join(format!("{name}.wasm")));
    std::fs::write(&out, &bytes)?;
    println!("wrote {} ({} bytes)", out.display(), bytes.len());
    Ok(())
}
"#;

const RULE_TEMPLATE: &str = r#"//! RULE_NAME: a monserv alert rule.
//!
//! monserv calls `evaluate` once per poll round with a snapshot of every target and
//! the keys of this rule's alerts that are firing. Return an `alert` for every
//! condition that holds (monserv sends it once, not every round) and a `recovery`
//! for a firing key that is fine again. Keys start with the target's key and stay
//! the same across rounds. The rule runs sandboxed: no clock, files or network;
//! settings come from RULE_NAME.toml beside RULE_NAME.wasm, read with `config_*`.
//! Each setting declares what it accepts (`percent`, `number(..).range(..)`,
//! `integer`, `boolean`, `choice`, `text`, `list`): monserv refuses a settings file
//! that does not fit, with its line, before the rule runs.
//!
//! Build: `monserv rule build`. Test: `monserv rule test RULE_NAME.wasm --cases tests/cases.toml`.

use monserv_rule_sdk::*;

struct Rule;

impl Guest for Rule {
    /// Name, version and the settings this rule accepts (monserv refuses others, and
    /// values outside what each one declares).
    fn describe() -> RuleInfo {
        RuleInfo {
            name: String::from("RULE_NAME"),
            version: String::from(env!("CARGO_PKG_VERSION")),
            config: vec![
                percent("memory_percent", 90.0, "alert when memory used exceeds this percentage"),
                number("margin", 5.0, "recover only below memory_percent minus this").range(0.0, 50.0),
            ],
            // Facts beyond the snapshot this rule reads with `fact(...)`, e.g.
            // `Fact::ProcessCount("historian".into())`; the hosts are asked only while
            // it is loaded. The past is there too: `history(...)`, and `state` for
            // memory of its own (rules-wasm/README.md, "Rules that remember").
            needs: vec![],
        }
    }

    fn evaluate(snapshot: Snapshot, active_keys: Vec<String>) -> Result<Vec<Event>, String> {
        let limit = config_f64("memory_percent", 90.0)?;
        let margin = config_f64("margin", 5.0)?;
        let active = Active::new(active_keys);
        let mut events = Vec::new();
        for target in &snapshot.targets {
            // An offline target's metrics are the last good ones: neither alert nor recover on them.
            let (Reachability::Online, Some(m)) = (target.status, &target.metrics) else { continue };
            let used = m.memory.used_percent;
            events.extend(level_check(
                &active,
                format!("{}/memory", target.key),
                used,
                limit,
                margin,
                || (format!("[ALERT] {} memory high", m.hostname), format!("Memory used {}% (limit {}%)", pct(used), pct(limit))),
                || (format!("[RECOVERED] {} memory", m.hostname), format!("Memory back to {}%", pct(used))),
            ));
        }
        Ok(events)
    }
}

export!(Rule);
"#;

const CASES_TEMPLATE: &str = r#"# Tests for RULE_NAME: `monserv rule test RULE_NAME.wasm --cases tests/cases.toml`.
# Each step is a poll round (or `repeat` more); `expect` lists the alerts and
# recoveries users get after it. Hosts: memory/cpu in percent, disk = { "/" = percent }.
interval = "4s"

[settings]
memory_percent = 80

[[step]]
hosts.web1 = { memory = 50 }
expect = []

[[step]]
hosts.web1 = { memory = 95 }
expect = [{ alert = "web1/memory", subject = "[ALERT] web1 memory high" }]

[[step]]
repeat = 3
expect = []  # still high: no repeated alert

[[step]]
hosts.web1 = { memory = 77 }
expect = []  # below the limit but within the margin

[[step]]
hosts.web1 = { memory = 60 }
expect = ["recovery web1/memory"]
"#;

const README_TEMPLATE: &str = r#"# RULE_NAME

A monserv alert rule. `src/lib.rs` is the rule; `sdk/` is the monserv rule SDK and
`sdk/wit/rules.wit` the contract, vendored from the monserv that created this crate;
`build/` turns the compiled module into a component.

    rustup target add wasm32-unknown-unknown    # once
    monserv rule build                          # -> RULE_NAME.wasm
    monserv rule check RULE_NAME.wasm           # contract and settings
    monserv rule test RULE_NAME.wasm --cases tests/cases.toml
    monserv rule snapshot > snap.json           # this machine, as the rule sees it
    monserv rule test RULE_NAME.wasm --snapshot snap.json

Install: copy `RULE_NAME.wasm` (and optional settings, `RULE_NAME.toml`) into the rules
directory (`/var/lib/monserv/rules` on the appliance), or
`curl -X PUT -H "Authorization: Bearer $TOKEN" --data-binary @RULE_NAME.wasm http://GATEWAY:18904/api/v1/rules/RULE_NAME`.
It is live at the next round; `GET /api/v1/rules` shows its status.
"#;

#[cfg(test)]
mod tests {
    #[test]
    fn pins_follow_the_lock_file() {
        assert_eq!(super::locked("wit-bindgen").split('.').count(), 3);
        // Two versions of wit-component are locked; the builder uses the newest.
        let newest = super::locked("wit-component");
        assert!(crate::embedded::text(crate::embedded::component_step()).contains("wit_component::ComponentEncoder"));
        assert!(
            include_str!("../../rules-wasm/builder/Cargo.toml")
                .contains(&format!("wit-component = \"{}\"", &newest[..newest.rfind('.').unwrap()])),
            "{newest}"
        );
    }
}
