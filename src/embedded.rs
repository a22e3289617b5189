//! Data built into the binary, Snappy-compressed by `build.rs` (about 110 KB less on
//! the appliance) and decompressed once, on first use.

/// Decompress an embedded file. It was compressed by this same code at build time;
/// were it corrupt anyway, it is logged and empty (a rule then fails to load as
/// invalid, a page is blank) rather than a panic.
fn unpack(packed: &[u8], name: &str) -> Vec<u8> {
    crate::snappy::decompress(packed, 16 << 20).unwrap_or_else(|e| {
        tracing::error!(file = name, error = ?e, "embedded file is corrupt");
        Vec::new()
    })
}

macro_rules! embedded {
    ($(#[$doc:meta])* $fn:ident, $file:literal) => {
        $(#[$doc])*
        pub fn $fn() -> &'static [u8] {
            static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
            BYTES.get_or_init(|| unpack(include_bytes!(concat!(env!("OUT_DIR"), "/", $file, ".snappy")), $file))
        }
    };
}

/// An embedded text (all of them are UTF-8 source files).
pub fn text(bytes: &'static [u8]) -> &'static str {
    std::str::from_utf8(bytes).unwrap_or_default()
}

embedded!(
    /// The built-in threshold rule (`rules-wasm/dist/threshold.wasm`; CI checks it matches its source).
    threshold_wasm,
    "threshold.wasm"
);
embedded!(
    /// The expression component (`rules-wasm/dist/expression.wasm`).
    expression_wasm,
    "expression.wasm"
);
#[cfg(feature = "authoring")]
embedded!(
    /// The rule contract, vendored into scaffolds.
    rules_wit,
    "rules.wit"
);
#[cfg(feature = "authoring")]
embedded!(
    /// The guest SDK's source, vendored into scaffolds.
    sdk_lib,
    "sdk-lib.rs"
);
#[cfg(feature = "authoring")]
embedded!(
    /// The builder's component step, the scaffold's build tool.
    component_step,
    "component.rs"
);
#[cfg(feature = "authoring")]
embedded!(
    /// `rules-wasm/Cargo.lock`: scaffolds build with the versions CI builds with.
    rules_lock,
    "rules-Cargo.lock"
);
embedded!(
    /// The console's page, for a client that refuses gzip (`console::INDEX_HTML`).
    index_html,
    "index.html"
);
/// The operator console's files, gzip-compressed (sent as they are).
pub mod console {
    pub const INDEX_HTML: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/index.html.gz"));
    pub const CONSOLE_CSS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/console.css.gz"));
    pub const CONSOLE_JS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/console.js.gz"));
}
embedded!(
    /// The OpenAPI description of the REST API.
    openapi_json,
    "openapi.json"
);

#[cfg(test)]
mod tests {
    #[test]
    fn every_embedded_file_is_its_source() {
        let root = env!("CARGO_MANIFEST_DIR");
        let read = |p: &str| std::fs::read(format!("{root}/{p}")).unwrap();
        assert_eq!(super::threshold_wasm(), read("rules-wasm/dist/threshold.wasm"));
        assert_eq!(super::expression_wasm(), read("rules-wasm/dist/expression.wasm"));
        #[cfg(feature = "authoring")]
        {
            assert_eq!(super::rules_wit(), read("rules-wasm/wit/rules.wit"));
            assert_eq!(super::sdk_lib(), read("rules-wasm/sdk/src/lib.rs"));
            assert_eq!(super::component_step(), read("rules-wasm/builder/src/component.rs"));
            assert_eq!(super::rules_lock(), read("rules-wasm/Cargo.lock"));
        }
        assert_eq!(super::index_html(), read("src/http/console/index.html"));
        for (packed, file) in [
            (super::console::INDEX_HTML, "index.html"),
            (super::console::CONSOLE_CSS, "console.css"),
            (super::console::CONSOLE_JS, "console.js"),
        ] {
            let mut text = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(packed), &mut text).unwrap();
            assert_eq!(text, read(&format!("src/http/console/{file}")), "{file}");
        }
        assert_eq!(super::openapi_json(), read("src/http/openapi.json"));
    }
}
