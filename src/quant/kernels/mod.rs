//! Code-scoring kernels: the integer dot product of int8 codes, the dot product of bit codes
//! with a 4-bit query (by table lookups over codes in groups of 32 rows, see
//! [`crate::quant::bit_groups`]; [`scalar::bits_dot`] defines it), and the comparison of
//! scores with a threshold. [`scalar`] is the reference every SIMD path is tested against;
//! [`Kernel::best`] picks the best path for the CPU once (AVX-512 VNNI, AVX2, SIMD128 on
//! wasm32, NEON on aarch64).
//!
//! Every block kernel scores the codes of consecutive rows (`code_len` bytes each) against
//! one prepared query: the shapes are checked once per block, and a block whose shapes do not
//! fit a SIMD path (never produced by the engine) goes to the scalar reference, which cannot
//! read out of bounds.

#[cfg(target_arch = "aarch64")]
mod neon;
pub mod scalar;
pub use scalar::bits_lut;
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
    /// AVX2 (`vpmaddubsw` on |code| x sign-adjusted query, exact; `vpshufb` for bit codes).
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX-512 VNNI (`vpdpbusd` on code + 128 x query, minus 128 * sum(query)); bit codes
    /// and anything else on the AVX2 paths.
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// WebAssembly SIMD128 (`i32x4.dot_i16x8_s`, `i8x16.swizzle`).
    #[cfg(target_arch = "wasm32")]
    Simd128,
    /// aarch64 NEON (`tbl` for grouped bit codes; the scalar code elsewhere).
    #[cfg(target_arch = "aarch64")]
    Neon,
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
        #[cfg(target_arch = "aarch64")]
        kernels.push(Kernel::Neon);
        kernels
    }

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Scalar => "scalar",
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => "avx512-vnni",
            #[cfg(target_arch = "wasm32")]
            Kernel::Simd128 => "simd128",
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon => "neon",
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
            // SAFETY: the CPU has AVX-512 F/BW/VNNI (the guard); shapes checked.
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

    /// True when this kernel scores int8 queries in packed groups ([`PackedI8`]): fifteen
    /// per pass over the codes on AVX-512, four on AVX2 and SIMD128.
    pub fn scores_packed_i8(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        match self {
            Kernel::Avx512 => return x86::has_avx512(),
            Kernel::Avx2 => return x86::has_avx2(),
            _ => {}
        }
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        if self == Kernel::Simd128 {
            return true;
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
        #[cfg(target_arch = "x86_64")]
        if self == Kernel::Avx2 && x86::has_avx2() && dim <= code_len {
            in_fours(packed, rows, out, |n, qs, out| {
                // SAFETY: the CPU has AVX2 (the guard); `qs` is `n` queries of `dim <=
                // code_len` components, `codes` holds `rows` codes and `out` `n * rows`.
                unsafe {
                    match n {
                        1 => x86::dot_i8_block_multi_avx2::<1>(qs, dim, codes, code_len, rows, out),
                        2 => x86::dot_i8_block_multi_avx2::<2>(qs, dim, codes, code_len, rows, out),
                        3 => x86::dot_i8_block_multi_avx2::<3>(qs, dim, codes, code_len, rows, out),
                        _ => x86::dot_i8_block_multi_avx2::<4>(qs, dim, codes, code_len, rows, out),
                    }
                }
            });
            return;
        }
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        if self == Kernel::Simd128 && dim <= code_len {
            in_fours(packed, rows, out, |n, qs, out| match n {
                1 => simd128::dot_i8_block_multi::<1>(qs, dim, codes, code_len, rows, out),
                2 => simd128::dot_i8_block_multi::<2>(qs, dim, codes, code_len, rows, out),
                3 => simd128::dot_i8_block_multi::<3>(qs, dim, codes, code_len, rows, out),
                _ => simd128::dot_i8_block_multi::<4>(qs, dim, codes, code_len, rows, out),
            });
            return;
        }
        for (j, q) in packed.flat.chunks_exact(dim.max(1)).take(nq).enumerate() {
            self.dot_i8_block(q, codes, code_len, &mut out[j * rows..(j + 1) * rows]);
        }
    }

    /// `out[r] = scalar::bits_dot(planes, code_r)` for the codes of `groups`, laid out in
    /// [`crate::quant::bit_groups`]' groups of `code_len`-byte codes, with `lut` the table
    /// [`bits_lut`] made from `planes`: for `min(out.len(), rows held)` rows.
    pub fn bits_dot_groups(self, lut: &[u8], groups: &[u8], code_len: usize, out: &mut [i32]) {
        use crate::quant::bit_groups::{grouped_len, rows_held};
        if code_len == 0 || lut.len() != 32 * code_len {
            out.fill(0);
            return;
        }
        let rows = out.len().min(rows_held(groups.len(), code_len));
        let out = &mut out[..rows];
        let groups = &groups[..grouped_len(rows, code_len)];
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 | Kernel::Avx512
                if x86::has_avx2() && code_len <= x86::GROUPS_AVX2_MAX_CODE_LEN =>
            {
                // SAFETY: the CPU has AVX2 (the guard; an AVX-512 CPU has it too); the
                // lengths were checked above and `code_len` is within the u16 sums' range.
                unsafe { x86::bits_dot_groups_avx2(lut, groups, code_len, out) }
            }
            #[cfg(target_arch = "wasm32")]
            Kernel::Simd128 if code_len <= simd128::GROUPS_MAX_CODE_LEN => {
                simd128::bits_dot_groups(lut, groups, code_len, out)
            }
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon if code_len <= neon::GROUPS_MAX_CODE_LEN => {
                neon::bits_dot_groups(lut, groups, code_len, out)
            }
            #[allow(unreachable_patterns)]
            _ => scalar::bits_dot_groups(lut, groups, code_len, out),
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

/// Calls `score(n, queries, out)` for the queries of `packed` four at a time (the last call
/// takes the rest): `queries` is `n` of them back to back, `out` their `n * rows` results.
#[cfg(any(
    target_arch = "x86_64",
    all(target_arch = "wasm32", target_feature = "simd128")
))]
fn in_fours(
    packed: &PackedI8,
    rows: usize,
    out: &mut [i32],
    mut score: impl FnMut(usize, &[i8], &mut [i32]),
) {
    let (nq, dim) = (packed.queries, packed.dim);
    let mut j = 0;
    while j < nq {
        let n = (nq - j).min(4);
        score(
            n,
            &packed.flat[j * dim..(j + n) * dim],
            &mut out[j * rows..(j + n) * rows],
        );
        j += n;
    }
}
