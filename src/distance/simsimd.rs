//! Native kernels from SimSIMD, which picks AVX-512, AVX2 or NEON at run time.

use simsimd::SpatialSimilarity;

/// Inner product of two equal-length slices (lengths are checked at the API boundary).
pub fn dot_f32_simsimd(a: &[f32], b: &[f32]) -> f32 {
    // SimSIMD returns None only for unequal lengths, which callers rule out.
    <f32 as SpatialSimilarity>::dot(a, b).unwrap_or(f64::NAN) as f32
}

/// Squared Euclidean distance of two equal-length slices.
pub fn l2sq_f32_simsimd(a: &[f32], b: &[f32]) -> f32 {
    <f32 as SpatialSimilarity>::l2sq(a, b).unwrap_or(f64::NAN) as f32
}

/// The instruction set SimSIMD dispatches to on this CPU.
pub fn isa_name() -> &'static str {
    use simsimd::capabilities as c;
    if c::uses_sapphire() || c::uses_genoa() || c::uses_ice() || c::uses_skylake() {
        "avx512"
    } else if c::uses_haswell() {
        "avx2"
    } else if c::uses_sve() {
        "sve"
    } else if c::uses_neon() {
        "neon"
    } else {
        "serial"
    }
}
