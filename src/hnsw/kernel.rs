//! The kernels a traversal and an insertion score rows with: inlined x86_64 loops with four
//! accumulators where the CPU has AVX-512 or AVX2 + FMA, else the database's [`Kernels`].
//!
//! A traversal only ranks nodes: a search rescores its candidates with the exact scan's kernel
//! (so the scores it returns are the exact scan's, bit for bit), and the links only need a
//! consistent order. The database's kernel goes through SimSIMD's run-time dispatch on every
//! call and, on AVX-512, sums on one accumulator (384 components: a chain of 24 dependent
//! FMAs); a traversal scores a few thousand rows per query, so both costs show.

use crate::distance::{KernelKind, Kernels};
use crate::types::Metric;

/// Which loop scores a pair of rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// AVX-512F.
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// The database's kernels.
    Kernels,
}

/// The traversal's dot product and squared distance.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fast {
    path: Path,
    kernels: Kernels,
}

impl Fast {
    /// The fastest loop this CPU runs; `kernels` when none applies or when `kernels` is the
    /// scalar reference (tests force it to compare).
    pub fn new(kernels: Kernels) -> Self {
        #[cfg(target_arch = "x86_64")]
        if kernels.kind() != KernelKind::Scalar {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Fast {
                    path: Path::Avx512,
                    kernels,
                };
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Fast {
                    path: Path::Avx2,
                    kernels,
                };
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = KernelKind::Scalar;
        Fast {
            path: Path::Kernels,
            kernels,
        }
    }

    /// Inner product over the shorter length.
    #[inline]
    pub fn dot(&self, a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        match self.path {
            // SAFETY: `Fast::new` chose this path after checking the CPU has AVX-512F; the
            // loop reads only `a[..n]` and `b[..n]`.
            #[cfg(target_arch = "x86_64")]
            Path::Avx512 => unsafe { x86::dot_avx512(a, b) },
            // SAFETY: as above, AVX2 and FMA checked by `Fast::new`.
            #[cfg(target_arch = "x86_64")]
            Path::Avx2 => unsafe { x86::dot_avx2(a, b) },
            Path::Kernels => self.kernels.dot(a, b),
        }
    }

    /// Squared Euclidean distance over the shorter length.
    #[inline]
    pub fn l2sq(&self, a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        match self.path {
            // SAFETY: see `dot`.
            #[cfg(target_arch = "x86_64")]
            Path::Avx512 => unsafe { x86::l2sq_avx512(a, b) },
            // SAFETY: see `dot`.
            #[cfg(target_arch = "x86_64")]
            Path::Avx2 => unsafe { x86::l2sq_avx2(a, b) },
            Path::Kernels => self.kernels.l2sq(a, b),
        }
    }

    /// The ranking key of a row (`dim` components, then its norm) against a query with norm
    /// `query_norm`: the exact scan's formula on these loops (higher is better).
    #[inline]
    pub fn key(
        &self,
        metric: Metric,
        query: &[f32],
        query_norm: f32,
        row: &[f32],
        dim: usize,
    ) -> f32 {
        match metric {
            Metric::Cosine => {
                let denom = query_norm * row[dim];
                if denom > 0.0 {
                    self.dot(query, &row[..dim]) / denom
                } else {
                    0.0
                }
            }
            Metric::Dot => self.dot(query, &row[..dim]),
            Metric::L2 => -self.l2sq(query, &row[..dim]),
        }
    }
}

/// An int8 query made ready for scoring one code at a time: the prepared query's integers
/// padded with zeros to a whole number of 64-byte steps, their sum, and the chosen loop.
/// [`crate::quant::Codebook::score_block`] is built for blocks of codes: called on one code
/// it collects the query into registers (a heap allocation) and sums it again every time.
#[derive(Debug, Clone)]
pub(crate) struct Int8Dot {
    /// The query's integers, then zeros up to a multiple of 64.
    q: Vec<i8>,
    /// Components scored.
    dim: usize,
    /// `128 * sum(q)`: what biasing the codes to unsigned adds (AVX-512 path).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    bias: i32,
    path: Int8Path,
}

/// Which loop computes an int8 dot product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Int8Path {
    /// AVX-512 F, BW and VNNI.
    #[cfg(target_arch = "x86_64")]
    Vnni,
    /// AVX2.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// Scalar.
    Scalar,
}

impl Int8Dot {
    /// `q` (the query's integers, `-127..=127`) ready for codes of at least `q.len()` bytes.
    pub fn new(q: &[i8]) -> Self {
        let dim = q.len();
        let mut padded = q.to_vec();
        padded.resize(dim.next_multiple_of(64), 0);
        #[allow(unused_mut)] // only x86_64 picks another path
        let mut path = Int8Path::Scalar;
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx512f") && has!("avx512bw") && has!("avx512vnni") {
                path = Int8Path::Vnni;
            } else if has!("avx2") {
                path = Int8Path::Avx2;
            }
        }
        Int8Dot {
            bias: 128 * q.iter().map(|&x| i32::from(x)).sum::<i32>(),
            q: padded,
            dim,
            path,
        }
    }

    /// `sum(q[d] * code[d])` over the query's components, exactly; 0 for a code shorter than
    /// the query.
    #[inline]
    pub fn dot(&self, code: &[u8]) -> i32 {
        let Some(code) = code.get(..self.dim) else {
            return 0;
        };
        match self.path {
            // SAFETY: `Int8Dot::new` chose this path after checking the CPU features;
            // `code.len() == dim` and `q.len() == dim.next_multiple_of(64)`.
            #[cfg(target_arch = "x86_64")]
            Int8Path::Vnni => unsafe { x86::dot_i8_vnni(&self.q, code, self.bias) },
            // SAFETY: as above (AVX2).
            #[cfg(target_arch = "x86_64")]
            Int8Path::Avx2 => unsafe { x86::dot_i8_avx2(&self.q[..self.dim], code) },
            Int8Path::Scalar => crate::quant::kernels::scalar::dot_i8(
                &self.q[..self.dim],
                crate::quant::bytes_as_i8(code),
            ),
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Generates an AVX-512 sum over `a` and `b` of `$step` (how `$acc` takes in one pair of
    /// 16-lane vectors `$x`, `$y`): lanes `16 * j + lane` for `j < 4` per step of 64, four
    /// independent sums, the last partial vector under a mask (its other lanes read as 0 in
    /// both, which adds nothing to either sum made here). `dot` and `l2sq` differ only in
    /// `$step`.
    macro_rules! avx512_sum {
        ($(#[$doc:meta])* $name:ident, |$x:ident, $y:ident, $acc:ident| $step:expr) => {
            $(#[$doc])*
            #[target_feature(enable = "avx512f")]
            pub unsafe fn $name(a: &[f32], b: &[f32]) -> f32 {
                let n = a.len().min(b.len());
                let (pa, pb) = (a.as_ptr(), b.as_ptr());
                let mut acc = [_mm512_setzero_ps(); 4];
                let mut i = 0;
                while i + 64 <= n {
                    for (j, s) in acc.iter_mut().enumerate() {
                        // SAFETY: i + 16 j + 16 <= i + 64 <= n: both 16-lane loads are inside
                        // the slices (which the caller borrows for the call; nothing frees
                        // them).
                        let ($x, $y) = unsafe {
                            (
                                _mm512_loadu_ps(pa.add(i + 16 * j)),
                                _mm512_loadu_ps(pb.add(i + 16 * j)),
                            )
                        };
                        let $acc = *s;
                        *s = $step;
                    }
                    i += 64;
                }
                let mut j = 0;
                while i + 16 <= n {
                    let ($x, $y) =
                        // SAFETY: i + 16 <= n: in bounds.
                        unsafe { (_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i))) };
                    let $acc = acc[j];
                    acc[j] = $step;
                    j = (j + 1) % 4;
                    i += 16;
                }
                if i < n {
                    let mask: __mmask16 = ((1u32 << (n - i)) - 1) as u16;
                    // SAFETY: the mask covers lanes i..n only; masked-off lanes are not read (a
                    // masked load does not fault on them).
                    let ($x, $y) = unsafe {
                        (
                            _mm512_maskz_loadu_ps(mask, pa.add(i)),
                            _mm512_maskz_loadu_ps(mask, pb.add(i)),
                        )
                    };
                    let $acc = acc[j];
                    acc[j] = $step;
                }
                let s = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
                _mm512_reduce_add_ps(s)
            }
        };
    }

    avx512_sum!(
        /// The inner product.
        ///
        /// # Safety
        /// The CPU must have AVX-512F; `a.len() == b.len()`.
        dot_avx512,
        |x, y, acc| _mm512_fmadd_ps(x, y, acc)
    );

    avx512_sum!(
        /// The squared Euclidean distance.
        ///
        /// # Safety
        /// As [`dot_avx512`].
        l2sq_avx512,
        |x, y, acc| {
            let d = _mm512_sub_ps(x, y);
            _mm512_fmadd_ps(d, d, acc)
        }
    );

    /// The sum of the 8 lanes.
    #[target_feature(enable = "avx2")]
    fn sum8(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// Generates an AVX2 + FMA sum over `a` and `b`: four 8-lane sums of `$step` per step of
    /// 32 (as `avx512_sum`), then the components past the last multiple of 8 in scalar,
    /// each pair `$sx`, `$sy` adding `$tail`.
    macro_rules! avx2_sum {
        (
            $(#[$doc:meta])* $name:ident,
            |$x:ident, $y:ident, $acc:ident| $step:expr,
            |$sx:ident, $sy:ident| $tail:expr
        ) => {
            $(#[$doc])*
            #[target_feature(enable = "avx2,fma")]
            pub unsafe fn $name(a: &[f32], b: &[f32]) -> f32 {
                let n = a.len().min(b.len());
                let (pa, pb) = (a.as_ptr(), b.as_ptr());
                let mut acc = [_mm256_setzero_ps(); 4];
                let mut i = 0;
                while i + 32 <= n {
                    for (j, s) in acc.iter_mut().enumerate() {
                        // SAFETY: i + 8 j + 8 <= i + 32 <= n: in bounds.
                        let ($x, $y) = unsafe {
                            (
                                _mm256_loadu_ps(pa.add(i + 8 * j)),
                                _mm256_loadu_ps(pb.add(i + 8 * j)),
                            )
                        };
                        let $acc = *s;
                        *s = $step;
                    }
                    i += 32;
                }
                let mut j = 0;
                while i + 8 <= n {
                    let ($x, $y) =
                        // SAFETY: i + 8 <= n: in bounds.
                        unsafe { (_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i))) };
                    let $acc = acc[j];
                    acc[j] = $step;
                    j = (j + 1) % 4;
                    i += 8;
                }
                let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
                let mut sum = sum8(s);
                for (&$sx, &$sy) in a[i..n].iter().zip(&b[i..n]) {
                    sum += $tail;
                }
                sum
            }
        };
    }

    avx2_sum!(
        /// The inner product.
        ///
        /// # Safety
        /// The CPU must have AVX2 and FMA; `a.len() == b.len()`.
        dot_avx2,
        |x, y, acc| _mm256_fmadd_ps(x, y, acc),
        |x, y| x * y
    );

    avx2_sum!(
        /// The squared Euclidean distance.
        ///
        /// # Safety
        /// As [`dot_avx2`].
        l2sq_avx2,
        |x, y, acc| {
            let d = _mm256_sub_ps(x, y);
            _mm256_fmadd_ps(d, d, acc)
        },
        |x, y| (x - y) * (x - y)
    );

    /// `sum(q[d] * code[d])`, 64 components per step: `vpdpbusd` multiplies unsigned by
    /// signed bytes, so the code is biased to `c + 128` (`c ^ 0x80`) and `bias = 128 *
    /// sum(q)` is taken off at the end (exact: `vpdpbusd` does not saturate). The last step's
    /// code bytes past `code.len()` are masked off (read as 0, biased to 128, against query
    /// bytes that are 0).
    ///
    /// # Safety
    /// The CPU must have AVX-512 F, BW and VNNI; `q.len() == code.len().next_multiple_of(64)`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub unsafe fn dot_i8_vnni(q: &[i8], code: &[u8], bias: i32) -> i32 {
        let dim = code.len();
        let flip = _mm512_set1_epi8(-128);
        let mut acc = [_mm512_setzero_si512(); 2];
        let mut i = 0;
        let mut j = 0;
        while i < dim {
            let mask: __mmask64 = if dim - i >= 64 {
                !0
            } else {
                (1u64 << (dim - i)) - 1
            };
            // SAFETY: the mask covers code bytes i..min(i + 64, dim) only (masked-off bytes
            // are not read); q has q.len() >= i + 64 bytes (a multiple of 64 >= dim).
            let (c, qv) = unsafe {
                (
                    _mm512_maskz_loadu_epi8(mask, code.as_ptr().add(i).cast()),
                    _mm512_loadu_si512(q.as_ptr().add(i).cast()),
                )
            };
            acc[j] = _mm512_dpbusd_epi32(acc[j], _mm512_xor_si512(c, flip), qv);
            j ^= 1;
            i += 64;
        }
        _mm512_reduce_add_epi32(_mm512_add_epi32(acc[0], acc[1])) - bias
    }

    /// `sum(q[d] * code[d])`, 32 components per step: `vpmaddubsw(|c|, sign(q, c))` is `q *
    /// c` summed in pairs, exact because `|c| <= 128` and `|q| <= 127` keep each pair under
    /// 2^15; the components past the last multiple of 32 in scalar.
    ///
    /// # Safety
    /// The CPU must have AVX2; `q.len() == code.len()`.
    #[target_feature(enable = "avx2")]
    pub unsafe fn dot_i8_avx2(q: &[i8], code: &[u8]) -> i32 {
        let dim = q.len().min(code.len());
        let body = dim - dim % 32;
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_si256(); 2];
        let mut i = 0;
        let mut j = 0;
        while i < body {
            // SAFETY: i + 32 <= body <= dim: both loads in bounds.
            let (c, qv) = unsafe {
                (
                    _mm256_loadu_si256(code.as_ptr().add(i).cast()),
                    _mm256_loadu_si256(q.as_ptr().add(i).cast()),
                )
            };
            let p = _mm256_maddubs_epi16(_mm256_abs_epi8(c), _mm256_sign_epi8(qv, c));
            acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(p, ones));
            j ^= 1;
            i += 32;
        }
        let v = _mm256_add_epi32(acc[0], acc[1]);
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        let mut sum = _mm_cvtsi128_si32(s);
        for (&x, &c) in q[body..dim].iter().zip(&code[body..dim]) {
            sum += i32::from(x) * i32::from(c as i8);
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;

    /// The f64 dot product and squared distance: the reference.
    fn reference(a: &[f32], b: &[f32]) -> (f64, f64) {
        a.iter().zip(b).fold((0.0, 0.0), |(d, l), (&x, &y)| {
            let (x, y) = (f64::from(x), f64::from(y));
            (d + x * y, l + (x - y) * (x - y))
        })
    }

    #[test]
    fn every_path_matches_the_f64_reference_at_every_length() {
        let mut rng = Rng::new(7);
        let mut paths = vec![
            Fast::new(Kernels::of(KernelKind::Scalar)),
            Fast::new(Kernels::best()),
        ];
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            paths.push(Fast {
                path: Path::Avx2,
                kernels: Kernels::best(),
            });
        }
        for n in (0..80).chain([127, 128, 129, 383, 384, 385, 1000]) {
            let a: Vec<f32> = (0..n).map(|_| rng.f32()).collect();
            let b: Vec<f32> = (0..n).map(|_| rng.f32()).collect();
            let (d, l) = reference(&a, &b);
            let tol = 1e-5 * (1.0 + n as f64);
            for f in &paths {
                let (gd, gl) = (f64::from(f.dot(&a, &b)), f64::from(f.l2sq(&a, &b)));
                assert!((gd - d).abs() <= tol, "{:?} n {n}: dot {gd} vs {d}", f.path);
                assert!(
                    (gl - l).abs() <= tol,
                    "{:?} n {n}: l2sq {gl} vs {l}",
                    f.path
                );
            }
        }
    }

    #[test]
    fn every_int8_path_matches_the_scalar_dot() {
        let mut rng = Rng::new(8);
        for n in (0usize..140).chain([383, 384, 385, 1000]) {
            // Queries in -127..=127 (the prepared query's range); codes reach -128 too, and are
            // longer than the query (a norm follows them).
            let q: Vec<i8> = (0..n).map(|_| (rng.f32() * 127.9) as i8).collect();
            let code: Vec<u8> = (0..n + 4)
                .map(|_| (rng.f32() * 128.0) as i8 as u8)
                .collect();
            let want = crate::quant::kernels::scalar::dot_i8(&q, crate::quant::bytes_as_i8(&code));
            let best = Int8Dot::new(&q);
            let mut paths = vec![best.path, Int8Path::Scalar];
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                paths.push(Int8Path::Avx2);
            }
            for path in paths {
                let d = Int8Dot {
                    path,
                    ..best.clone()
                };
                assert_eq!(d.dot(&code), want, "{path:?} n {n}");
                assert_eq!(
                    d.dot(&code[..n.saturating_sub(1)]),
                    if n == 0 { want } else { 0 }
                );
            }
        }
    }
}
