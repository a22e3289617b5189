//! What a rule may cost to compile, checked before the compiler sees it.
//!
//! Compiling is the one step the sandbox's limits do not cover: Cranelift's memory
//! grows with the size of the largest function (a 1.4 MB single-function component
//! cost about 1 GB before it was refused). So a candidate is first walked with
//! `wasmparser` (already linked by wasmtime; a walk, not a compile) and refused
//! unless every core module in it stays within [`MAX`]. Real rules are far inside
//! these bounds: the built-in rule is 80 KB with its largest function a few KB
//! (`dist_rules_are_well_inside_the_limits` below prints the numbers).

use wasmparser::{Parser, Payload};

use crate::config::RuleLimits;

/// Bounds on a rule component. With compilation one function at a time, the extra
/// memory one hostile candidate can cost is bounded by `function_body_bytes`
/// (measured in BENCHMARKS.md).
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub file_bytes: usize,
    pub code_bytes: usize,
    pub functions: usize,
    pub function_body_bytes: usize,
    pub locals_per_function: u64,
    /// Control constructs (block, loop, if) times SSA variables (locals and params)
    /// of one function: what Cranelift's SSA construction grows with (one block
    /// parameter per variable per join point). 64 KB of nested loops around 2000
    /// locals cost 1.9 GB and 84 s to compile without this bound.
    pub control_times_variables: u64,
    pub modules: usize,
    pub nesting: usize,
    pub memories_per_module: usize,
    pub tables_per_module: usize,
    pub table_elements: u64,
}

pub const MAX: Bounds = Bounds {
    file_bytes: 1 << 20,
    code_bytes: 1 << 20,
    functions: 10_000,
    function_body_bytes: 64 << 10,
    locals_per_function: 2_000,
    control_times_variables: 100_000,
    modules: 16,
    nesting: 8,
    memories_per_module: 1,
    tables_per_module: 4,
    table_elements: 100_000,
};

/// Why a candidate was refused before compiling.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{what} is {value}, more than the {limit} a rule may have")]
    Over { what: &'static str, value: u64, limit: u64 },
    #[error("not a valid WebAssembly component: {0}")]
    Malformed(String),
}

fn over(what: &'static str, value: impl TryInto<u64>, limit: impl TryInto<u64>) -> Refused {
    Refused::Over { what, value: value.try_into().unwrap_or(u64::MAX), limit: limit.try_into().unwrap_or(u64::MAX) }
}

/// What [`check`] measured (also for the benchmark and the test below).
#[derive(Debug, Default, Clone, Copy)]
pub struct Measured {
    pub modules: usize,
    pub functions: usize,
    pub code_bytes: usize,
    pub largest_function: usize,
    pub most_locals: u64,
    /// The largest `control constructs x variables` of any function.
    pub most_control_times_variables: u64,
}

/// Walk `bytes` and refuse anything over [`MAX`] (or the memory limit).
pub fn check(bytes: &[u8], limits: &RuleLimits) -> Result<Measured, Refused> {
    measure(bytes, &MAX, limits.memory_bytes as u64)
}

/// What a candidate is, from its first bytes, with the fix when it is not a component:
/// one line, never the bytes themselves beyond a short hex prefix.
pub fn kind_of_file(bytes: &[u8]) -> Result<(), Refused> {
    const BUILD: &str = "a rule is a WebAssembly component: build the crate with the rule builder \
                         (cargo run --manifest-path rules-wasm/Cargo.toml -p builder -- --crate DIR --out NAME.wasm; \
                         rules-wasm/README.md)";
    let refuse = |what: String| Err(Refused::Malformed(format!("{what}; {BUILD}")));
    match bytes {
        [] => refuse("an empty file".into()),
        [0, b'a', b's', b'm', 1, 0, 0, 0, ..] => {
            refuse("a core WebAssembly module (what cargo builds for wasm32), not a component".into())
        }
        [0, b'a', b's', b'm', ..] => Ok(()),
        [0x7f, b'E', b'L', b'F', ..] => refuse("an ELF executable or library (native code), not WebAssembly".into()),
        [b'M', b'Z', ..] => refuse("a Windows executable, not WebAssembly".into()),
        [0xcf | 0xce, 0xfa, 0xed, 0xfe, ..] => refuse("a macOS executable, not WebAssembly".into()),
        [b'(', ..] | [b'#', ..] | [b'/', b'/', ..] => {
            refuse("text (WAT or source code?), not a binary component".into())
        }
        _ => {
            let prefix: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
            refuse(format!("not WebAssembly (it starts with bytes {})", prefix.join(" ")))
        }
    }
}

pub fn measure(bytes: &[u8], b: &Bounds, memory_bytes: u64) -> Result<Measured, Refused> {
    if bytes.len() > b.file_bytes {
        return Err(over("the file size in bytes", bytes.len(), b.file_bytes));
    }
    let mut m = Measured::default();
    let mut depth = 0usize;
    // Per core module: parameter counts by type, the type of each defined function,
    // and which defined function the next code entry is.
    let (mut type_params, mut func_types, mut next_func) = (Vec::<u64>::new(), Vec::<u32>::new(), 0usize);
    let malformed = |e: wasmparser::BinaryReaderError| Refused::Malformed(e.to_string());
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(malformed)? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => {
                depth += 1;
                if depth > b.nesting {
                    return Err(over("the nesting depth of modules and components", depth, b.nesting));
                }
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::Version { encoding: wasmparser::Encoding::Module, .. } => {
                (type_params, func_types, next_func) = (Vec::new(), Vec::new(), 0);
                m.modules += 1;
                if m.modules > b.modules {
                    return Err(over("the number of core modules", m.modules, b.modules));
                }
            }
            Payload::TypeSection(reader) => {
                for group in reader.into_iter_err_on_gc_types() {
                    type_params.push(group.map_err(malformed)?.params().len() as u64);
                }
            }
            Payload::FunctionSection(reader) => {
                for ty in reader {
                    func_types.push(ty.map_err(malformed)?);
                }
            }
            Payload::MemorySection(reader) => {
                if reader.count() as usize > b.memories_per_module {
                    return Err(over("memories in one module", reader.count(), b.memories_per_module));
                }
                for memory in reader {
                    let memory = memory.map_err(malformed)?;
                    let page = 1u64 << memory.page_size_log2.unwrap_or(16);
                    let initial = memory.initial.saturating_mul(page);
                    if initial > memory_bytes {
                        return Err(over("a memory's initial size in bytes", initial, memory_bytes));
                    }
                }
            }
            Payload::TableSection(reader) => {
                if reader.count() as usize > b.tables_per_module {
                    return Err(over("tables in one module", reader.count(), b.tables_per_module));
                }
                for table in reader {
                    let initial = table.map_err(malformed)?.ty.initial;
                    if initial > b.table_elements {
                        return Err(over("a table's initial elements", initial, b.table_elements));
                    }
                }
            }
            Payload::CodeSectionStart { count, size, .. } => {
                m.functions = m.functions.saturating_add(count as usize);
                m.code_bytes = m.code_bytes.saturating_add(size as usize);
                if m.functions > b.functions {
                    return Err(over("the number of functions", m.functions, b.functions));
                }
                if m.code_bytes > b.code_bytes {
                    return Err(over("the code size in bytes", m.code_bytes, b.code_bytes));
                }
            }
            Payload::CodeSectionEntry(body) => {
                let size = body.range().len();
                m.largest_function = m.largest_function.max(size);
                if size > b.function_body_bytes {
                    return Err(over("one function's size in bytes", size, b.function_body_bytes));
                }
                let mut locals = 0u64;
                for entry in body.get_locals_reader().map_err(malformed)? {
                    let (count, _) = entry.map_err(malformed)?;
                    locals = locals.saturating_add(u64::from(count));
                }
                m.most_locals = m.most_locals.max(locals);
                if locals > b.locals_per_function {
                    return Err(over("one function's locals", locals, b.locals_per_function));
                }
                let params = func_types.get(next_func).and_then(|t| type_params.get(*t as usize)).copied().unwrap_or(0);
                next_func += 1;
                let mut control = 0u64;
                for op in body.get_operators_reader().map_err(malformed)? {
                    if matches!(
                        op.map_err(malformed)?,
                        wasmparser::Operator::Block { .. }
                            | wasmparser::Operator::Loop { .. }
                            | wasmparser::Operator::If { .. }
                    ) {
                        control += 1;
                    }
                }
                let product = control.saturating_mul(locals + params + 1);
                m.most_control_times_variables = m.most_control_times_variables.max(product);
                if product > b.control_times_variables {
                    return Err(over(
                        "one function's control constructs times its locals and params",
                        product,
                        b.control_times_variables,
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(m)
}

/// Builders of small hand-made Wasm binaries: the candidates the bounds above are
/// tested and measured with (unit tests, the suite's compile bombs, `bench`).
pub mod craft {
    /// Append `v` as unsigned LEB128.
    pub fn leb(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    /// A core module with one `() -> ()` function: `locals` i32 locals and `code`.
    pub fn module_with_code(locals: u32, code: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        leb(1, &mut body); // one local entry
        leb(u64::from(locals), &mut body);
        body.push(0x7f); // i32
        body.extend_from_slice(code);
        body.push(0x0b); // end
        let mut section = vec![1]; // one function
        leb(body.len() as u64, &mut section);
        section.extend(body);
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        m.extend([1, 4, 1, 0x60, 0, 0]); // type section: () -> ()
        m.extend([3, 2, 1, 0]); // function section: one function of type 0
        m.push(10); // code section
        leb(section.len() as u64, &mut m);
        m.extend(section);
        m
    }

    /// A component holding `module` as its one core module.
    pub fn component_of(module: &[u8]) -> Vec<u8> {
        let mut c = b"\0asm\x0d\0\x01\0".to_vec();
        c.push(1); // core module section
        leb(module.len() as u64, &mut c);
        c.extend_from_slice(module);
        c
    }
}

#[cfg(test)]
mod tests {
    use super::craft::module_with_code;
    use super::*;

    fn dist(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/rules-wasm/dist/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn dist_rules_are_well_inside_the_limits() {
        for name in ["threshold.wasm", "examples/low-disk-space.wasm", "examples/reboot.wasm", "test/flood.wasm"] {
            let m = check(&dist(name), &RuleLimits::default()).unwrap();
            println!("{name}: {m:?}");
            assert!(m.largest_function * 4 < MAX.function_body_bytes, "{name}: {m:?}");
            assert!(m.functions * 10 < MAX.functions && m.most_locals * 4 < MAX.locals_per_function, "{m:?}");
        }
    }

    fn module_with_function(locals: u32, nops: usize) -> Vec<u8> {
        module_with_code(locals, &vec![0x01; nops])
    }

    #[test]
    fn bombs_are_refused_naming_the_limit() {
        let l = RuleLimits::default();
        assert!(check(&module_with_function(10, 100), &l).is_ok());
        assert_eq!(
            check(&module_with_function(1, 200_000), &l).unwrap_err().to_string(),
            "one function's size in bytes is 200004, more than the 65536 a rule may have"
        );
        assert_eq!(
            check(&module_with_function(u32::MAX, 1), &l).unwrap_err().to_string(),
            "one function's locals is 4294967295, more than the 2000 a rule may have"
        );
        // 200 nested loops around 2000 locals: small, but 400k SSA block parameters.
        let loops: Vec<u8> = [[0x03u8, 0x40].repeat(200), vec![0x0b; 200]].concat();
        assert_eq!(
            check(&module_with_code(1999, &loops), &l).unwrap_err().to_string(),
            "one function's control constructs times its locals and params is 400000, more than the 100000 a rule may have"
        );
        assert!(check(&module_with_code(10, &loops), &l).is_ok());
        let big = vec![0u8; (1 << 20) + 1];
        assert!(check(&big, &l).unwrap_err().to_string().starts_with("the file size in bytes is 1048577"));
        assert!(matches!(check(b"\0asm garbage", &l), Err(Refused::Malformed(_))));
        // A memory that starts bigger than the rule's memory cap.
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        m.extend([5, 4, 1, 0, 0x80, 0x08]); // memory section: min 1024 pages = 64 MiB
        assert!(check(&m, &l).unwrap_err().to_string().starts_with("a memory's initial size in bytes is 67108864"));
    }
}
