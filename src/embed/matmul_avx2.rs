//! The dense layers' matrix product with AVX2 and FMA, for x86-64 CPUs without AVX-512F (most
//! laptops and desktops): `matmul_avx512.rs` in 8-lane registers. The weight is packed once at
//! load into panels of `NR` = 16 columns; the register tile is `MR` = 6 rows by one panel, 12
//! accumulators, plus the panel's two vectors and one broadcast: 15 of the 16 registers. Each
//! step of `k` loads the panel's two vectors once and broadcasts one value of each of the 6
//! rows, for 12 FMAs. The loops and the threading are those of the AVX-512 kernel: slices of
//! `KC` values of `k` outside, panels inside them, row tiles innermost; blocks of rows over
//! rayon. The erf GELU is applied to each tile in registers before its store, as there. Unlike
//! there, each slice of the block's rows is packed first (a tile's 6 values of each `k` side by
//! side): on AVX2 the kernel reached gemm's speed only so, and with plain stores wherever the
//! panel is whole (masked stores are microcoded on AMD CPUs).
//!
//! Where this beats `gemm` (which it replaces on these CPUs): the weight is packed once, not
//! at every product, and the GELU costs no second pass over the intermediate layer's output.

use super::panels::PanelWeight;
use std::arch::x86_64::*;

/// Columns per panel: two 8-lane vectors.
const NR: usize = 16;
/// Rows per register tile.
const MR: usize = 6;
/// Values of `k` per slice: a panel's slice is 16 KiB, within L1.
const KC: usize = 256;

/// True when this CPU runs the kernel.
fn supported() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// A `k x n` weight (`W` of `x · W`), packed into panels of `NR` columns.
pub(crate) struct Packed(PanelWeight);

impl Packed {
    /// Packs `weight`, `n` rows of `k` (PyTorch's `[out, in]`: row `j` holds the weights of
    /// output column `j`). `None` when the CPU has no AVX2 and FMA or the shape does not
    /// match.
    pub(crate) fn new(weight: &[f32], n: usize, k: usize) -> Option<Self> {
        if !supported() {
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
        // `new` refused to pack without AVX2 and FMA; checked again because the kernel's
        // safety rests on it.
        if !supported() {
            return Err("AVX2 product selected on a CPU without AVX2 and FMA".into());
        }
        let (w, b) = (&self.0, self.0.data());
        // At most 32 tiles a block (192 rows: a block's slice of `a` is then 192 KiB).
        w.for_row_blocks(out, a, m, MR, 32, |out, a, rows| {
            // SAFETY: AVX2 and FMA were detected above. `out` is `rows x n` and `a` is
            // `rows x k` (`for_row_blocks` cuts both from the checked whole at the same rows);
            // `b` is the packed `k x n` weight (`n.div_ceil(NR) * k * NR` floats from a 32-byte
            // boundary): what `block` requires. `out` is this task's own `&mut` chunk, so no
            // other thread reads or writes it; `a` and `b` are shared and only read.
            unsafe { block(out, a, b, rows, w.k, w.n, gelu) }
        })
    }
}

/// Masks of the valid lanes of a panel's two vectors, for `cols` (1..=16) columns: lane `l`
/// of a mask is all ones when it is valid (what `maskload` and `maskstore` read).
#[inline(always)]
fn masks(cols: usize) -> ([i32; 8], [i32; 8]) {
    let lanes = |from: usize| std::array::from_fn(|l| if from + l < cols { -1 } else { 0 });
    (lanes(0), lanes(8))
}

/// # Safety
/// AVX2 and FMA available; `out.len() >= rows * n`, `a.len() >= rows * k`, and
/// `b.len() >= n.div_ceil(NR) * k * NR`, `b` starting on a 32-byte boundary.
#[target_feature(enable = "avx2,fma")]
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
    let tiles = rows.div_ceil(MR);
    // The block's rows for one slice of k, packed tile by tile with the tile's MR values of
    // each k side by side (a last, partial tile reads only its own rows): a tile then
    // broadcasts from one sequential stream instead of MR rows `k` apart, and the packing is
    // paid once for all the panels.
    let mut packed = vec![0.0f32; tiles * MR * KC.min(k)];
    let mut k0 = 0;
    while k0 < k {
        let kc = (k - k0).min(KC);
        for t in 0..tiles {
            let tile = &mut packed[t * MR * kc..(t + 1) * MR * kc];
            for i in 0..MR.min(rows - t * MR) {
                let row = &a[(t * MR + i) * k + k0..(t * MR + i) * k + k0 + kc];
                for (kk, &v) in row.iter().enumerate() {
                    tile[kk * MR + i] = v;
                }
            }
        }
        for p in 0..panels {
            let cols = (n - p * NR).min(NR);
            let (m0, m1) = masks(cols);
            // SAFETY: reading two arrays of 8 i32 (unaligned loads).
            let (m0, m1) = unsafe {
                (
                    _mm256_loadu_si256(m0.as_ptr().cast()),
                    _mm256_loadu_si256(m1.as_ptr().cast()),
                )
            };
            let mut r = 0;
            while r < rows {
                let rr = (rows - r).min(MR);
                // SAFETY: rows r..r + rr within 0..rows, columns p·NR..p·NR + cols <= n and k
                // values k0..k0 + kc <= k, so every offset below is inside the slices the
                // caller vouched for; `tile` reads and writes only that rectangle (the masks
                // cover the columns that exist). The packed tile at `r·kc` holds `kc·MR`
                // floats within `packed` (`tiles·MR·kc` long at least), local to this call. `b` starts on a 32-byte boundary
                // (`Packed::new`) and every offset into it is a multiple of NR = 16 floats,
                // 64 bytes, so the tile's `b` is aligned too.
                unsafe {
                    let t = Tile {
                        a: packed.as_ptr().add(r * kc),
                        b: b.as_ptr().add(p * k * NR + k0 * NR),
                        kc,
                        c: out.as_mut_ptr().add(r * n + p * NR),
                        ldc: n,
                        m0,
                        m1,
                        full: cols == NR,
                        // The sums are complete after the last slice of k.
                        gelu: gelu && k0 + kc == k,
                    };
                    match rr {
                        1 => tile::<1>(&t),
                        2 => tile::<2>(&t),
                        3 => tile::<3>(&t),
                        4 => tile::<4>(&t),
                        5 => tile::<5>(&t),
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
    /// The tile's rows packed for the slice: value `kk` of row `i` at `a + kk·MR + i`.
    a: *const f32,
    /// The panel at the slice's first `k`: `kc` steps of `NR` floats.
    b: *const f32,
    kc: usize,
    /// Row 0, column 0 of the tile in `out`; row `i` at `c + i·ldc`.
    c: *mut f32,
    ldc: usize,
    /// Valid lanes of the first and second 8 columns.
    m0: __m256i,
    m1: __m256i,
    /// All 16 columns valid: plain loads and stores.
    full: bool,
    /// Store `gelu(sum)` instead of the sum.
    gelu: bool,
}

/// `R` rows of the tile: `c[i][..] += Σ_kk a[i][kk] · b[kk][..]`, lanes outside the masks
/// neither read nor written.
///
/// # Safety
/// AVX2 and FMA available; `a + kk·MR + i` for i < R, kk < kc, `b + kk·NR + l` for l < NR,
/// and `c + i·ldc + l` for the lanes l in the masks are inside live allocations, `c`'s
/// exclusive to this call; `b` is 32-byte aligned (aligned loads).
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn tile<const R: usize>(t: &Tile) {
    // SAFETY: every address formed below is one the caller vouched for (see the contract);
    // masked loads and stores do not touch lanes outside their mask, and the plain ones run
    // only when the masks cover all 16 lanes.
    unsafe {
        // Masked stores are slow on AMD CPUs (microcoded on Zen): only the last, partial
        // panel of a row takes them.
        let mut lo: [__m256; R] = std::array::from_fn(|i| match t.full {
            true => _mm256_loadu_ps(t.c.add(i * t.ldc)),
            false => _mm256_maskload_ps(t.c.add(i * t.ldc), t.m0),
        });
        let mut hi: [__m256; R] = std::array::from_fn(|i| match t.full {
            true => _mm256_loadu_ps(t.c.add(i * t.ldc + 8)),
            false => _mm256_maskload_ps(t.c.add(i * t.ldc + 8), t.m1),
        });
        let mut a = t.a;
        let mut b = t.b;
        for _ in 0..t.kc {
            let b0 = _mm256_load_ps(b);
            let b1 = _mm256_load_ps(b.add(8));
            for i in 0..R {
                let x = _mm256_broadcast_ss(&*a.add(i));
                lo[i] = _mm256_fmadd_ps(x, b0, lo[i]);
                hi[i] = _mm256_fmadd_ps(x, b1, hi[i]);
            }
            a = a.add(MR);
            b = b.add(NR);
        }
        if t.gelu {
            for i in 0..R {
                lo[i] = gelu8(lo[i]);
                hi[i] = gelu8(hi[i]);
            }
        }
        for i in 0..R {
            if t.full {
                _mm256_storeu_ps(t.c.add(i * t.ldc), lo[i]);
                _mm256_storeu_ps(t.c.add(i * t.ldc + 8), hi[i]);
            } else {
                _mm256_maskstore_ps(t.c.add(i * t.ldc), t.m0, lo[i]);
                _mm256_maskstore_ps(t.c.add(i * t.ldc + 8), t.m1, hi[i]);
            }
        }
    }
}

/// `e^x` of 8 lanes for `x <= 0`: `matmul_avx512::exp_neg16` in 8 lanes (the same reduction
/// `x = n·ln 2 + r`, the same degree-7 Taylor polynomial, 0 below -87).
#[target_feature(enable = "avx2,fma")]
#[inline]
fn exp_neg8(x: __m256) -> __m256 {
    let floor = _mm256_set1_ps(-87.0);
    let keep = _mm256_cmp_ps::<_CMP_GE_OQ>(x, floor);
    let x = _mm256_min_ps(_mm256_max_ps(x, floor), _mm256_setzero_ps());
    let round = _mm256_set1_ps(12_582_912.0);
    let n = _mm256_sub_ps(
        _mm256_fmadd_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E), round),
        round,
    );
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_145_75), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428_606_8e-6), r);
    let mut p = _mm256_set1_ps(1.0 / 5040.0);
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    // n is an integer in [-126, 0]: 2^n has exponent bits n + 127.
    let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(n),
        _mm256_set1_epi32(127),
    ));
    _mm256_and_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(bits)), keep)
}

/// The erf GELU of 8 lanes: `bert::gelu_one` (Abramowitz and Stegun 7.1.26) with FMAs.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn gelu8(x: __m256) -> __m256 {
    let sign = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MIN));
    let z = _mm256_andnot_ps(
        sign,
        _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::FRAC_1_SQRT_2)),
    );
    let one = _mm256_set1_ps(1.0);
    let t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(0.327_591_1), z, one));
    let mut poly = _mm256_set1_ps(1.061_405_4);
    for c in [-1.453_152_1, 1.421_413_8, -0.284_496_74, 0.254_829_6] {
        poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(c));
    }
    poly = _mm256_mul_ps(poly, t);
    let e = exp_neg8(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(z, z)));
    let erf_abs = _mm256_fnmadd_ps(poly, e, one);
    // erf takes the sign of x.
    let erf = _mm256_or_ps(erf_abs, _mm256_and_ps(x, sign));
    _mm256_mul_ps(
        _mm256_mul_ps(_mm256_set1_ps(0.5), x),
        _mm256_add_ps(one, erf),
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
                (7, 7, 17),
                (6, 16, 16),
                (25, 300, 9),
                (37, 513, 65),
                (100, 1536, 384),
                (5, 257, 31),
            ],
            &|weight, n, k, out, a, m, gelu| {
                Packed::new(weight, n, k).map(|p| p.matmul_acc(out, a, m, gelu))
            },
        );
    }

    /// The GELU's extremes: large magnitudes (exp underflows to 0), zero, and the sign.
    #[test]
    fn gelu8_matches_the_scalar_gelu_at_the_extremes() {
        if !supported() {
            return;
        }
        let xs = [
            -100.0f32, -20.0, -5.5, -1.0, -1e-6, 0.0, 1e-6, 0.7, 3.0, 12.0,
        ];
        for pair in xs.chunks(8) {
            let mut lanes = [0.0f32; 8];
            lanes[..pair.len()].copy_from_slice(pair);
            let mut got = [0.0f32; 8];
            // SAFETY: AVX2 and FMA checked above; 8-float arrays, unaligned loads and stores.
            unsafe { _mm256_storeu_ps(got.as_mut_ptr(), gelu8(_mm256_loadu_ps(lanes.as_ptr()))) };
            for (x, g) in lanes.iter().zip(got) {
                let want = super::super::bert::gelu_one(*x);
                assert!(
                    (g - want).abs() <= 1e-6 * want.abs().max(1.0),
                    "gelu({x}) = {g}, not {want}"
                );
            }
        }
    }
}
