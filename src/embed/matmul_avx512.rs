//! The dense layers' matrix product with AVX-512F: `out (m x n) += a (m x k) · W` for a
//! weight fixed at load time, packed once into panels of `NR` = 32 columns (for every `k`,
//! the panel's 32 weights side by side, zero past the last column).
//!
//! The register tile is `MR` = 12 rows of `a` by one panel: 24 accumulators of 16 lanes. Each
//! step of `k` loads the panel's two vectors once and broadcasts one value of each of the 12
//! rows, for 24 FMAs. The loops run over slices of `KC` values of `k` outside, panels inside
//! them, row tiles innermost: one panel's slice (32 KiB) stays in L1 while every row tile of
//! the block passes over it, and the block's slice of `a` stays in L2. Blocks of rows go to
//! rayon's threads; each writes only its own rows of `out`.

use super::panels::PanelWeight;
use std::arch::x86_64::*;

/// Columns per panel: two 16-lane vectors.
const NR: usize = 32;
/// Rows per register tile.
const MR: usize = 12;
/// Values of `k` per slice.
const KC: usize = 256;

/// A `k x n` weight (`W` of `x · W`), packed into panels of `NR` columns.
pub(crate) struct Packed(PanelWeight);

impl Packed {
    /// Packs `weight`, `n` rows of `k` (PyTorch's `[out, in]`: row `j` holds the weights of
    /// output column `j`). `None` when the CPU has no AVX-512F or the shape does not match.
    pub(crate) fn new(weight: &[f32], n: usize, k: usize) -> Option<Self> {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return None;
        }
        PanelWeight::new(weight, n, k, NR).map(Packed)
    }

    /// `out (m x n) += a (m x k) · W`, row-major, on every core; with `gelu`, then
    /// `out = gelu(out)` (the erf GELU), applied to each tile as it leaves the registers.
    pub(crate) fn matmul_acc(
        &self,
        out: &mut [f32],
        a: &[f32],
        m: usize,
        gelu: bool,
    ) -> Result<(), String> {
        // `new` refused to pack without AVX-512F; checked again because the kernel's
        // safety rests on it.
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return Err("AVX-512F product selected on a CPU without it".into());
        }
        let (w, b) = (&self.0, self.0.data());
        // At most 16 tiles a block (192 rows: a block's slice of `a` is then 192 KiB, in L2).
        w.for_row_blocks(out, a, m, MR, 16, |out, a, rows| {
            // SAFETY: AVX-512F was detected above. `out` is `rows x n` and `a` is `rows x k`
            // (`for_row_blocks` cuts both from the checked whole at the same rows); `b` is the
            // packed `k x n` weight (`n.div_ceil(NR) * k * NR` floats from a 64-byte
            // boundary): what `block` requires. `out` is this task's own `&mut` chunk, so no
            // other thread reads or writes it; `a` and `b` are shared and only read.
            unsafe { block(out, a, b, rows, w.k, w.n, gelu) }
        })
    }
}

/// Masks of the valid lanes of a panel's two vectors, for `cols` (1..=32) columns.
#[inline(always)]
fn masks(cols: usize) -> (__mmask16, __mmask16) {
    let lanes = |c: usize| -> __mmask16 {
        if c >= 16 {
            0xFFFF
        } else {
            ((1u32 << c) - 1) as __mmask16
        }
    };
    (lanes(cols), lanes(cols.saturating_sub(16)))
}

/// # Safety
/// AVX-512F available; `out.len() >= rows * n`, `a.len() >= rows * k`, and
/// `b.len() >= n.div_ceil(NR) * k * NR`, `b` starting on a 64-byte boundary.
#[target_feature(enable = "avx512f")]
unsafe fn block(
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    rows: usize,
    k: usize,
    n: usize,
    gelu: bool,
) {
    let panels = n.div_ceil(NR);
    let mut k0 = 0;
    while k0 < k {
        let kc = (k - k0).min(KC);
        for p in 0..panels {
            let cols = (n - p * NR).min(NR);
            let (m0, m1) = masks(cols);
            let mut r = 0;
            while r < rows {
                let rr = (rows - r).min(MR);
                // SAFETY: rows r..r + rr within 0..rows, columns p·NR..p·NR + cols <= n and k
                // values k0..k0 + kc <= k, so every offset below is inside the slices the
                // caller vouched for; `tile` reads and writes only that rectangle. `b` starts
                // on a 64-byte boundary (`Packed::new`) and every offset into it is a
                // multiple of NR = 32 floats, 128 bytes, so the tile's `b` is aligned too.
                unsafe {
                    let t = Tile {
                        a: a.as_ptr().add(r * k + k0),
                        lda: k,
                        b: b.as_ptr().add(p * k * NR + k0 * NR),
                        kc,
                        c: out.as_mut_ptr().add(r * n + p * NR),
                        ldc: n,
                        m0,
                        m1,
                        // The sums are complete after the last slice of k.
                        gelu: gelu && k0 + kc == k,
                    };
                    match rr {
                        1 => tile::<1>(&t),
                        2 => tile::<2>(&t),
                        3 => tile::<3>(&t),
                        4 => tile::<4>(&t),
                        5 => tile::<5>(&t),
                        6 => tile::<6>(&t),
                        7 => tile::<7>(&t),
                        8 => tile::<8>(&t),
                        9 => tile::<9>(&t),
                        10 => tile::<10>(&t),
                        11 => tile::<11>(&t),
                        _ => tile::<MR>(&t),
                    }
                }
                r += rr;
            }
        }
        k0 += kc;
    }
}

/// One register tile's operands.
struct Tile {
    /// Row 0 of the tile in `a`, at the slice's first `k`; row `i` at `a + i·lda`.
    a: *const f32,
    lda: usize,
    /// The panel at the slice's first `k`: `kc` steps of `NR` floats.
    b: *const f32,
    kc: usize,
    /// Row 0, column 0 of the tile in `out`; row `i` at `c + i·ldc`.
    c: *mut f32,
    ldc: usize,
    /// Valid lanes of the first and second 16 columns.
    m0: __mmask16,
    m1: __mmask16,
    /// Store `gelu(sum)` instead of the sum.
    gelu: bool,
}

/// `R` rows of the tile: `c[i][..] += Σ_kk a[i][kk] · b[kk][..]`, lanes outside the masks
/// neither read nor written.
///
/// # Safety
/// AVX-512F available; `a + i·lda + kk` for i < R, kk < kc, `b + kk·NR + l` for l < NR, and
/// `c + i·ldc + l` for the lanes l in the masks are inside live allocations, `c`'s exclusive
/// to this call; `b` is 64-byte aligned (aligned loads).
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile<const R: usize>(t: &Tile) {
    // SAFETY: every address formed below is one the caller vouched for (see the contract);
    // masked loads and stores do not touch lanes outside their mask.
    unsafe {
        let mut lo: [__m512; R] =
            std::array::from_fn(|i| _mm512_maskz_loadu_ps(t.m0, t.c.add(i * t.ldc)));
        let mut hi: [__m512; R] =
            std::array::from_fn(|i| _mm512_maskz_loadu_ps(t.m1, t.c.add(i * t.ldc + 16)));
        let rows: [*const f32; R] = std::array::from_fn(|i| t.a.add(i * t.lda));
        let mut b = t.b;
        for kk in 0..t.kc {
            let b0 = _mm512_load_ps(b);
            let b1 = _mm512_load_ps(b.add(16));
            for i in 0..R {
                let x = _mm512_set1_ps(*rows[i].add(kk));
                lo[i] = _mm512_fmadd_ps(x, b0, lo[i]);
                hi[i] = _mm512_fmadd_ps(x, b1, hi[i]);
            }
            b = b.add(NR);
        }
        if t.gelu {
            for i in 0..R {
                lo[i] = gelu16(lo[i]);
                hi[i] = gelu16(hi[i]);
            }
        }
        for i in 0..R {
            _mm512_mask_storeu_ps(t.c.add(i * t.ldc), t.m0, lo[i]);
            _mm512_mask_storeu_ps(t.c.add(i * t.ldc + 16), t.m1, hi[i]);
        }
    }
}

/// `e^x` of 16 lanes for `x <= 0`: `bert::exp_neg_one` with FMAs (the same reduction
/// `x = n·ln 2 + r`, the same degree-7 Taylor polynomial, 0 below -87).
#[target_feature(enable = "avx512f")]
#[inline]
pub(super) fn exp_neg16(x: __m512) -> __m512 {
    let underflow = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(-87.0));
    let x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0)), _mm512_setzero_ps());
    let round = _mm512_set1_ps(12_582_912.0);
    let n = _mm512_sub_ps(
        _mm512_fmadd_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E), round),
        round,
    );
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_145_75), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428_606_8e-6), r);
    let mut p = _mm512_set1_ps(1.0 / 5040.0);
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    // n is an integer in [-126, 0]: 2^n has exponent bits n + 127.
    let bits = _mm512_slli_epi32::<23>(_mm512_add_epi32(
        _mm512_cvtps_epi32(n),
        _mm512_set1_epi32(127),
    ));
    _mm512_maskz_mul_ps(!underflow, p, _mm512_castsi512_ps(bits))
}

/// The erf GELU of 16 lanes: `bert::gelu_one` (Abramowitz and Stegun 7.1.26) with FMAs.
#[target_feature(enable = "avx512f")]
#[inline]
fn gelu16(x: __m512) -> __m512 {
    let sign = _mm512_set1_epi32(i32::MIN);
    let z = _mm512_abs_ps(_mm512_mul_ps(
        x,
        _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2),
    ));
    let one = _mm512_set1_ps(1.0);
    let t = _mm512_div_ps(one, _mm512_fmadd_ps(_mm512_set1_ps(0.327_591_1), z, one));
    let mut poly = _mm512_set1_ps(1.061_405_4);
    for c in [-1.453_152_1, 1.421_413_8, -0.284_496_74, 0.254_829_6] {
        poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(c));
    }
    poly = _mm512_mul_ps(poly, t);
    let e = exp_neg16(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(z, z)));
    let erf_abs = _mm512_fnmadd_ps(poly, e, one);
    // erf takes the sign of x.
    let erf = _mm512_castsi512_ps(_mm512_or_si512(
        _mm512_castps_si512(erf_abs),
        _mm512_and_si512(_mm512_castps_si512(x), sign),
    ));
    _mm512_mul_ps(
        _mm512_mul_ps(_mm512_set1_ps(0.5), x),
        _mm512_add_ps(one, erf),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Odd shapes against a plain f64 loop (`product_check`).
    #[test]
    fn matches_a_plain_loop_on_odd_shapes() {
        super::super::product_check::check_odd_shapes(
            &[
                (1, 1, 1),
                (1, 384, 1152),
                (13, 7, 33),
                (12, 16, 32),
                (25, 300, 17),
                (37, 513, 65),
                (100, 1536, 384),
                (5, 257, 31),
            ],
            &|weight, n, k, out, a, m, gelu| {
                Packed::new(weight, n, k).map(|p| p.matmul_acc(out, a, m, gelu))
            },
        );
    }
}
