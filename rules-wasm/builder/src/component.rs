//! Building a rule crate into a component: shared by this builder and by the build
//! tool `monserv rule new` puts in every scaffolded rule crate (which embeds this
//! file), so both check and report the same things.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

pub fn cargo_build(manifest_dir: &Path, package: Option<&str>, remap_from: &Path, quiet: bool) -> Result<()> {
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

pub fn componentize(module_path: &Path) -> Result<Vec<u8>> {
    let module = std::fs::read(module_path).with_context(|| format!("reading {}", module_path.display()))?;
    wit_component::ComponentEncoder::default()
        .module(&module)
        .context("the module has no component type information: is it built with monserv-rule-sdk?")?
        .validate(true)
        .encode()
        .context("the module does not implement the rule contract: does the crate call `export!(YourRule)`? (rules-wasm/README.md)")
}

pub fn target_dir(default: &Path) -> PathBuf {
    std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| default.join("target"))
}

/// A user's rule crate, anywhere (its own target dir, or its workspace's). Checks
/// what would otherwise fail late or silently: no Cargo.toml, not a `cdylib` (cargo
/// would build an rlib and an old `.wasm` could be packaged), no `export!`.
pub fn build_external(dir: &Path) -> Result<(String, Vec<u8>)> {
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
    Ok((name.to_string(), componentize(&artifact)?))
}
