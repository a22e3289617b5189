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

mod component;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use component::{build_external, cargo_build, componentize, target_dir};

/// (package, file name under dist/)
const RULES: &[(&str, &str)] = &[
    ("threshold", "threshold.wasm"),
    ("expression", "expression.wasm"),
    ("reboot", "examples/reboot.wasm"),
    ("low-disk-space", "examples/low-disk-space.wasm"),
    ("disk-fill", "examples/disk-fill.wasm"),
    ("sustained-cpu", "examples/sustained-cpu.wasm"),
    ("process-missing", "examples/process-missing.wasm"),
    ("memory-growth", "examples/memory-growth.wasm"),
    ("hostile-spin", "test/spin.wasm"),
    ("hostile-membomb", "test/membomb.wasm"),
    ("hostile-panic", "test/panic.wasm"),
    ("hostile-flood", "test/flood.wasm"),
    ("hostile-bigstrings", "test/bigstrings.wasm"),
    ("hostile-wasi-import", "test/wasi-import.wasm"),
    ("hostile-inventor", "test/inventor.wasm"),
    ("hostile-logger", "test/logger.wasm"),
    ("hostile-hoarder", "test/hoarder.wasm"),
    ("hostile-needy", "test/needy.wasm"),
];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().context("workspace dir")?.to_path_buf();
    if let Some(i) = args.iter().position(|a| a == "--crate") {
        let dir = PathBuf::from(args.get(i + 1).context("--crate DIR")?);
        let out = args.iter().position(|a| a == "--out").and_then(|j| args.get(j + 1)).context("--out FILE")?;
        let (_, bytes) = build_external(&dir)?;
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

fn build(workspace: &Path, package: &str) -> Result<Vec<u8>> {
    cargo_build(workspace, Some(package), workspace, true)?;
    let file = format!("{}.wasm", package.replace('-', "_"));
    componentize(&target_dir(workspace).join("wasm32-unknown-unknown/release").join(file))
}
