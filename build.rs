//! Embeds the largest data of the binary Snappy-compressed (`src/snappy.rs`, the
//! same code that decompresses it, once, on first use; `src/embedded.rs`): the
//! built-in rule components, and the texts `rule new` writes and the HTTP server
//! serves.

#[path = "src/snappy.rs"]
#[allow(dead_code)]
mod snappy;

/// (source, name in OUT_DIR before `.snappy`); `src/embedded.rs` lists the same names.
/// The last four only with the `authoring` feature (`rule new`).
const FILES: [(&str, &str); 8] = [
    ("rules-wasm/dist/threshold.wasm", "threshold.wasm"),
    ("rules-wasm/dist/expression.wasm", "expression.wasm"),
    ("src/http/page.html", "page.html"),
    ("src/http/openapi.json", "openapi.json"),
    ("rules-wasm/wit/rules.wit", "rules.wit"),
    ("rules-wasm/sdk/src/lib.rs", "sdk-lib.rs"),
    ("rules-wasm/builder/src/component.rs", "component.rs"),
    ("rules-wasm/Cargo.lock", "rules-Cargo.lock"),
];

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
    println!("cargo:rerun-if-changed=src/snappy.rs");
    Ok(())
}
