//! Code-scoring kernels: the integer dot product of int8 codes and the popcount dot product
//! of bit codes with a 4-bit query, and the comparison of scores with a threshold.
//! [`scalar`] is the reference every SIMD path is tested against; [`Kernel::best`] picks the
//! best path for the CPU once (AVX-512 VNNI + VPOPCNTDQ + IFMA, AVX2 + POPCNT, SIMD128 on
//! wasm32).
//!
//! Every block kernel scores the codes of consecutive rows (`code_len` bytes each) against
//! one prepared query: the shapes are checked once per block, and a block whose shapes do not
//! fit a SIMD path (never produced by the engine) goes to the scalar reference, which cannot
//! read out of bounds.

pub mod scalar;
#[cfg(target_arch = "wasm32")]
mod simd128;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::sync::OnceLock;

/// Queries in one packed int8 group: fifteen lanes, and one that sums each row's code.
pub const PACKED_I8_QUERIES: usize = 15;

/// Up to [`PACKED_I8_QUERIES`] int8 queries of one dimension, packed for
/// [`Kernel::dot_i8_block_packed`]: line `s` holds components `4s..4s + 4` of each query as
/// unsigned `q + 128` (lane `j`, zero past the dimension) and, in lane 15, ones (zero past
/// the dimension), so `vpdpbusd` against a row's broadcast code bytes sums each query's
/// products in its lane and the row's code in lane 15. The queries are kept as they are too,
/// for kernels without a packed path.
pub struct PackedI8 {
    lines: Vec<Line64>,
    flat: Vec<i8>,
    queries: usize,
    dim: usize,
}

/// Sixty-four bytes aligned to a cache line, loaded with one aligned load.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub struct Line64([u8; 64]);

impl PackedI8 {
    /// Packs `queries` (each `dim` components); `None` for none, more than
    /// [`PACKED_I8_QUERIES`], or a query of another length.
    pub fn new(queries: &[&[i8]], dim: usize) -> Option<Self> {
        if queries.is_empty()
            || queries.len() > PACKED_I8_QUERIES
            || queries.iter().any(|q| q.len() != dim)
        {
            return None;
        }
        let mut lines = vec![Line64([0; 64]); dim.div_ceil(4)];
        for (s, line) in lines.iter_mut().enumerate() {
            for t in 0..4 {
                let d = 4 * s + t;
                if d >= dim {
                    break;
                }
                for (j, q) in queries.iter().enumerate() {
                    // -128..=127 + 128: 0..=255.
                    line.0[4 * j + t] = (i16::from(q[d]) + 128) as u8;
                }
                line.0[4 * 15 + t] = 1;
            }
        }
        Some(PackedI8 {
            lines,
            flat: queries.concat(),
            queries: queries.len(),
            dim,
        })
    }

    /// How many queries are packed.
    pub fn count(&self) -> usize {
        self.queries
    }
}

/// One implementation of the block kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// `scalar.rs`: the reference.
    Scalar,
    /// AVX2 (`vpmaddubsw` on |code| x sign-adjusted query, exact) and POPCNT.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX-512 VNNI (`vpdpbusd` on code + 128 x query, minus 128 * sum(query)), VPOPCNTDQ
    /// and IFMA (the weights of the binary query's bit planes).
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// WebAssembly SIMD128 (`i32x4.dot_i16x8_s`) and `i64.popcnt`.
    #[cfg(target_arch = "wasm32")]
    Simd128,
}

impl Kernel {
    /// The fastest kernel this CPU runs, detected once.
    pub fn best() -> Kernel {
        static BEST: OnceLock<Kernel> = OnceLock::new();
        *BEST.get_or_init(|| *Kernel::available().last().unwrap_or(&Kernel::Scalar))
    }

    /// Every kernel this CPU runs, slowest first (tests force each one).
    pub fn available() -> Vec<Kernel> {
        #[allow(unused_mut)] // only the x86_64 and wasm32 builds add paths
        let mut kernels = vec![Kernel::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if x86::has_avx2() {
                kernels.push(Kernel::Avx2);
            }
            if x86::has_avx512() {
                kernels.push(Kernel::Avx512);
            }
        }
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        kernels.push(Kernel::Simd128);
        kernels
    }

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Scalar => "scalar",
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => "avx2+popcnt",
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => "avx512-vnni+vpopcntdq",
            #[cfg(target_arch = "wasm32")]
            Kernel::Simd128 => "simd128",
        }
    }

    /// `out[r] = sum_d q[d] * code_r[d]` for each `code_len`-byte code in `codes` (its first
    /// `q.len()` bytes, as i8), for `min(out.len(), codes.len() / code_len)` rows. Exact for
    /// any code bytes when `q` is in `-127..=127` (what [`super::Codebook::prepare`] makes).
    pub fn dot_i8_block(self, q: &[i8], codes: &[u8], code_len: usize, out: &mut [i32]) {
        if code_len == 0 || code_len < q.len() {
            out.fill(0);
            return;
        }
        let rows = out.len().min(codes.len() / code_len);
        let (codes, out) = (&codes[..rows * code_len], &mut out[..rows]);
        match self {
            Kernel::Scalar => scalar::dot_i8_block(q, codes, code_len, out),
            // SAFETY: the CPU has AVX2 (checked in the guard: the variant alone proves
            // nothing, anyone can name it); shapes were checked above.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 if x86::has_avx2() => unsafe {
                x86::dot_i8_block_avx2(q, codes, code_len, out)
            },
            // SAFETY: the CPU has AVX-512 F/BW/VNNI/VPOPCNTDQ/IFMA (the guard); shapes checked.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 if x86::has_avx512() => unsafe {
                x86::dot_i8_block_avx512(q, codes, code_len, out)
            },
            #[cfg(target_arch = "wasm32")]
            Kernel::Simd128 => simd128::dot_i8_block(q, codes, code_len, out),
            #[allow(unreachable_patterns)] // a named x86 path on a CPU without it
            _ => scalar::dot_i8_block(q, codes, code_len, out),
        }
    }

    /// True when this kernel scores int8 queries in packed groups ([`PackedI8`]).
    pub fn scores_packed_i8(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        if self == Kernel::Avx512 {
            return x86::has_avx512();
        }
        false
    }

    /// [`Kernel::dot_i8_block`] for every query of `packed` at once: `out[j * rows + r]` for
    /// query `j` and row `r`, `rows = min(out.len() / queries, codes.len() / code_len)`.
    /// Kernels without a packed path score the queries one at a time.
    pub fn dot_i8_block_packed(
        self,
        packed: &PackedI8,
        codes: &[u8],
        code_len: usize,
        out: &mut [i32],
    ) {
        let (nq, dim) = (packed.queries, packed.dim);
        if nq == 0 || code_len == 0 || code_len < 4 * packed.lines.len() {
            out.fill(0);
            return;
        }
        let rows = (out.len() / nq).min(codes.len() / code_len);
        let (codes, out) = (&codes[..rows * code_len], &mut out[..rows * nq]);
        #[cfg(target_arch = "x86_64")]
        if self == Kernel::Avx512 && x86::has_avx512() {
            // SAFETY: the CPU has AVX-512 F/BW/VNNI (the guard); 1 <= nq <= 15 (`PackedI8`),
            // `codes` holds `rows` codes and `4 * lines <= code_len` (checked above).
            unsafe { x86::dot_i8_block_packed_avx512(&packed.lines, nq, codes, code_len, out) };
            return;
        }
        for (j, q) in packed.flat.chunks_exact(dim.max(1)).take(nq).enumerate() {
            self.dot_i8_block(q, codes, code_len, &mut out[j * rows..(j + 1) * rows]);
        }
    }

    /// `out[r] = scalar::bits_dot(planes, code_r)` for each `code_len`-byte code in `codes`:
    /// `planes` is 4 planes of `words` u64 each and each code holds at least `words` words.
    pub fn bits_dot_block(self, planes: &[u64], codes: &[u8], code_len: usize, out: &mut [i32]) {
        let words = planes.len() / 4;
        if code_len == 0 || code_len < 8 * words || planes.len() != 4 * words {
            out.fill(0);
            return;
        }
        let rows = out.len().min(codes.len() / code_len);
        let (codes, out) = (&codes[..rows * code_len], &mut out[..rows]);
        match self {
            Kernel::Scalar => scalar::bits_dot_block(planes, codes, code_len, out),
            // SAFETY: the CPU has POPCNT (the guard); shapes were checked above.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 if x86::has_avx2() => unsafe {
                x86::bits_dot_block_popcnt(planes, codes, code_len, out)
            },
            // SAFETY: the CPU has AVX-512 F/BW/VNNI/VPOPCNTDQ/IFMA (the guard); shapes checked.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 if x86::has_avx512() => unsafe {
                x86::bits_dot_block_avx512(planes, codes, code_len, out)
            },
            // A named x86 path on a CPU without it; wasm32 (`i64.popcnt` in the scalar code).
            // Unreachable where `Scalar` is the only kernel (aarch64).
            #[allow(unreachable_patterns)]
            _ => scalar::bits_dot_block(planes, codes, code_len, out),
        }
    }

    /// Bit `i % 32` of `masks[i / 32]` is set when `keys[i]` is above `threshold` or NaN,
    /// for the first `min(keys.len(), 32 * masks.len())` keys; bits past them are clear. A
    /// NaN `threshold` sets unspecified bits (a shortlist's threshold never is NaN). The code scan compares every key with its shortlist's
    /// threshold this way, and only looks at the rows whose bit is set.
    pub fn above_masks(self, keys: &[f32], threshold: f32, masks: &mut [u32]) {
        let keys = &keys[..keys.len().min(32 * masks.len())];
        match self {
            // SAFETY: the CPU has AVX-512 F (the guard); any lengths are handled.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 if x86::has_avx512() => unsafe {
                x86::above_masks_avx512(keys, threshold, masks)
            },
            // SAFETY: the CPU has AVX2 (the guard); any lengths are handled.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 if x86::has_avx2() => unsafe {
                x86::above_masks_avx2(keys, threshold, masks)
            },
            #[allow(unreachable_patterns)]
            _ => scalar::above_masks(keys, threshold, masks),
        }
    }
}
