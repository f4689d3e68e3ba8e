//! Vector comparison: the metric picks a formula, the platform picks a kernel, once, at open.

#[cfg(not(target_arch = "wasm32"))]
mod gemm_block;
#[cfg(target_arch = "x86_64")]
mod multi_avx2;
#[cfg(target_arch = "x86_64")]
mod multi_avx512;
mod multi_simd128;
#[cfg(target_arch = "x86_64")]
mod packed_avx2;
#[cfg(target_arch = "x86_64")]
mod packed_avx512;
pub mod scalar;
pub mod simd128;
#[cfg(not(target_arch = "wasm32"))]
pub mod simsimd;

/// Which implementation computes the pairwise products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelKind {
    /// `scalar.rs`: the reference, f64 accumulation.
    Scalar,
    /// `simd128.rs`: `wide` 128-bit lanes (the wasm32 kernel; portable).
    Simd128,
    /// SimSIMD with run-time ISA dispatch (native only).
    #[cfg(not(target_arch = "wasm32"))]
    SimSimd,
}

type PairFn = fn(&[f32], &[f32]) -> f32;

/// Which multi-query kernel scores small groups of queries. The dispatch picks AVX-512 or
/// AVX2 on x86_64 and SIMD128 on wasm32; elsewhere none. SIMD128 also runs natively (on SSE)
/// when asked for by name, so tests and benches compare it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MultiQuery {
    /// `multi_avx2.rs`: AVX2+FMA, 4 queries x 3 rows of 8-lane accumulators.
    Avx2,
    /// `multi_avx512.rs`: AVX-512F, 4 rows x 4 queries of 16-lane accumulators.
    Avx512,
    /// `multi_simd128.rs`: `wide` 128-bit lanes, 4 queries x 6 rows (1 x 4 for leftover
    /// queries); the wasm32 guest's kernel.
    Simd128,
}

impl MultiQuery {
    /// Every multi-query kernel this CPU can run (tests and benches compare them all).
    pub fn available() -> Vec<MultiQuery> {
        [MultiQuery::Avx2, MultiQuery::Avx512, MultiQuery::Simd128]
            .into_iter()
            .filter(|m| m.function().is_some())
            .collect()
    }

    /// The kernel, when this CPU has the instructions it needs.
    fn function(self) -> Option<MultiDotFn> {
        if self == MultiQuery::Simd128 {
            return Some(multi_simd128::dot_many_simd128);
        }
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                MultiQuery::Avx2 => {
                    if std::arch::is_x86_feature_detected!("avx2")
                        && std::arch::is_x86_feature_detected!("fma")
                    {
                        return Some(multi_avx2::dot_many_checked);
                    }
                }
                MultiQuery::Avx512 => {
                    if std::arch::is_x86_feature_detected!("avx512f") {
                        return Some(multi_avx512::dot_many_checked);
                    }
                }
                MultiQuery::Simd128 => {}
            }
        }
        None
    }

    /// A short name for reports and bench ids.
    pub fn name(self) -> &'static str {
        match self {
            MultiQuery::Avx2 => "avx2",
            MultiQuery::Avx512 => "avx512",
            MultiQuery::Simd128 => "simd128",
        }
    }
}

/// A chosen set of kernels. `Copy`, so each search carries it by value.
#[derive(Debug, Clone, Copy)]
pub struct Kernels {
    kind: KernelKind,
    dot: PairFn,
    l2sq: PairFn,
    /// Multi-query dot product for batches, when the CPU has one.
    multi_dot: Option<(MultiQuery, MultiDotFn)>,
    /// Matrix-product dot products for groups of at least `GEMM_MIN_QUERIES` queries.
    gemm_dot: Option<MultiDotFn>,
    /// Dot products over queries packed across the lanes, for groups of at least
    /// `PACKED_MIN_QUERIES` (see [`Kernels::pack_queries`]), and the ISA's name.
    packed_dot: Option<(&'static str, PackedDotFn)>,
}

/// `packed_dot(queries, rows, nrows, row_stride, out)`: as [`MultiDotFn`], with the queries
/// packed once per search.
type PackedDotFn = fn(&PackedQueries, &[f32], usize, usize, &mut [f32]);

/// Queries transposed into groups of sixteen for the packed kernel: line `g * dim + k` holds
/// component `k` of queries `16 g .. 16 g + 16` (zero past the last query). Made once per
/// search by [`Kernels::pack_queries`] and shared by every block and worker.
pub struct PackedQueries {
    lanes: Vec<Lanes16>,
    nq: usize,
    dim: usize,
}

/// One aligned line of sixteen lanes, so the kernel loads each with one aligned load.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Lanes16([f32; 16]);

impl PackedQueries {
    /// Packs `nq` queries of `dim` components (contiguous, stride `dim`). The flat index
    /// packs through [`Kernels::pack_queries`], which also decides whether to; benches pack
    /// any group directly.
    pub fn new(queries: &[f32], nq: usize, dim: usize) -> Self {
        let mut lanes = vec![Lanes16([0.0; 16]); nq.div_ceil(16) * dim];
        for (q, query) in queries.chunks_exact(dim.max(1)).take(nq).enumerate() {
            let (group, lane) = (q / 16, q % 16);
            for (k, &x) in query.iter().enumerate() {
                lanes[group * dim + k].0[lane] = x;
            }
        }
        PackedQueries { lanes, nq, dim }
    }

    /// How many queries are packed.
    pub fn count(&self) -> usize {
        self.nq
    }

    /// Their dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Query `q`'s component `k` (the scalar fallback reads them back).
    fn get(&self, q: usize, k: usize) -> f32 {
        self.lanes[(q / 16) * self.dim + k].0[q % 16]
    }

    /// The [`MultiDotFn`] contract for these queries: every row and output the call would
    /// touch is in bounds, and the lines cover every group.
    fn shapes_ok(&self, rows: &[f32], nrows: usize, row_stride: usize, out: &[f32]) -> bool {
        rows_and_out_fit(self.nq, rows, nrows, row_stride, self.dim, out)
            && self.lanes.len() == self.nq.div_ceil(16) * self.dim
    }

    /// The raw view a packed kernel works on, or `None` when the call breaks the contract
    /// ([`PackedQueries::shapes_ok`]).
    #[cfg(target_arch = "x86_64")]
    fn call(
        &self,
        rows: &[f32],
        nrows: usize,
        row_stride: usize,
        out: &mut [f32],
    ) -> Option<PackedCall> {
        self.shapes_ok(rows, nrows, row_stride, out)
            .then_some(PackedCall {
                lanes: self.lanes.as_ptr() as *const f32,
                rp: rows.as_ptr(),
                out: out.as_mut_ptr(),
                nq: self.nq,
                nrows,
                row_stride,
                dim: self.dim,
            })
    }
}

/// Raw views of one packed-kernel call, made by [`PackedQueries::call`] only after its bounds
/// were checked; the kernels read the queries' lines and the rows and write `out` through it.
#[cfg(target_arch = "x86_64")]
struct PackedCall {
    /// `groups * dim` lines of 16 floats: line `g * dim + k` holds component `k` of queries
    /// `16 g .. 16 g + 16`.
    lanes: *const f32,
    rp: *const f32,
    out: *mut f32,
    nq: usize,
    nrows: usize,
    row_stride: usize,
    dim: usize,
}

/// `multi_dot(queries, nq, rows, nrows, row_stride, dim, out)`: `out[q * nrows + r]` =
/// dot(query q, row r). Queries are contiguous with stride `dim`.
pub(crate) type MultiDotFn = fn(&[f32], usize, &[f32], usize, usize, usize, &mut [f32]);

/// Below this many components the SIMD set-up costs more than it saves.
const MIN_SIMD_DIM: usize = 16;

/// From this many queries a group goes through the GEMM, where the multi-query kernel is not
/// AVX-512: below it, packing the block of rows costs more than the register tiling saves.
/// `cargo bench --bench kernels -- gemm_vs_multi` on the 2-core Zen 3 VM (1024 rows of
/// 1536-d): 16 queries 1.7 ms GEMM vs 1.3 ms multi-query, 64 queries 4.7 vs 5.2 ms, 256
/// queries 15.3 vs 21.1 ms. On the AVX-512 VM (Zen 5) the AVX-512 kernels beat the GEMM at
/// every group size from 4 to 256 and at 384, 768 and 1536 dimensions (1536-d, 256 queries:
/// 7.7 ms GEMM, 5.9 ms row-major, 4.6 ms packed), so there it is not used.
pub const GEMM_MIN_QUERIES: usize = 64;

/// From this many queries a group goes through the packed kernel where there is one: a
/// group of sixteen fills its registers' lanes; below this, too many lanes would idle.
/// `cargo bench --bench kernels -- dot_many/d1536` (42 rows, the flat index's block), on
/// AVX-512 (Zen 5): 8 queries 24 M pairs/s packed vs 38 M row-major, 12 queries 43 vs 37, 16
/// queries 48 vs 36. On AVX2 (Zen 3) the kernels tie on rows in L1 (16 queries 31.5 vs 33.2
/// us per block), but over a whole 50,000 x 1536 scan, where the rows come from memory, a
/// batch of 16 ran 548-663 QPS packed against 409-464 row-major (Python, alternated runs).
pub const PACKED_MIN_QUERIES: usize = 12;

/// From this dimension a group goes through the packed kernel: sixteen queries of it (64 KiB
/// and more) no longer fit in L1 beside the rows, so the row-major kernel reloads them from
/// L2 for every row tile. Below it the row-major kernel is as fast or faster (16 queries,
/// M pairs/s packed vs row-major: 1536-d 48 vs 36, 768-d 96-118 vs 95-98, 384-d 124-219 vs
/// 169-222).
pub const PACKED_MIN_DIM: usize = 1024;

impl Kernels {
    /// The best kernels for this platform.
    pub fn best() -> Self {
        #[cfg(not(target_arch = "wasm32"))]
        {
            Self::of(KernelKind::SimSimd)
        }
        #[cfg(target_arch = "wasm32")]
        {
            Self::of(KernelKind::Simd128)
        }
    }

    /// A specific implementation (tests and benches force one to compare them).
    pub fn of(kind: KernelKind) -> Self {
        let (dot, l2sq): (PairFn, PairFn) = match kind {
            KernelKind::Scalar => (scalar::dot_f32_scalar, scalar::l2sq_f32_scalar),
            KernelKind::Simd128 => (simd128::dot_f32_simd128, simd128::l2sq_f32_simd128),
            #[cfg(not(target_arch = "wasm32"))]
            KernelKind::SimSimd => (simsimd::dot_f32_simsimd, simsimd::l2sq_f32_simsimd),
        };
        let multi_dot = if kind == KernelKind::Scalar {
            None
        } else {
            multi_dot_for_cpu()
        };
        #[cfg(not(target_arch = "wasm32"))]
        let gemm_dot: Option<MultiDotFn> =
            (kind != KernelKind::Scalar).then_some(gemm_block::dot_many_gemm as MultiDotFn);
        #[cfg(target_arch = "wasm32")]
        let gemm_dot: Option<MultiDotFn> = None;
        let packed_dot = if kind == KernelKind::Scalar {
            None
        } else {
            packed_dot_for_cpu()
        };
        Kernels {
            kind,
            dot,
            l2sq,
            multi_dot,
            gemm_dot,
            packed_dot,
        }
    }

    /// Which implementation this is.
    pub fn kind(&self) -> KernelKind {
        self.kind
    }

    /// A short name for reports: the kernel and, natively, the ISA it dispatched to.
    pub fn describe(&self) -> String {
        match self.kind {
            KernelKind::Scalar => "scalar".into(),
            KernelKind::Simd128 => format!(
                "simd128 (wide){}",
                match self.multi_dot {
                    Some((m, _)) => format!(" + {} multi-query", m.name()),
                    None => String::new(),
                }
            ),
            #[cfg(not(target_arch = "wasm32"))]
            KernelKind::SimSimd => format!(
                "simsimd ({}){}{}{}",
                simsimd::isa_name(),
                match self.multi_dot {
                    Some((m, _)) => format!(" + {} multi-query", m.name()),
                    None => String::new(),
                },
                match self.packed_dot {
                    Some((isa, _)) => format!(" + {isa} packed groups"),
                    None => String::new(),
                },
                if self.gemm_dot.is_some() {
                    " + gemm batches"
                } else {
                    ""
                }
            ),
        }
    }

    /// True when batches (and single dot-product queries) use the multi-query kernel.
    pub fn has_multi_dot(&self) -> bool {
        self.multi_dot.is_some()
    }

    /// Which multi-query kernel this set uses, if any.
    pub fn multi_query(&self) -> Option<MultiQuery> {
        self.multi_dot.map(|(m, _)| m)
    }

    /// The same kernels with the multi-query kernel `m`, or `None` when this CPU cannot run
    /// it or the set is the scalar reference (benches and tests compare them).
    pub fn with_multi_query(mut self, m: MultiQuery) -> Option<Self> {
        if self.kind == KernelKind::Scalar {
            return None;
        }
        self.multi_dot = Some((m, m.function()?));
        Some(self)
    }

    /// The same kernels without the GEMM path, so benches and tests can compare the two.
    pub fn without_gemm(mut self) -> Self {
        self.gemm_dot = None;
        self
    }

    /// True when this set has a packed-queries kernel (AVX-512F, or AVX2 with FMA).
    pub fn has_packed(&self) -> bool {
        self.packed_dot.is_some()
    }

    /// The queries packed for [`Kernels::dot_many_packed`] when a group of `nq` of them is
    /// scored that way here: the CPU has the packed kernel, the group fills most of its
    /// lanes (at least `PACKED_MIN_QUERIES`), its queries are too large for L1
    /// (`PACKED_MIN_DIM`) and it is not one for the GEMM.
    pub fn pack_queries(&self, queries: &[f32], nq: usize, dim: usize) -> Option<PackedQueries> {
        let fits = self.packed_dot.is_some()
            && nq >= PACKED_MIN_QUERIES
            && dim >= PACKED_MIN_DIM
            && queries.len() >= nq * dim
            && !self.uses_gemm(nq, dim);
        fits.then(|| PackedQueries::new(queries, nq, dim))
    }

    /// [`Kernels::dot_many`] for queries packed by [`Kernels::pack_queries`]: `out[q * nrows
    /// + r]` = dot(query q, row r).
    pub fn dot_many_packed(
        &self,
        packed: &PackedQueries,
        rows: &[f32],
        nrows: usize,
        row_stride: usize,
        out: &mut [f32],
    ) {
        if let Some((_, kernel)) = self.packed_dot {
            kernel(packed, rows, nrows, row_stride, out);
            return;
        }
        // Not reached through `pack_queries`; kept correct for a set without the kernel.
        let dim = packed.dim();
        if !packed.shapes_ok(rows, nrows, row_stride, out) {
            debug_assert!(false, "dot_many_packed: bad shapes");
            return;
        }
        for q in 0..packed.count() {
            for r in 0..nrows {
                let row = &rows[r * row_stride..r * row_stride + dim];
                out[q * nrows + r] = row
                    .iter()
                    .enumerate()
                    .map(|(k, x)| x * packed.get(q, k))
                    .sum();
            }
        }
    }

    /// True when a group of `nq` queries is scored as a matrix product: never where the
    /// multi-query kernel is AVX-512 (see `GEMM_MIN_QUERIES`).
    pub fn uses_gemm(&self, nq: usize, dim: usize) -> bool {
        self.gemm_dot.is_some()
            && self.multi_query() != Some(MultiQuery::Avx512)
            && nq >= GEMM_MIN_QUERIES
            && dim >= MIN_SIMD_DIM
    }

    /// Inner product. `a.len() == b.len()` is the caller's contract.
    #[inline]
    pub fn dot(&self, a: &[f32], b: &[f32]) -> f32 {
        if a.len() < MIN_SIMD_DIM {
            return scalar::dot_f32_scalar(a, b);
        }
        (self.dot)(a, b)
    }

    /// Squared Euclidean distance. `a.len() == b.len()` is the caller's contract.
    #[inline]
    pub fn l2sq(&self, a: &[f32], b: &[f32]) -> f32 {
        if a.len() < MIN_SIMD_DIM {
            return scalar::l2sq_f32_scalar(a, b);
        }
        (self.l2sq)(a, b)
    }

    /// [`Kernels::dot_many`], but through the GEMM whatever the group size when this set has
    /// one: benches use it to find the crossover (`GEMM_MIN_QUERIES`).
    #[allow(clippy::too_many_arguments)] // the same shape description as `dot_many`
    pub fn dot_many_preferring_gemm(
        &self,
        queries: &[f32],
        nq: usize,
        rows: &[f32],
        nrows: usize,
        row_stride: usize,
        dim: usize,
        out: &mut [f32],
    ) {
        match self.gemm_dot {
            Some(gemm) if dim >= MIN_SIMD_DIM => {
                gemm(queries, nq, rows, nrows, row_stride, dim, out)
            }
            _ => self.dot_many(queries, nq, rows, nrows, row_stride, dim, out),
        }
    }

    /// Dot products of `nq` queries (contiguous, stride `dim`) with `nrows` rows (stride
    /// `row_stride`), into `out[q * nrows + r]`. A large group is one GEMM; a small one uses the
    /// multi-query kernel when there is one, so each row is loaded once per group of queries
    /// instead of once per query.
    #[allow(clippy::too_many_arguments)] // a BLAS-style shape description; a struct would only rename it
    pub fn dot_many(
        &self,
        queries: &[f32],
        nq: usize,
        rows: &[f32],
        nrows: usize,
        row_stride: usize,
        dim: usize,
        out: &mut [f32],
    ) {
        if let Some(gemm) = self.gemm_dot {
            if self.uses_gemm(nq, dim) {
                gemm(queries, nq, rows, nrows, row_stride, dim, out);
                return;
            }
        }
        if let Some((_, multi)) = self.multi_dot {
            if dim >= MIN_SIMD_DIM {
                multi(queries, nq, rows, nrows, row_stride, dim, out);
                return;
            }
        }
        for q in 0..nq {
            let query = &queries[q * dim..(q + 1) * dim];
            for r in 0..nrows {
                let row = &rows[r * row_stride..r * row_stride + dim];
                out[q * nrows + r] = self.dot(query, row);
            }
        }
    }
}

/// The [`MultiDotFn`] contract on these slices: every query, row and output the call would
/// touch is in bounds. The kernels test it once, up front.
#[allow(clippy::too_many_arguments)] // the shape description of `MultiDotFn`
pub(crate) fn dot_many_shapes_ok(
    queries: &[f32],
    nq: usize,
    rows: &[f32],
    nrows: usize,
    row_stride: usize,
    dim: usize,
    out: &[f32],
) -> bool {
    queries.len() >= nq * dim && rows_and_out_fit(nq, rows, nrows, row_stride, dim, out)
}

/// The rows and output half of that contract (the packed kernel's queries are checked by
/// `PackedQueries`).
fn rows_and_out_fit(
    nq: usize,
    rows: &[f32],
    nrows: usize,
    row_stride: usize,
    dim: usize,
    out: &[f32],
) -> bool {
    let rows_ok = nrows == 0 || (nrows - 1) * row_stride + dim <= rows.len();
    rows_ok && out.len() >= nq * nrows && row_stride >= dim
}

/// The packed-queries kernel: AVX-512F where present, else AVX2 with FMA.
fn packed_dot_for_cpu() -> Option<(&'static str, PackedDotFn)> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Some(("avx512", packed_avx512::dot_many_packed_checked));
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Some(("avx2", packed_avx2::dot_many_packed_checked));
        }
    }
    None
}

/// The fastest multi-query kernel this CPU runs: AVX-512 where present, else AVX2; on wasm32,
/// SIMD128. Natively SIMD128 is never picked (tests and benches ask for it by name): off
/// x86_64 the pairwise kernels score batches, as before it existed.
fn multi_dot_for_cpu() -> Option<(MultiQuery, MultiDotFn)> {
    #[cfg(target_arch = "wasm32")]
    let order = [MultiQuery::Simd128];
    #[cfg(not(target_arch = "wasm32"))]
    let order = [MultiQuery::Avx512, MultiQuery::Avx2];
    order.into_iter().find_map(|m| Some((m, m.function()?)))
}

/// What the kernels' unit tests check, written once.
#[cfg(test)]
pub(crate) mod check {
    use super::scalar::dot_f32_scalar;

    /// Asserts that `out[q * nrows + r]` is dot(query q, row r) for every pair, within the
    /// f32 accumulation error (1e-5 of the sum of the products' magnitudes) of the scalar
    /// reference. `context` names the case in a failure.
    #[allow(clippy::too_many_arguments)] // the shape of `MultiDotFn`, and the case's name
    pub(crate) fn dot_many_output(
        queries: &[f32],
        nq: usize,
        rows: &[f32],
        nrows: usize,
        row_stride: usize,
        dim: usize,
        out: &[f32],
        context: &str,
    ) {
        for q in 0..nq {
            for r in 0..nrows {
                let a = &queries[q * dim..(q + 1) * dim];
                let b = &rows[r * row_stride..r * row_stride + dim];
                let want = f64::from(dot_f32_scalar(a, b));
                let mag: f64 = a
                    .iter()
                    .zip(b)
                    .map(|(x, y)| (f64::from(*x) * f64::from(*y)).abs())
                    .sum();
                let got = f64::from(out[q * nrows + r]);
                assert!(
                    (got - want).abs() <= 1e-5 * mag.max(1.0),
                    "{context} q {q} r {r}: {got} vs {want}"
                );
            }
        }
    }
}
