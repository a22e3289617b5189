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

fn cargo_build(manifest_dir: &Path, package: Option<&str>, remap_from: &Path) -> Result<()> {
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .context("CARGO_HOME or HOME")?;
    let rustflags =
        format!("--remap-path-prefix={}=/rules --remap-path-prefix={}=/cargo", remap_from.display(), home.display());
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(manifest_dir)
        .args(["build", "--release", "--target", "wasm32-unknown-unknown", "--quiet"])
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags.replace(' ', "\x1f"))
        .env_remove("RUSTFLAGS");
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
        .context("the module has no component type information (was it built with the SDK?)")?
        .validate(true)
        .encode()
        .context("encoding the component")
}

fn target_dir(default: &Path) -> PathBuf {
    std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| default.join("target"))
}

fn build(workspace: &Path, package: &str) -> Result<Vec<u8>> {
    cargo_build(workspace, Some(package), workspace)?;
    let file = format!("{}.wasm", package.replace('-', "_"));
    componentize(&target_dir(workspace).join("wasm32-unknown-unknown/release").join(file))
}

/// A user's rule crate outside this workspace (built in its own target dir).
fn build_external(dir: &Path) -> Result<Vec<u8>> {
    let dir = dir.canonicalize().with_context(|| format!("{}", dir.display()))?;
    cargo_build(&dir, None, &dir)?;
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml"))?;
    let name = manifest
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("name")
                .and_then(|r| r.trim().strip_prefix('='))
                .map(|v| v.trim().trim_matches('"').to_string())
        })
        .context("no package name in Cargo.toml")?;
    componentize(
        &target_dir(&dir).join("wasm32-unknown-unknown/release").join(format!("{}.wasm", name.replace('-', "_"))),
    )
}
