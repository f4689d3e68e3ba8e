//! The component really contains WebAssembly SIMD128 arithmetic: `+simd128` in
//! `.cargo/config.toml` is silently dropped if anything sets RUSTFLAGS, and then the `wide`
//! kernels fall back to scalar code. This reads every core module inside `srvdb.wasm` and
//! counts f32x4 operators.

use srvdb_host::sandbox::SandboxConfig;
use wasmparser::{Parser, Payload};

#[test]
fn component_contains_f32x4_arithmetic() {
    let path = SandboxConfig::new().component;
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run `make component`)", path.display()));
    let mut f32x4_ops = std::collections::BTreeMap::<String, usize>::new();
    for payload in Parser::new(0).parse_all(&bytes) {
        if let Payload::CodeSectionEntry(body) = payload.expect("valid component") {
            let mut ops = body.get_operators_reader().expect("operators");
            while !ops.eof() {
                let op = format!("{:?}", ops.read().expect("operator"));
                if op.starts_with("F32x4") {
                    let name = op
                        .split(|c: char| !c.is_alphanumeric())
                        .next()
                        .unwrap_or("")
                        .to_owned();
                    *f32x4_ops.entry(name).or_default() += 1;
                }
            }
        }
    }
    eprintln!("f32x4 operators in {}: {f32x4_ops:?}", path.display());
    for needed in ["F32x4Mul", "F32x4Add"] {
        assert!(
            f32x4_ops.get(needed).copied().unwrap_or(0) > 0,
            "no {needed} in the component: SIMD128 is off"
        );
    }
}
