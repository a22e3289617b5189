//! Build the rule components under `rules-wasm/dist/`.
//!
//! ```sh
//! cargo run --manifest-path rules-wasm/Cargo.toml -p builder             # rebuild dist/
//! cargo run --manifest-path rules-wasm/Cargo.toml -p builder -- --check  # fail if dist/ is stale
//! cargo run --manifest-path rules-wasm/Cargo.toml -p builder -- --crate path/to/my-rule --out my-rule.wasm
//! ```
//!
//! Each crate is built for `wasm32-unknown-unknown` (no WASI: a rule gets no ambient
//! I/O) and the core module is turned into a component with `wit-component`, the
//! library behind `wasm-tools component new`. Paths are remapped so the output does not
//! depend on where the repository is checked out: CI rebuilds and compares byte for byte.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// (package, file name under dist/)
const RULES: &[(&str, &str)] = &[
    ("threshold", "threshold.wasm"),
    ("reboot", "examples/reboot.wasm"),
    ("low-disk-space", "examples/low-disk-space.wasm"),
    ("hostile-spin", "test/spin.wasm"),
    ("hostile-membomb", "test/membomb.wasm"),
    ("hostile-panic", "test/panic.wasm"),
    ("hostile-flood", "test/flood.wasm"),
    ("hostile-bigstrings", "test/bigstrings.wasm"),
    ("hostile-wasi-import", "test/wasi-import.wasm"),
    ("hostile-inventor", "test/inventor.wasm"),
    ("hostile-logger", "test/logger.wasm"),
];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().context("workspace dir")?.to_path_buf();
    if let Some(i) = args.iter().position(|a| a == "--crate") {
        let dir = PathBuf::from(args.get(i + 1).context("--crate DIR")?);
        let out = args.iter().position(|a| a == "--out").and_then(|j| args.get(j + 1)).context("--out FILE")?;
        let bytes = build_external(&dir)?;
        std::fs::write(out, bytes)?;
        println!("wrote {out}");
        return Ok(());
    }
    let check = args.iter().any(|a| a == "--check");
    let mut stale = Vec::new();
    for (package, out) in RULES {
        let component = build(&workspace, package)?;
        let path = workspace.join("dist").join(out);
        if check {
            if std::fs::read(&path).ok().as_deref() != Some(component.as_slice()) {
                stale.push(path.display().to_string());
            }
        } else {
            std::fs::create_dir_all(path.parent().context("dist dir")?)?;
            std::fs::write(&path, &component)?;
            println!("{:>8} bytes  {}", component.len(), path.display());
        }
    }
    if !stale.is_empty() {
        bail!(
            "rules-wasm/dist is stale; rebuild with `cargo run --manifest-path rules-wasm/Cargo.toml -p builder`: {}",
            stale.join(", ")
        );
    }
    if check {
        println!("rules-wasm/dist matches its sources ({} components)", RULES.len());
    }
    Ok(())
}

fn cargo_build(manifest_dir: &Path, package: Option<&str>, remap_from: &Path, quiet: bool) -> Result<()> {
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .context("CARGO_HOME or HOME")?;
    let rustflags =
        format!("--remap-path-prefix={}=/rules --remap-path-prefix={}=/cargo", remap_from.display(), home.display());
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(manifest_dir)
        .args(["build", "--release", "--target", "wasm32-unknown-unknown"])
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags.replace(' ', "\x1f"))
        .env_remove("RUSTFLAGS");
    if quiet {
        cmd.arg("--quiet");
    }
    if let Some(p) = package {
        cmd.args(["-p", p]);
    }
    let status = cmd.status().context("running cargo")?;
    if !status.success() {
        bail!("cargo build failed for {}", package.unwrap_or("the crate"));
    }
    Ok(())
}

fn componentize(module_path: &Path) -> Result<Vec<u8>> {
    let module = std::fs::read(module_path).with_context(|| format!("reading {}", module_path.display()))?;
    wit_component::ComponentEncoder::default()
        .module(&module)
        .context("the module has no component type information: is it built with monserv-rule-sdk?")?
        .validate(true)
        .encode()
        .context("the module does not implement the rule contract: does the crate call `export!(YourRule)`? (rules-wasm/README.md)")
}

fn target_dir(default: &Path) -> PathBuf {
    std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| default.join("target"))
}

fn build(workspace: &Path, package: &str) -> Result<Vec<u8>> {
    cargo_build(workspace, Some(package), workspace, true)?;
    let file = format!("{}.wasm", package.replace('-', "_"));
    componentize(&target_dir(workspace).join("wasm32-unknown-unknown/release").join(file))
}

/// A user's rule crate, anywhere (its own target dir, or its workspace's). Checks
/// what would otherwise fail late or silently: no Cargo.toml, not a `cdylib` (cargo
/// would build an rlib and an old `.wasm` could be packaged), no `export!`.
fn build_external(dir: &Path) -> Result<Vec<u8>> {
    let dir = dir.canonicalize().with_context(|| format!("--crate {}: no such directory", dir.display()))?;
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        bail!("{}: no Cargo.toml here; --crate takes the directory of a rule crate", dir.display());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(&cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--manifest-path"])
        .arg(&manifest)
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!("{}: cargo cannot read it:\n{}", manifest.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).context("cargo metadata output")?;
    let package = meta["packages"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["manifest_path"].as_str().map(Path::new) == Some(manifest.as_path())))
        .with_context(|| format!("{}: no package in it (a workspace manifest?)", manifest.display()))?;
    let name = package["name"].as_str().context("package name")?;
    let lib = package["targets"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["crate_types"].as_array().is_some_and(|c| c.iter().any(|c| c == "cdylib"))));
    let Some(lib) = lib else {
        bail!(
            "{name}: a rule crate must build a cdylib (the .wasm module the component is made from); add to {}:\n\n[lib]\ncrate-type = [\"cdylib\"]",
            manifest.display()
        );
    };
    let lib_name = lib["name"].as_str().context("lib name")?.replace('-', "_");
    let target = meta["target_directory"].as_str().map(PathBuf::from).context("target directory")?;
    let artifact = target.join("wasm32-unknown-unknown/release").join(format!("{lib_name}.wasm"));
    // Never package what an earlier build left.
    let _ = std::fs::remove_file(&artifact);
    eprintln!("building {name} for wasm32-unknown-unknown (the first build also compiles the SDK: about a minute)");
    cargo_build(&dir, Some(name), &dir, false)?;
    if !artifact.is_file() {
        bail!(
            "cargo built no {}; is wasm32-unknown-unknown installed (rustup target add wasm32-unknown-unknown)?",
            artifact.display()
        );
    }
    componentize(&artifact)
}
