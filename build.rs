//! Embeds the largest data of the binary compressed. Snappy (`src/snappy.rs`, the
//! same code that decompresses it, once, on first use; `src/embedded.rs`): the
//! built-in rule components and the texts `rule new` writes. Gzip: the operator
//! console's files, which are sent to browsers as they are (`Content-Encoding:
//! gzip`), so the binary carries no decompressor for them.

#[path = "src/snappy.rs"]
#[allow(dead_code)]
mod snappy;

use std::io::Write;

/// (source, name in OUT_DIR before `.snappy`); `src/embedded.rs` lists the same names.
/// The last four only with the `authoring` feature (`rule new`).
const FILES: [(&str, &str); 8] = [
    ("rules-wasm/dist/threshold.wasm", "threshold.wasm"),
    ("rules-wasm/dist/expression.wasm", "expression.wasm"),
    ("src/http/openapi.json", "openapi.json"),
    // The console's page once more, for the rare client that refuses gzip.
    ("src/http/console/index.html", "index.html"),
    ("rules-wasm/wit/rules.wit", "rules.wit"),
    ("rules-wasm/sdk/src/lib.rs", "sdk-lib.rs"),
    ("rules-wasm/builder/src/component.rs", "component.rs"),
    ("rules-wasm/Cargo.lock", "rules-Cargo.lock"),
];

/// The console (`src/http/console/`), written to OUT_DIR as `<name>.gz`.
const CONSOLE: [&str; 3] = ["index.html", "console.css", "console.js"];

fn main() -> Result<(), String> {
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").ok_or("cargo did not set OUT_DIR")?);
    let authoring = std::env::var_os("CARGO_FEATURE_AUTHORING").is_some();
    for (i, (source, name)) in FILES.into_iter().enumerate() {
        if i >= 4 && !authoring {
            continue;
        }
        println!("cargo:rerun-if-changed={source}");
        let bytes = std::fs::read(source).map_err(|e| format!("{source}: {e}"))?;
        std::fs::write(out.join(format!("{name}.snappy")), snappy::compress(&bytes))
            .map_err(|e| format!("writing the compressed {source}: {e}"))?;
    }
    for name in CONSOLE {
        let source = format!("src/http/console/{name}");
        println!("cargo:rerun-if-changed={source}");
        let bytes = std::fs::read(&source).map_err(|e| format!("{source}: {e}"))?;
        // No file name and no time in the header: the build is reproducible.
        let mut gz = flate2::GzBuilder::new().mtime(0).write(Vec::new(), flate2::Compression::best());
        gz.write_all(&bytes).map_err(|e| format!("compressing {source}: {e}"))?;
        let packed = gz.finish().map_err(|e| format!("compressing {source}: {e}"))?;
        std::fs::write(out.join(format!("{name}.gz")), packed).map_err(|e| format!("writing {name}.gz: {e}"))?;
    }
    println!("cargo:rerun-if-changed=src/snappy.rs");
    Ok(())
}
