//! Embeds the built-in rule components Snappy-compressed (`src/snappy.rs`, the same
//! code that decompresses them at start): they are the largest data in the binary.

#[path = "src/snappy.rs"]
#[allow(dead_code)]
mod snappy;

fn main() -> Result<(), String> {
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").ok_or("cargo did not set OUT_DIR")?);
    for name in ["threshold", "expression"] {
        let source = format!("rules-wasm/dist/{name}.wasm");
        println!("cargo:rerun-if-changed={source}");
        let bytes = std::fs::read(&source).map_err(|e| format!("{source}: {e}"))?;
        std::fs::write(out.join(format!("{name}.wasm.snappy")), snappy::compress(&bytes))
            .map_err(|e| format!("writing the compressed {source}: {e}"))?;
    }
    println!("cargo:rerun-if-changed=src/snappy.rs");
    Ok(())
}
