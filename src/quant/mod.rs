//! Compressed vectors: each row is also kept as a short code (int8: one byte per component;
//! binary: one bit), so a search reads 4x or 32x fewer bytes, keeps `k * oversample`
//! candidates by their approximate scores, and rescores those exactly from the f32 rows.
//!
//! - [`Codebook`]: the trained parameters (int8: per-dimension offset and scale; binary: the
//!   per-dimension mean the signs are taken around), how a row becomes a code and how a query
//!   is prepared so codes can be scored with integer arithmetic.
//! - [`kernels`]: the integer dot product of int8 codes and the table-lookup dot product of
//!   bit codes, scalar references and SIMD versions chosen at run time (AVX2 / AVX-512 VNNI
//!   natively, SIMD128 on wasm32, NEON on aarch64).
//! - [`bit_groups`]: how binary codes lie in memory for those lookups (groups of 32 rows).
//! - [`codes::CodeTable`]: the codes of rows `0..n`, shared by snapshots like the rows are.
//! - [`index::QuantizedIndex`]: the [`crate::index::Index`] that scans codes and rescores.
//!
//! Codes are derived data: a pure function of the codebook and the f32 row. Their file is
//! written and fsynced before the redb commit that makes the rows it covers committed, and on
//! open any rows the file lacks are re-encoded from `vectors.bin` (see `crate::db`), so a
//! crash can never leave codes that disagree with the committed rows.

pub mod bit_groups;
pub mod codes;
pub mod codes_file;
pub mod index;
pub mod kernels;

use crate::error::{Error, Result};
use crate::types::Metric;
pub use kernels::Kernel;

/// From this many int8 queries a block is scored in packed groups (where the kernel has a
/// packed path): a group costs the same per row whatever its size, so below this a query at
/// a time is as fast.
const PACKED_I8_MIN_QUERIES: usize = 6;

/// Prepared queries scored against blocks together ([`Codebook::score_block_many`]), with
/// the int8 ones packed once for the whole scan ([`Codebook::prepare_group`]).
pub struct PreparedGroup<'a> {
    queries: &'a [PreparedQuery],
    /// Packed groups of fifteen (the last may be smaller) covering the first queries, in
    /// order; the rest are scored one at a time.
    packed: Vec<kernels::PackedI8>,
}

impl PreparedGroup<'_> {
    /// The queries, in order.
    pub fn queries(&self) -> &[PreparedQuery] {
        self.queries
    }
}

/// What an index is built as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IndexKind {
    /// Every matching row is scored (over codes when quantized).
    Flat,
    /// A navigable small-world graph (`crate::hnsw`): a search visits a few thousand rows
    /// (traversing on codes when quantized) and rescores the best exactly.
    Hnsw,
}

impl IndexKind {
    /// The name used by the APIs (`"flat"`).
    pub fn name(self) -> &'static str {
        match self {
            IndexKind::Flat => "flat",
            IndexKind::Hnsw => "hnsw",
        }
    }
}

impl std::str::FromStr for IndexKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "flat" => Ok(IndexKind::Flat),
            "hnsw" => Ok(IndexKind::Hnsw),
            other => Err(Error::invalid(format!(
                "unknown index kind {other:?}: use \"flat\" or \"hnsw\""
            ))),
        }
    }
}

/// How rows are compressed for the code scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quantization {
    /// One signed byte per component (per-dimension offset and scale): 4x fewer bytes.
    Int8,
    /// One bit per component (the sign around the per-dimension mean): 32x fewer bytes.
    Binary,
}

impl Quantization {
    /// The name used by the APIs (`"int8"`, `"binary"`).
    pub fn name(self) -> &'static str {
        match self {
            Quantization::Int8 => "int8",
            Quantization::Binary => "binary",
        }
    }

    /// Candidates kept per hit when the caller gives no `oversample`: the smallest that
    /// reaches recall@10 of at least 0.99 (int8) and 0.95 (binary) on real MiniLM embeddings
    /// with one step of margin for denser sets. `tests/quant_kernels.rs` on the shared
    /// 20k x 384 set (200 queries): int8 0.990 / 1.000 / 1.000 at oversample 1 / 2 / 3;
    /// binary 0.9595 / 0.9925 / 0.9990 at 5 / 10 / 20.
    pub fn default_oversample(self) -> usize {
        match self {
            Quantization::Int8 => 3,
            Quantization::Binary => 10,
        }
    }
}

impl std::str::FromStr for Quantization {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "int8" | "i8" | "sq8" => Ok(Quantization::Int8),
            "binary" | "bit" | "b1" | "1bit" | "1-bit" => Ok(Quantization::Binary),
            other => Err(Error::invalid(format!(
                "unknown quantization {other:?}: use \"int8\" or \"binary\""
            ))),
        }
    }
}

/// What `create_index` builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexSpec {
    /// The index's kind.
    pub kind: IndexKind,
    /// The codes the scan reads; `None` is the plain exact scan (for `Flat`, which needs no
    /// index: creating it is an error that says so). An HNSW graph traverses on them (int8
    /// only) or, with `None`, on the f32 rows.
    pub quantization: Option<Quantization>,
    /// The graph's parameters for `Hnsw` (`None`: [`HnswParams::default`]); an error with
    /// `Flat`.
    pub hnsw: Option<HnswParams>,
}

impl IndexSpec {
    /// A flat scan over `quantization` codes, rescored exactly.
    pub fn flat(quantization: Quantization) -> Self {
        IndexSpec {
            kind: IndexKind::Flat,
            quantization: Some(quantization),
            hnsw: None,
        }
    }

    /// An HNSW graph with default parameters, traversing on `quantization` codes (int8) or
    /// on the f32 rows (`None`); rescored exactly either way.
    pub fn hnsw(quantization: Option<Quantization>) -> Self {
        IndexSpec {
            kind: IndexKind::Hnsw,
            quantization,
            hnsw: Some(HnswParams::default()),
        }
    }

    /// The same spec with graph parameters `params`.
    pub fn with_hnsw(mut self, params: HnswParams) -> Self {
        self.hnsw = Some(params);
        self
    }
}

/// An HNSW graph's build parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HnswParams {
    /// Links per node on the upper layers (twice this on the bottom layer).
    pub m: usize,
    /// Candidates kept while a node's links are chosen at insertion.
    pub ef_construction: usize,
}

impl Default for HnswParams {
    fn default() -> Self {
        HnswParams {
            m: crate::hnsw::DEFAULT_M,
            ef_construction: crate::hnsw::DEFAULT_EF_CONSTRUCTION,
        }
    }
}

impl HnswParams {
    /// The parameters as an API takes them, each optional: `None` when neither is given (the
    /// spec then takes the defaults), else the missing one at its default. Not validated
    /// here: the engine checks them, and rejects them with a `Flat` spec.
    pub fn given(m: Option<usize>, ef_construction: Option<usize>) -> Option<Self> {
        if m.is_none() && ef_construction.is_none() {
            return None;
        }
        let default = HnswParams::default();
        Some(HnswParams {
            m: m.unwrap_or(default.m),
            ef_construction: ef_construction.unwrap_or(default.ef_construction),
        })
    }

    /// An error that says which parameter is out of its range.
    pub fn validate(&self) -> Result<()> {
        use crate::hnsw::{MAX_EF, MAX_M};
        if !(2..=MAX_M).contains(&self.m) {
            return Err(Error::invalid(format!(
                "m {} is out of range 2..={MAX_M} (links per node; 16 suits most data)",
                self.m
            )));
        }
        if !(1..=MAX_EF).contains(&self.ef_construction) {
            return Err(Error::invalid(format!(
                "ef_construction {} is out of range 1..={MAX_EF} (candidates per insertion; 200 suits most data)",
                self.ef_construction
            )));
        }
        Ok(())
    }
}

/// What `index_info` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexInfo {
    /// The kind (`Flat` when no index was created: the exact scan).
    pub kind: IndexKind,
    /// The codes, if the index is quantized.
    pub quantization: Option<Quantization>,
    /// Rows the index covers (every row of `vectors.bin`, deleted ones included until
    /// compaction; 0 without an index).
    pub rows: u64,
    /// Bytes the index holds besides the f32 rows (codes, codebook and graph links; 0
    /// without an index).
    pub bytes: u64,
    /// The graph's parameters, for an HNSW index.
    pub hnsw: Option<HnswParams>,
}

/// Largest `oversample` accepted: more candidates than this per hit is a full rescoring.
pub const MAX_OVERSAMPLE: usize = 1000;

/// The trained parameters of one quantization, for rows of `dim` components and `metric`.
#[derive(Debug, Clone, PartialEq)]
pub enum Codebook {
    /// Component `d` of a row is `offset[d] + scale[d] * code[d]`, `code` in `-127..=127`.
    Int8 {
        /// The metric the codes serve (cosine codes are of unit-length rows).
        metric: Metric,
        /// Per-dimension centre.
        offset: Vec<f32>,
        /// Per-dimension step (never 0).
        scale: Vec<f32>,
    },
    /// Bit `d` of a row is set when component `d` is above `mean[d]`. The query is not
    /// reduced to signs: it keeps 4 bits per component (see [`PreparedQuery::Binary`]),
    /// which on MiniLM embeddings lifts recall@10 at oversample 10 from 0.93 (sign against
    /// sign, Hamming) to 0.99, for a table lookup per nibble ([`bit_groups`]).
    Binary {
        /// The metric the codes serve (cosine codes are of unit-length rows).
        metric: Metric,
        /// Per-dimension mean of the training rows.
        mean: Vec<f32>,
    },
}

/// A query made ready for scoring codes of one [`Codebook`].
#[derive(Debug, Clone)]
pub enum PreparedQuery {
    /// `approx_dot = bias + step * sum(q[d] * code[d])` (integer dot product).
    Int8 {
        /// The query's components times the codebook's scales, quantized to `-127..=127`.
        q: Vec<i8>,
        /// The f32 value of one unit of the integer dot product.
        step: f32,
        /// `dot(query, offset)`: the part of every row's dot product the codes do not carry.
        bias: f32,
        /// The query's squared norm (L2 keys).
        norm_sq: f32,
    },
    /// `approx_dot = step * sum_d v[d] * bit_d(code)` (up to a per-query constant): the
    /// query's components quantized to `v` in `-8..=7` (`q ~ step * v`), held as the four bit
    /// planes of `v` in 4-bit two's complement (`v = -8 b3 + 4 b2 + 2 b1 + b0`), so a code is
    /// scored with four popcounts per word ([`kernels::scalar::bits_dot`]), or by table
    /// lookups (`lut`) over grouped codes, which give the same sums.
    /// A row's bits are the signs `s = 2 * bit - 1` of `row - mean`, and `row - mean ~ a * s`,
    /// so `dot(q, row)` ranks like `dot(q, s) = 2 * dot(q, bits) - sum(q)`.
    Binary {
        /// Plane `j` (bit `j` of `v & 0xf`) is `planes[j * words..(j + 1) * words]`, `words =
        /// ceil(dim / 64)`; bits past `dim` are zero.
        planes: Vec<u64>,
        /// The f32 value of one unit of `v`.
        step: f32,
        /// The same query as 16-entry tables per nibble of a code
        /// ([`kernels::bits_lut`]), for codes in the scan's layout ([`bit_groups`]).
        lut: Vec<u8>,
    },
}

impl Codebook {
    /// Trains a codebook for `quantization` on `rows` (each `dim` components; the f32 norm is
    /// passed separately so cosine codes can be of unit-length rows). Rows with a non-finite
    /// or zero norm are skipped. With no rows the codebook is neutral (offset 0, scale 1/127,
    /// mean 0): int8 codes then clip every component outside [-1, 1], so the database
    /// retrains it as rows arrive (`retrain_outgrown_codes`).
    pub fn train<'a>(
        quantization: Quantization,
        metric: Metric,
        dim: usize,
        rows: impl Iterator<Item = (&'a [f32], f32)>,
    ) -> Codebook {
        let mut lo = vec![f32::INFINITY; dim];
        let mut hi = vec![f32::NEG_INFINITY; dim];
        let mut sum = vec![0f64; dim];
        let mut n = 0u64;
        let mut unit = vec![0f32; dim];
        for (row, norm) in rows {
            if row.len() != dim {
                continue;
            }
            let v = match normalized(metric, row, norm, &mut unit) {
                Some(v) => v,
                None => continue,
            };
            for d in 0..dim {
                lo[d] = lo[d].min(v[d]);
                hi[d] = hi[d].max(v[d]);
                sum[d] += f64::from(v[d]);
            }
            n += 1;
        }
        match quantization {
            Quantization::Int8 => {
                let (offset, scale) = (0..dim)
                    .map(|d| {
                        if n == 0 || hi[d] <= lo[d] {
                            let centre = if n == 0 { 0.0 } else { lo[d] };
                            (centre, 1.0 / 127.0)
                        } else {
                            ((hi[d] + lo[d]) / 2.0, (hi[d] - lo[d]) / 254.0)
                        }
                    })
                    .unzip();
                Codebook::Int8 {
                    metric,
                    offset,
                    scale,
                }
            }
            Quantization::Binary => Codebook::Binary {
                metric,
                mean: sum
                    .iter()
                    .map(|s| if n == 0 { 0.0 } else { (s / n as f64) as f32 })
                    .collect(),
            },
        }
    }

    /// Trains on an even sample of at most `budget` of the `live` rows among rows `0..rows`
    /// of `view` that `is_dead` lets through (read one by one, so a view that is not resident
    /// copies only the sample).
    pub fn train_on_sample(
        quantization: Quantization,
        metric: Metric,
        view: &dyn crate::storage::RowView,
        rows: u64,
        live: u64,
        budget: u64,
        is_dead: impl Fn(u64) -> bool,
    ) -> Result<Codebook> {
        let dim = view.layout().dim as usize;
        let step = live.div_ceil(budget.max(1)).max(1);
        let mut sample = Vec::new();
        for (k, row) in (0..rows).filter(|&row| !is_dead(row)).enumerate() {
            if (k as u64).is_multiple_of(step) {
                if let Some(data) = view.read_row(row)? {
                    sample.push(data);
                }
            }
        }
        let sample = sample.iter().map(|data| (&data[..dim], data[dim]));
        Ok(Codebook::train(quantization, metric, dim, sample))
    }

    /// Which quantization this is.
    pub fn quantization(&self) -> Quantization {
        match self {
            Codebook::Int8 { .. } => Quantization::Int8,
            Codebook::Binary { .. } => Quantization::Binary,
        }
    }

    /// The metric the codes serve.
    pub fn metric(&self) -> Metric {
        match self {
            Codebook::Int8 { metric, .. } | Codebook::Binary { metric, .. } => *metric,
        }
    }

    /// Components per row.
    pub fn dim(&self) -> usize {
        match self {
            Codebook::Int8 { offset, .. } => offset.len(),
            Codebook::Binary { mean, .. } => mean.len(),
        }
    }

    /// Bytes of one row's code. Int8: `dim` codes padded to a multiple of 4, then the row's
    /// f32 squared norm (used by L2 keys). Binary: `ceil(dim / 64)` little-endian u64 words.
    pub fn code_len(&self) -> usize {
        let dim = self.dim();
        match self {
            Codebook::Int8 { .. } => dim.next_multiple_of(4) + 4,
            Codebook::Binary { .. } => dim.div_ceil(64) * 8,
        }
    }

    /// Writes the code of `row` (`dim` components; `norm` its stored L2 norm) into `out`
    /// (`code_len()` bytes).
    pub fn encode(&self, row: &[f32], norm: f32, out: &mut [u8]) {
        let dim = self.dim();
        let mut unit = vec![0f32; dim];
        let v = normalized(self.metric(), row, norm, &mut unit).unwrap_or(row);
        match self {
            Codebook::Int8 { offset, scale, .. } => {
                let padded = dim.next_multiple_of(4);
                for d in 0..dim {
                    let c = ((v[d] - offset[d]) / scale[d]).round();
                    out[d] = (c.clamp(-127.0, 127.0) as i8) as u8;
                }
                out[dim..padded].fill(0);
                out[padded..padded + 4].copy_from_slice(&(norm * norm).to_le_bytes());
            }
            Codebook::Binary { mean, .. } => {
                out.fill(0);
                for d in 0..dim {
                    if v[d] > mean[d] {
                        out[d / 8] |= 1 << (d % 8);
                    }
                }
            }
        }
    }

    /// Prepares `query` (`dim` components, `norm` its L2 norm) for [`Codebook::score`].
    pub fn prepare(&self, query: &[f32], norm: f32) -> PreparedQuery {
        match self {
            Codebook::Int8 { offset, scale, .. } => {
                let w: Vec<f32> = query.iter().zip(scale).map(|(q, s)| q * s).collect();
                let max = w.iter().fold(0f32, |m, x| m.max(x.abs()));
                let step = if max > 0.0 { max / 127.0 } else { 1.0 };
                let q = w
                    .iter()
                    .map(|x| round_clamp(x / step, -127, 127) as i8)
                    .collect();
                let bias = query.iter().zip(offset).map(|(q, o)| q * o).sum();
                PreparedQuery::Int8 {
                    q,
                    step,
                    bias,
                    norm_sq: norm * norm,
                }
            }
            Codebook::Binary { mean, .. } => {
                let words = mean.len().div_ceil(64);
                // The grid -8..=7 steps is centred on 0; `v` is stored in two's complement,
                // so the sign plane weighs -8 and no per-row correction is needed.
                let (lo, hi) = query
                    .iter()
                    .take(mean.len())
                    .fold((0f32, 0f32), |(lo, hi), &x| (lo.min(x), hi.max(x)));
                let step = (-lo / 8.0).max(hi / 7.0);
                let step = if step > 0.0 && step.is_finite() {
                    step
                } else {
                    1.0
                };
                // Each word's four plane words are built in registers, then stored.
                let mut planes = vec![0u64; 4 * words];
                let query = &query[..query.len().min(mean.len())];
                for (w, chunk) in query.chunks(64).enumerate() {
                    let mut bits = [0u64; 4];
                    for (i, &q) in chunk.iter().enumerate() {
                        let v = round_clamp(q / step, -8, 7) & 0xf;
                        for (j, b) in bits.iter_mut().enumerate() {
                            *b |= u64::from((v >> j) as u32 & 1) << i;
                        }
                    }
                    for (j, b) in bits.into_iter().enumerate() {
                        planes[j * words + w] = b;
                    }
                }
                let lut = kernels::bits_lut(&planes, 8 * words);
                PreparedQuery::Binary { planes, step, lut }
            }
        }
    }

    /// The approximate ranking key of a row's code against a prepared query: higher is
    /// better, comparable only between rows scored against the same query. Scalar reference;
    /// the scan uses [`kernels`] for the same values.
    pub fn score(&self, query: &PreparedQuery, code: &[u8]) -> f32 {
        match (self, query) {
            (
                Codebook::Int8 { metric, .. },
                PreparedQuery::Int8 {
                    q,
                    step,
                    bias,
                    norm_sq,
                },
            ) => {
                let dim = q.len();
                let idot = kernels::scalar::dot_i8(q, bytes_as_i8(&code[..dim]));
                let dot = bias + step * idot as f32;
                match metric {
                    Metric::Cosine | Metric::Dot => dot,
                    Metric::L2 => {
                        let at = dim.next_multiple_of(4);
                        let mut term = [0u8; 4];
                        term.copy_from_slice(&code[at..at + 4]);
                        2.0 * dot - f32::from_le_bytes(term) - norm_sq
                    }
                }
            }
            (Codebook::Binary { .. }, PreparedQuery::Binary { planes, step, .. }) => {
                step * kernels::scalar::bits_dot(planes, code) as f32
            }
            // A query prepared by another codebook: never produced by the engine.
            _ => f32::NEG_INFINITY,
        }
    }

    /// Codes laid out row after row (as the codes file holds them) in the layout the scan
    /// reads ([`Codebook::score_block`]): the same bytes for int8, groups of rows for binary
    /// ([`bit_groups`]).
    pub fn scan_layout<'a>(&self, codes: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        match self {
            Codebook::Int8 { .. } => std::borrow::Cow::Borrowed(codes),
            Codebook::Binary { .. } => bit_groups::to_groups(codes, self.code_len()).into(),
        }
    }

    /// Bytes that `rows` codes take in the scan's layout.
    pub fn scan_len(&self, rows: usize) -> usize {
        match self {
            Codebook::Int8 { .. } => rows * self.code_len(),
            Codebook::Binary { .. } => bit_groups::grouped_len(rows, self.code_len()),
        }
    }

    /// Scores the codes of consecutive rows, in the scan's layout ([`Codebook::scan_layout`];
    /// the first row on a group boundary) against `query` into `out` (one key per row, the
    /// values [`Codebook::score`] gives).
    pub fn score_block(&self, query: &PreparedQuery, codes: &[u8], out: &mut [f32]) {
        self.score_block_with(Kernel::best(), query, codes, out)
    }

    /// [`Codebook::score_block`] on a chosen kernel (tests and benches compare them). Rows
    /// past `out.len()`, or past the codes `codes` holds, are not written.
    pub fn score_block_with(
        &self,
        kernel: Kernel,
        query: &PreparedQuery,
        codes: &[u8],
        out: &mut [f32],
    ) {
        let code_len = self.code_len();
        if let (Codebook::Binary { .. }, PreparedQuery::Binary { planes, step, lut }) =
            (self, query)
        {
            if planes.len() == 4 * self.dim().div_ceil(64) {
                let rows = out.len().min(bit_groups::rows_held(codes.len(), code_len));
                let out = &mut out[..rows];
                let ints: &mut [i32] = bytemuck::cast_slice_mut(out);
                kernel.bits_dot_groups(lut, codes, code_len, ints);
                for o in out.iter_mut() {
                    *o = step * bytemuck::cast::<f32, i32>(*o) as f32;
                }
            } else {
                out.fill(f32::NEG_INFINITY);
            }
            return;
        }
        let rows = out.len().min(codes.len() / code_len);
        let (codes, out) = (&codes[..rows * code_len], &mut out[..rows]);
        // The integer results are written in place and converted to keys in place.
        let ints: &mut [i32] = bytemuck::cast_slice_mut(out);
        match (self, query) {
            (
                Codebook::Int8 { metric, .. },
                PreparedQuery::Int8 {
                    q,
                    step,
                    bias,
                    norm_sq,
                },
            ) if q.len() == self.dim() => {
                kernel.dot_i8_block(q, codes, code_len, ints);
                self.int8_keys(*metric, *step, *bias, *norm_sq, codes, out);
            }
            // A query prepared by another codebook: never produced by the engine.
            _ => out.fill(f32::NEG_INFINITY),
        }
    }

    /// Turns int8 dot products (`out`, as i32 bits, one per code of `codes`) into keys in
    /// place: the approximate dot product, or for L2 its key `2 dot - |row|^2 - |q|^2`.
    fn int8_keys(
        &self,
        metric: Metric,
        step: f32,
        bias: f32,
        norm_sq: f32,
        codes: &[u8],
        out: &mut [f32],
    ) {
        let at = self.dim().next_multiple_of(4);
        for (o, code) in out.iter_mut().zip(codes.chunks_exact(self.code_len())) {
            let dot = bias + step * bytemuck::cast::<f32, i32>(*o) as f32;
            *o = match metric {
                Metric::Cosine | Metric::Dot => dot,
                Metric::L2 => {
                    let mut term = [0u8; 4];
                    term.copy_from_slice(&code[at..at + 4]);
                    2.0 * dot - f32::from_le_bytes(term) - norm_sq
                }
            };
        }
    }

    /// `queries` as a group for [`Codebook::score_block_many`]: where the kernel has a
    /// packed int8 path and there are at least `PACKED_I8_MIN_QUERIES` int8 queries, they
    /// are packed fifteen at a time here, once per search, not once per block.
    pub fn prepare_group<'a>(&self, queries: &'a [PreparedQuery]) -> PreparedGroup<'a> {
        let mut packed = Vec::new();
        let mut covered = 0;
        if matches!(self, Codebook::Int8 { .. }) && Kernel::best().scores_packed_i8() {
            while queries.len() - covered >= PACKED_I8_MIN_QUERIES {
                let end = (covered + kernels::PACKED_I8_QUERIES).min(queries.len());
                let qs: Option<Vec<&[i8]>> = queries[covered..end]
                    .iter()
                    .map(|query| match query {
                        PreparedQuery::Int8 { q, .. } => Some(q.as_slice()),
                        PreparedQuery::Binary { .. } => None,
                    })
                    .collect();
                // A query prepared by another codebook (never produced by the engine): it and
                // the rest go one at a time.
                let Some(group) = qs.and_then(|qs| kernels::PackedI8::new(&qs, self.dim())) else {
                    break;
                };
                packed.push(group);
                covered = end;
            }
        }
        PreparedGroup { queries, packed }
    }

    /// [`Codebook::score_block`] for a group of queries while the block is in cache:
    /// `out[q * rows + r]` for query `q` and row `r`, `rows = out.len() / queries`. The packed int8 groups of
    /// [`Codebook::prepare_group`] go through the packed kernel, the other queries one at a
    /// time.
    pub fn score_block_many(&self, group: &PreparedGroup<'_>, codes: &[u8], out: &mut [f32]) {
        let code_len = self.code_len();
        let rows = out.len() / group.queries.len().max(1);
        let kernel = Kernel::best();
        let mut q = 0;
        if let Codebook::Int8 { metric, .. } = self {
            for packed in &group.packed {
                let n = packed.count();
                let out = &mut out[q * rows..(q + n) * rows];
                kernel.dot_i8_block_packed(packed, codes, code_len, bytemuck::cast_slice_mut(out));
                let queries = &group.queries[q..q + n];
                for (query, keys) in queries.iter().zip(out.chunks_exact_mut(rows.max(1))) {
                    if let PreparedQuery::Int8 {
                        step,
                        bias,
                        norm_sq,
                        ..
                    } = query
                    {
                        self.int8_keys(*metric, *step, *bias, *norm_sq, codes, keys);
                    }
                }
                q += n;
            }
        }
        for (j, query) in group.queries.iter().enumerate().skip(q) {
            self.score_block(query, codes, &mut out[j * rows..(j + 1) * rows]);
        }
    }

    /// The codebook as bytes, to be stored in `metadata.db` beside the index record.
    pub fn to_bytes(&self) -> Vec<u8> {
        let (tag, metric, a, b): (u8, Metric, &[f32], &[f32]) = match self {
            Codebook::Int8 {
                metric,
                offset,
                scale,
            } => (1, *metric, offset, scale),
            Codebook::Binary { metric, mean } => (2, *metric, mean, &[]),
        };
        let mut out = Vec::with_capacity(10 + 4 * (a.len() + b.len()));
        out.push(tag);
        out.push(metric.code());
        out.extend_from_slice(&(a.len() as u32).to_le_bytes());
        for x in a.iter().chain(b) {
            out.extend_from_slice(&x.to_le_bytes());
        }
        out
    }

    /// Reads [`Codebook::to_bytes`]'s output; `None` if it is not one.
    pub fn from_bytes(bytes: &[u8]) -> Option<Codebook> {
        let (&tag, rest) = bytes.split_first()?;
        let (&metric, rest) = rest.split_first()?;
        let metric = Metric::from_code(metric)?;
        let dim = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let floats: Vec<f32> = rest[4..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if rest.len() - 4 != floats.len() * 4 {
            return None;
        }
        let finite = floats.iter().all(|x| x.is_finite());
        match tag {
            1 if floats.len() == 2 * dim && finite => {
                let (offset, scale) = floats.split_at(dim);
                if scale.iter().any(|&s| s <= 0.0) {
                    return None;
                }
                Some(Codebook::Int8 {
                    metric,
                    offset: offset.to_vec(),
                    scale: scale.to_vec(),
                })
            }
            2 if floats.len() == dim && finite => Some(Codebook::Binary {
                metric,
                mean: floats,
            }),
            _ => None,
        }
    }
}

/// `row` scaled to unit length for cosine (into `buf`), `row` itself for other metrics;
/// `None` for a cosine row whose norm is zero or not finite.
fn normalized<'a>(
    metric: Metric,
    row: &'a [f32],
    norm: f32,
    buf: &'a mut [f32],
) -> Option<&'a [f32]> {
    if metric != Metric::Cosine {
        return Some(row);
    }
    if norm <= 0.0 || !norm.is_finite() {
        return None;
    }
    for (b, x) in buf.iter_mut().zip(row) {
        *b = x / norm;
    }
    Some(buf)
}

/// `x.round().clamp(lo, hi)` as an integer (NaN gives 0), without the call to `roundf` that
/// `f32::round` compiles to on x86_64's baseline (a tenth of a binary query's time). In f64,
/// `|x| + 0.5` is exact for any f32 `x` of magnitude 0.5 to 2^31 (25 significant bits at
/// most), and below 0.5 it stays below 1, so truncating it rounds half away from zero as
/// `round` does; larger magnitudes saturate in the conversion, before the clamp.
#[inline]
fn round_clamp(x: f32, lo: i32, hi: i32) -> i32 {
    let x = f64::from(x);
    let m = (x.abs() + 0.5) as i32;
    let r = if x < 0.0 { -m } else { m };
    r.clamp(lo, hi)
}

/// Reinterprets code bytes as the signed codes they are.
pub fn bytes_as_i8(bytes: &[u8]) -> &[i8] {
    // SAFETY: i8 and u8 have the same size and alignment and every bit pattern is valid for
    // both; the new slice borrows the same memory for the same lifetime, immutably.
    unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<i8>(), bytes.len()) }
}

#[cfg(test)]
mod tests {
    use super::round_clamp;
    use crate::testing::Rng;

    /// Against `f32::round` and a float clamp, on the halves, the values next to them, the
    /// extremes and random floats of every magnitude.
    #[test]
    fn round_clamp_rounds_as_f32_round_does() {
        let reference = |x: f32, lo: i32, hi: i32| x.round().clamp(lo as f32, hi as f32) as i32;
        let mut xs = vec![
            0.0,
            -0.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            1e-40,
            0.49999997,
            -0.49999997,
            2.1474836e9,
            -2.1474836e9,
            8388607.5,
        ];
        for n in -300..300 {
            let half = n as f32 + 0.5;
            xs.extend([half, half.next_up(), half.next_down()]);
        }
        let mut rng = Rng::new(16);
        for _ in 0..100_000 {
            let bits = rng.next_u64() as u32;
            xs.push(f32::from_bits(bits));
            xs.push(rng.f32() * 300.0 - 150.0);
        }
        for x in xs {
            for (lo, hi) in [(-8, 7), (-127, 127)] {
                assert_eq!(round_clamp(x, lo, hi), reference(x, lo, hi), "{x:e}");
            }
        }
    }
}
