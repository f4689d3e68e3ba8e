//! Portable SIMD kernels on `wide::f32x4`: 128-bit lanes, which become WebAssembly SIMD128
//! instructions on wasm32 (with `+simd128`, set in `.cargo/config.toml`) and SSE natively.
//! Four independent accumulators hide the add latency.

use wide::f32x4;

const LANES: usize = 4;
const UNROLL: usize = 4;

/// Four lanes from the front of `s`. On wasm32 this compiles to one `v128.load` (checked in
/// the component profile's `--emit asm`), not four scalar loads.
#[inline]
fn load(s: &[f32]) -> f32x4 {
    f32x4::new([s[0], s[1], s[2], s[3]])
}

/// Inner product of two equal-length slices.
pub fn dot_f32_simd128(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let step = LANES * UNROLL;
    let mut acc = [f32x4::ZERO; UNROLL];
    let mut i = 0;
    while i + step <= n {
        for (u, slot) in acc.iter_mut().enumerate() {
            let at = i + u * LANES;
            *slot = load(&a[at..at + LANES]).mul_add(load(&b[at..at + LANES]), *slot);
        }
        i += step;
    }
    while i + LANES <= n {
        acc[0] = load(&a[i..i + LANES]).mul_add(load(&b[i..i + LANES]), acc[0]);
        i += LANES;
    }
    let mut sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])).reduce_add();
    for j in i..n {
        sum += a[j] * b[j];
    }
    sum
}

/// Squared Euclidean distance of two equal-length slices.
pub fn l2sq_f32_simd128(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let step = LANES * UNROLL;
    let mut acc = [f32x4::ZERO; UNROLL];
    let mut i = 0;
    while i + step <= n {
        for (u, slot) in acc.iter_mut().enumerate() {
            let at = i + u * LANES;
            let d = load(&a[at..at + LANES]) - load(&b[at..at + LANES]);
            *slot = d.mul_add(d, *slot);
        }
        i += step;
    }
    while i + LANES <= n {
        let d = load(&a[i..i + LANES]) - load(&b[i..i + LANES]);
        acc[0] = d.mul_add(d, acc[0]);
        i += LANES;
    }
    let mut sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])).reduce_add();
    for j in i..n {
        let d = a[j] - b[j];
        sum += d * d;
    }
    sum
}
