//! The BERT encoder's forward pass, written for sentence embedding on the CPU.
//!
//! It computes what candle-transformers' `BertModel` (and Hugging Face's) computes, with three
//! differences in how, none in what:
//! - **No padding.** The tokens of every sentence in a batch are rows of one matrix; the
//!   dense layers run over exactly those rows, and attention runs per sentence over its own
//!   tokens. A padded, masked batch gives padding positions a weight of exactly 0 after the
//!   softmax, so the result is the same.
//! - **Fused work.** Query, key and value are one matrix product (`hidden x 3·hidden`); biases
//!   and residuals are written into the output before the product accumulates onto them; the
//!   GELU, softmax and layer norm run in place, vectorised, spread over every core (rayon).
//! - **One `exp` and one `erf` of our own** ([`exp_neg`], [`gelu`]): branch-free so they
//!   vectorise, accurate to about float rounding (relative error of `exp` below 1e-7, absolute
//!   error of `erf` below 1.5e-7).
//!
//! The dense layers' matrix products run natively on every core: on CPUs with AVX-512F
//! through a kernel of our own (`matmul_avx512.rs`: weights packed at load, the GELU applied
//! to each tile in registers), on CPUs with AVX2 and FMA through the same kernel in 8-lane
//! registers (`matmul_avx2.rs`), elsewhere through the `gemm` crate. The attention runs per
//! sequence with AVX-512F intrinsics where the CPU has them, else the portable loops compiled
//! for AVX2 or the base target. In the WASI component (one thread) the products go to
//! candle's CPU backend, which has no `gemm` dependency of its own.

/// The shape of a BERT encoder (`config.json`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    pub hidden: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub vocab: usize,
    pub max_positions: usize,
    pub type_vocab: usize,
    pub eps: f32,
    pub activation: Activation,
}

/// The intermediate layer's activation (`hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activation {
    /// `"gelu"`: the exact GELU, with erf (all-MiniLM-L6-v2's).
    Gelu,
    /// `"gelu_approximate"`: the tanh approximation of the GELU.
    GeluTanh,
    /// `"relu"`.
    Relu,
}

struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

/// A dense layer.
struct Dense {
    weight: Weight,
    bias: Vec<f32>,
    input: usize,
    output: usize,
}

/// A dense layer's weight, in the form its matrix product reads.
enum Weight {
    /// Transposed (`input x output`, row-major), for `matmul_acc`.
    Plain(Vec<f32>),
    /// Packed for the AVX-512 kernel, on CPUs that have AVX-512F.
    #[cfg(target_arch = "x86_64")]
    Packed(super::matmul_avx512::Packed),
    /// Packed for the AVX2 kernel, on CPUs with AVX2 and FMA but not AVX-512F.
    #[cfg(target_arch = "x86_64")]
    PackedAvx2(super::matmul_avx2::Packed),
}

struct Layer {
    qkv: Dense,
    attn_out: Dense,
    attn_norm: Norm,
    up: Dense,
    down: Dense,
    out_norm: Norm,
}

/// A loaded BERT encoder: the weights as plain `f32` arrays.
pub(crate) struct Bert {
    shape: Shape,
    word: Vec<f32>,
    position: Vec<f32>,
    token_type0: Vec<f32>,
    embed_norm: Norm,
    layers: Vec<Layer>,
}

/// Reads a named tensor of the given shape as `f32`s, row-major; `Err` says why not.
pub(crate) type Fetch<'a> = dyn FnMut(&str, &[usize]) -> Result<Vec<f32>, String> + 'a;

impl Bert {
    /// Loads the weights through `fetch`, which is called with Hugging Face's tensor names
    /// (`embeddings.word_embeddings.weight`, `encoder.layer.0.attention.self.query.weight`...)
    /// and the shape each must have.
    pub(crate) fn load(shape: Shape, fetch: &mut Fetch<'_>) -> Result<Self, String> {
        let h = shape.hidden;
        if h == 0 || shape.heads == 0 || !h.is_multiple_of(shape.heads) {
            return Err(format!(
                "hidden_size {h} is not a multiple of num_attention_heads {}",
                shape.heads
            ));
        }
        if shape.type_vocab == 0 || shape.intermediate == 0 {
            return Err("type_vocab_size and intermediate_size must be positive".into());
        }
        let mut norm = |name: &str| -> Result<Norm, String> {
            Ok(Norm {
                weight: fetch(&format!("{name}.weight"), &[h])?,
                bias: fetch(&format!("{name}.bias"), &[h])?,
            })
        };
        let embed_norm = norm("embeddings.LayerNorm")?;
        let word = fetch("embeddings.word_embeddings.weight", &[shape.vocab, h])?;
        let position = fetch(
            "embeddings.position_embeddings.weight",
            &[shape.max_positions, h],
        )?;
        let mut token_type0 = fetch(
            "embeddings.token_type_embeddings.weight",
            &[shape.type_vocab, h],
        )?;
        token_type0.truncate(h);
        let mut layers = Vec::with_capacity(shape.layers);
        for i in 0..shape.layers {
            let p = format!("encoder.layer.{i}");
            let mut dense = |names: &[&str], input: usize, output: usize| {
                let mut weight = Vec::with_capacity(input * output * names.len());
                let mut bias = Vec::with_capacity(output * names.len());
                for name in names {
                    weight.extend(fetch(&format!("{p}.{name}.weight"), &[output, input])?);
                    bias.extend(fetch(&format!("{p}.{name}.bias"), &[output])?);
                }
                Ok::<_, String>(Dense::new(&weight, bias, input))
            };
            let qkv = dense(
                &[
                    "attention.self.query",
                    "attention.self.key",
                    "attention.self.value",
                ],
                h,
                h,
            )?;
            let attn_out = dense(&["attention.output.dense"], h, h)?;
            let up = dense(&["intermediate.dense"], h, shape.intermediate)?;
            let down = dense(&["output.dense"], shape.intermediate, h)?;
            let mut norm = |name: &str| -> Result<Norm, String> {
                Ok(Norm {
                    weight: fetch(&format!("{p}.{name}.weight"), &[h])?,
                    bias: fetch(&format!("{p}.{name}.bias"), &[h])?,
                })
            };
            let attn_norm = norm("attention.output.LayerNorm")?;
            let out_norm = norm("output.LayerNorm")?;
            layers.push(Layer {
                qkv,
                attn_out,
                attn_norm,
                up,
                down,
                out_norm,
            });
        }
        Ok(Bert {
            shape,
            word,
            position,
            token_type0,
            embed_norm,
            layers,
        })
    }

    /// The last hidden state of every token of every sequence: `Σ len` rows of `hidden`,
    /// sequence after sequence (token type 0 throughout). `Err` for a token id outside the
    /// vocabulary or a sequence longer than the position table.
    pub(crate) fn forward(&self, seqs: &[&[u32]]) -> Result<Vec<f32>, String> {
        let h = self.shape.hidden;
        let mut starts = Vec::with_capacity(seqs.len() + 1);
        let mut rows = 0usize;
        for seq in seqs {
            if seq.len() > self.shape.max_positions {
                return Err(format!(
                    "{} tokens, more than the model's {} positions",
                    seq.len(),
                    self.shape.max_positions
                ));
            }
            if let Some(&bad) = seq.iter().find(|&&id| id as usize >= self.shape.vocab) {
                return Err(format!(
                    "token id {bad} outside the vocabulary of {}",
                    self.shape.vocab
                ));
            }
            starts.push(rows);
            rows += seq.len();
        }
        starts.push(rows);
        if rows == 0 {
            return Ok(Vec::new());
        }

        // Embeddings: word + position + token type 0, then layer norm.
        let mut x = vec![0.0f32; rows * h];
        {
            let mut token = Vec::with_capacity(rows);
            for seq in seqs {
                token.extend(seq.iter().enumerate().map(|(p, &id)| (id as usize, p)));
            }
            par_rows(&mut x, h, |r, row| {
                let (id, p) = token[r];
                let w = &self.word[id * h..(id + 1) * h];
                let pe = &self.position[p * h..(p + 1) * h];
                for (((o, a), b), c) in row.iter_mut().zip(w).zip(pe).zip(&self.token_type0) {
                    *o = a + c + b;
                }
                layer_norm(row, &self.embed_norm, self.shape.eps);
            });
        }

        let mut qkv = vec![0.0f32; rows * 3 * h];
        let mut ctx = vec![0.0f32; rows * h];
        let mut up = vec![0.0f32; rows * self.shape.intermediate];
        for layer in &self.layers {
            layer.qkv.apply(&x, rows, &mut qkv, None)?;
            self.attention(&qkv, &starts, &mut ctx);
            // x <- layer_norm(x + ctx · Wo + bo)
            let residual = std::mem::take(&mut x);
            layer.attn_out.apply(&ctx, rows, &mut x, Some(&residual))?;
            par_rows(&mut x, h, |_, row| {
                layer_norm(row, &layer.attn_norm, self.shape.eps)
            });
            let fused = layer
                .up
                .apply_gelu(&x, rows, &mut up, self.shape.activation)?;
            if !fused {
                par_rows(&mut up, self.shape.intermediate, |_, row| {
                    match self.shape.activation {
                        Activation::Gelu => gelu(row),
                        Activation::GeluTanh => row.iter_mut().for_each(|x| *x = gelu_tanh_one(*x)),
                        Activation::Relu => row.iter_mut().for_each(|x| *x = x.max(0.0)),
                    }
                });
            }
            let residual = std::mem::take(&mut x);
            layer.down.apply(&up, rows, &mut x, Some(&residual))?;
            par_rows(&mut x, h, |_, row| {
                layer_norm(row, &layer.out_norm, self.shape.eps)
            });
        }
        Ok(x)
    }

    /// Self-attention of each sequence over its own tokens: `ctx` (rows x hidden) from `qkv`
    /// (rows x 3·hidden: the queries, keys and values of every head side by side).
    fn attention(&self, qkv: &[f32], starts: &[usize], ctx: &mut [f32]) {
        let h = self.shape.hidden;
        let heads = self.shape.heads;
        // One disjoint piece of `ctx` per sequence.
        let mut pieces = Vec::with_capacity(starts.len().saturating_sub(1));
        let mut rest = ctx;
        for w in starts.windows(2) {
            let (piece, tail) = rest.split_at_mut((w[1] - w[0]) * h);
            pieces.push((w[0], w[1] - w[0], piece));
            rest = tail;
        }
        let one = |(start, len, out): (usize, usize, &mut [f32])| {
            if len == 0 {
                return;
            }
            let seq = &qkv[start * 3 * h..(start + len) * 3 * h];
            attend(seq, len, h, heads, out);
        };
        #[cfg(not(target_arch = "wasm32"))]
        {
            use rayon::prelude::*;
            pieces.into_par_iter().for_each(one);
        }
        #[cfg(target_arch = "wasm32")]
        pieces.into_iter().for_each(one);
    }
}

impl Dense {
    fn new(weight: &[f32], bias: Vec<f32>, input: usize) -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let packed = super::matmul_avx512::Packed::new(weight, bias.len(), input)
                .map(Weight::Packed)
                .or_else(|| {
                    super::matmul_avx2::Packed::new(weight, bias.len(), input)
                        .map(Weight::PackedAvx2)
                });
            if let Some(weight) = packed {
                return Dense {
                    weight,
                    output: bias.len(),
                    bias,
                    input,
                };
            }
        }
        Self::plain(weight, bias, input)
    }

    /// The portable form, whatever the CPU.
    fn plain(weight: &[f32], bias: Vec<f32>, input: usize) -> Self {
        let output = bias.len();
        let mut weight_t = vec![0.0f32; input * output];
        for (o, row) in weight.chunks_exact(input).enumerate() {
            for (i, &w) in row.iter().enumerate() {
                weight_t[i * output + o] = w;
            }
        }
        Dense {
            weight: Weight::Plain(weight_t),
            bias,
            input,
            output,
        }
    }

    /// `out = x · Wᵀ + b`, and the activation too when it can be fused into the product
    /// (the erf GELU in the AVX-512 kernel): `Ok(true)` if it was applied, `Ok(false)` if it
    /// is left to the caller.
    fn apply_gelu(
        &self,
        x: &[f32],
        rows: usize,
        out: &mut Vec<f32>,
        activation: Activation,
    ) -> Result<bool, String> {
        #[cfg(target_arch = "x86_64")]
        if activation == Activation::Gelu
            && matches!(self.weight, Weight::Packed(_) | Weight::PackedAvx2(_))
        {
            self.start(rows, out, None);
            let x = x
                .get(..rows * self.input)
                .ok_or("matrix product of mismatched shapes")?;
            match &self.weight {
                Weight::Packed(packed) => packed.matmul_acc(out, x, rows, true)?,
                Weight::PackedAvx2(packed) => packed.matmul_acc(out, x, rows, true)?,
                Weight::Plain(_) => {}
            }
            return Ok(true);
        }
        let _ = activation;
        self.apply(x, rows, out, None)?;
        Ok(false)
    }

    /// `out = b (+ residual)`, `rows` rows: what the product accumulates onto.
    fn start(&self, rows: usize, out: &mut Vec<f32>, residual: Option<&[f32]>) {
        out.clear();
        match residual {
            Some(r) => {
                out.extend_from_slice(&r[..rows * self.output]);
                for row in out.chunks_exact_mut(self.output) {
                    for (o, b) in row.iter_mut().zip(&self.bias) {
                        *o += b;
                    }
                }
            }
            None => {
                for _ in 0..rows {
                    out.extend_from_slice(&self.bias);
                }
            }
        }
    }

    /// `out = x · Wᵀ + b (+ residual)`, for `rows` rows of `x`; `out` is resized to fit.
    fn apply(
        &self,
        x: &[f32],
        rows: usize,
        out: &mut Vec<f32>,
        residual: Option<&[f32]>,
    ) -> Result<(), String> {
        self.start(rows, out, residual);
        let x = x
            .get(..rows * self.input)
            .ok_or("matrix product of mismatched shapes")?;
        match &self.weight {
            Weight::Plain(weight_t) => matmul_acc(out, x, weight_t, rows, self.input, self.output),
            #[cfg(target_arch = "x86_64")]
            Weight::Packed(packed) => packed.matmul_acc(out, x, rows, false),
            #[cfg(target_arch = "x86_64")]
            Weight::PackedAvx2(packed) => packed.matmul_acc(out, x, rows, false),
        }
    }
}

/// Both `matmul_acc`s read exactly these lengths.
fn check_product_shapes(
    out: &[f32],
    a: &[f32],
    b: &[f32],
    m: usize,
    k: usize,
    n: usize,
) -> Result<(), String> {
    if out.len() != m * n || a.len() != m * k || b.len() != k * n {
        return Err("matrix product of mismatched shapes".into());
    }
    Ok(())
}

/// `out (m x n) += a (m x k) · b (k x n)`, all row-major and contiguous, on every core.
#[cfg(not(target_arch = "wasm32"))]
fn matmul_acc(
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    m: usize,
    k: usize,
    n: usize,
) -> Result<(), String> {
    check_product_shapes(out, a, b, m, k, n)?;
    if m == 0 || n == 0 || k == 0 {
        return Ok(());
    }
    let (Ok(n_i), Ok(k_i)) = (isize::try_from(n), isize::try_from(k)) else {
        return Err("matrix too large".into());
    };
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 && m * n * k >= 1 << 18 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the lengths were checked above: `dst` is `out`, m x n row-major (column stride
    // 1, row stride n); `lhs` is `a`, m x k (row stride k); `rhs` is `b`, k x n (row stride
    // n). `out` is borrowed mutably for the call, so no other thread reads or writes it;
    // `a` and `b` are shared borrows, only read. gemm's own worker threads write disjoint
    // tiles of `dst` and return before the call does.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n_i,
            true,
            a.as_ptr(),
            1,
            k_i,
            b.as_ptr(),
            1,
            n_i,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            parallelism,
        );
    }
    Ok(())
}

/// `out (m x n) += a (m x k) · b (k x n)` through candle's CPU backend (the component's).
#[cfg(target_arch = "wasm32")]
fn matmul_acc(
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    m: usize,
    k: usize,
    n: usize,
) -> Result<(), String> {
    use candle_core::{Device, Tensor};
    check_product_shapes(out, a, b, m, k, n)?;
    let product = || -> candle_core::Result<Vec<f32>> {
        let a = Tensor::from_slice(a, (m, k), &Device::Cpu)?;
        let b = Tensor::from_slice(b, (k, n), &Device::Cpu)?;
        a.matmul(&b)?.flatten_all()?.to_vec1::<f32>()
    };
    let product = product().map_err(|e| format!("matrix product failed: {e}"))?;
    for (o, p) in out.iter_mut().zip(product) {
        *o += p;
    }
    Ok(())
}

/// Self-attention of one sequence of `len` tokens: `out` (len x h) from `seq` (len x 3·h: the
/// queries, keys and values of every head side by side). Per head, the keys are first laid
/// out component by component (`d x len`), so that a query's scores against every key are
/// `d` steps of `scores += q[c] · keys[c]`, vector-wide across the keys; the context is the
/// softmax-weighted sum of the value rows, vector-wide across the components.
#[inline(always)]
fn attend_portable(seq: &[f32], len: usize, h: usize, heads: usize, out: &mut [f32]) {
    let d = h / heads;
    let scale = 1.0 / (d as f32).sqrt();
    let mut keys = vec![0.0f32; d * len];
    let mut scores = vec![0.0f32; len];
    for head in 0..heads {
        let (qo, ko, vo) = (head * d, h + head * d, 2 * h + head * d);
        for (j, token) in seq.chunks_exact(3 * h).enumerate() {
            for (c, &k) in token[ko..ko + d].iter().enumerate() {
                keys[c * len + j] = k;
            }
        }
        for (i, token) in seq.chunks_exact(3 * h).enumerate() {
            scores.fill(0.0);
            for (&q, column) in token[qo..qo + d].iter().zip(keys.chunks_exact(len)) {
                for (s, &k) in scores.iter_mut().zip(column) {
                    *s += q * k;
                }
            }
            for s in scores.iter_mut() {
                *s *= scale;
            }
            softmax(&mut scores);
            let c = &mut out[i * h + qo..i * h + qo + d];
            c.fill(0.0);
            for (&p, value) in scores.iter().zip(seq.chunks_exact(3 * h)) {
                for (o, &x) in c.iter_mut().zip(&value[vo..vo + d]) {
                    *o += p * x;
                }
            }
        }
    }
}

/// [`attend_portable`] written with AVX-512F intrinsics, the sums in registers: a query's
/// scores 16 keys at a time (`d` FMAs of the broadcast query component into the keys laid
/// out per component), their softmax 16 at a time, the context 16 components at a time (one
/// FMA per key, divided by the softmax's sum at the end).
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn attend_avx512(seq: &[f32], len: usize, h: usize, heads: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    if heads == 0
        || !h.is_multiple_of(heads)
        || len.checked_mul(3 * h) != Some(seq.len())
        || len.checked_mul(h) != Some(out.len())
    {
        return attend_portable(seq, len, h, heads, out);
    }
    /// The first `n` of 16 lanes (all 16 for n >= 16).
    fn lanes(n: usize) -> __mmask16 {
        if n >= 16 {
            0xFFFF
        } else {
            ((1u32 << n) - 1) as __mmask16
        }
    }
    let d = h / heads;
    let stride = 3 * h;
    // Keys per component, each run of `padded` (a multiple of 16) zero past `len`.
    let padded = len.div_ceil(16) * 16;
    let scale = _mm512_set1_ps(1.0 / (d as f32).sqrt());
    let mut keys = vec![0.0f32; d * padded];
    let mut scores = vec![0.0f32; padded];
    for head in 0..heads {
        let (qo, ko, vo) = (head * d, h + head * d, 2 * h + head * d);
        for (j, token) in seq.chunks_exact(stride).enumerate() {
            for (c, &k) in token[ko..ko + d].iter().enumerate() {
                keys[c * padded + j] = k;
            }
        }
        for (i, token) in seq.chunks_exact(stride).enumerate() {
            let q = &token[qo..qo + d];
            for block in (0..padded).step_by(16) {
                let mut acc = _mm512_setzero_ps();
                for (c, &qc) in q.iter().enumerate() {
                    // SAFETY: c < d and block + 16 <= padded, so the 16 floats read are
                    // inside `keys` (d x padded).
                    let k = unsafe { _mm512_loadu_ps(keys.as_ptr().add(c * padded + block)) };
                    acc = _mm512_fmadd_ps(_mm512_set1_ps(qc), k, acc);
                }
                // SAFETY: block + 16 <= padded = scores.len().
                unsafe {
                    _mm512_storeu_ps(scores.as_mut_ptr().add(block), _mm512_mul_ps(acc, scale))
                };
            }
            // Softmax over the first `len` scores (the padding lanes, scores of zero keys,
            // are left out of the maximum and the sum); the division by the sum is left to
            // the context.
            let mut max = _mm512_set1_ps(f32::NEG_INFINITY);
            for block in (0..padded).step_by(16) {
                // SAFETY: block + 16 <= padded = scores.len().
                let v = unsafe { _mm512_loadu_ps(scores.as_ptr().add(block)) };
                max = _mm512_mask_max_ps(max, lanes(len - block), max, v);
            }
            let max = _mm512_set1_ps(_mm512_reduce_max_ps(max));
            let mut total = _mm512_setzero_ps();
            for block in (0..padded).step_by(16) {
                // SAFETY: block + 16 <= padded = scores.len().
                unsafe {
                    let v = _mm512_loadu_ps(scores.as_ptr().add(block));
                    let e = super::matmul_avx512::exp_neg16(_mm512_sub_ps(v, max));
                    _mm512_storeu_ps(scores.as_mut_ptr().add(block), e);
                    total = _mm512_mask_add_ps(total, lanes(len - block), total, e);
                }
            }
            let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(total));
            let row = &mut out[i * h + qo..i * h + qo + d];
            for c0 in (0..d).step_by(16) {
                let width = (d - c0).min(16);
                let mask = lanes(d - c0);
                let mut acc = _mm512_setzero_ps();
                for (&p, value) in scores[..len].iter().zip(seq.chunks_exact(stride)) {
                    let v = &value[vo + c0..vo + c0 + width];
                    // SAFETY: the masked load reads only the first `width` floats, which
                    // are `v`, a live slice.
                    let v = unsafe { _mm512_maskz_loadu_ps(mask, v.as_ptr()) };
                    acc = _mm512_fmadd_ps(_mm512_set1_ps(p), v, acc);
                }
                let dst = &mut row[c0..c0 + width];
                // SAFETY: the masked store writes only the first `width` floats, which are
                // `dst`, a slice of `out` this call borrows mutably (no other thread has it).
                unsafe { _mm512_mask_storeu_ps(dst.as_mut_ptr(), mask, _mm512_mul_ps(acc, inv)) };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn attend_avx2(seq: &[f32], len: usize, h: usize, heads: usize, out: &mut [f32]) {
    attend_portable(seq, len, h, heads, out)
}

/// [`attend_portable`] on the widest vector unit the CPU has.
fn attend(seq: &[f32], len: usize, h: usize, heads: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above), all the function asks;
            // it reads `seq` and writes only `out`, checking their shapes first.
            return unsafe { attend_avx512(seq, len, h, heads, out) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA (checked just above), the only features the
            // function is compiled for; it reads `seq` and writes only `out`.
            return unsafe { attend_avx2(seq, len, h, heads, out) };
        }
    }
    attend_portable(seq, len, h, heads, out)
}

/// Calls `f(row index, row)` on every `width`-long row of `data`, spread over every core.
fn par_rows(data: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if width == 0 {
        return;
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        // About 16 KiB per task: enough work to pay for the hand-off.
        let per_task = (4096 / width).max(1);
        data.par_chunks_mut(width * per_task)
            .enumerate()
            .for_each(|(t, chunk)| {
                for (i, row) in chunk.chunks_exact_mut(width).enumerate() {
                    f(t * per_task + i, row);
                }
            });
    }
    #[cfg(target_arch = "wasm32")]
    for (i, row) in data.chunks_exact_mut(width).enumerate() {
        f(i, row);
    }
}

#[inline(always)]
fn sum(v: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (chunks, rest) = v.split_at(v.len() - v.len() % 8);
    for c in chunks.chunks_exact(8) {
        for l in 0..8 {
            acc[l] += c[l];
        }
    }
    acc.iter().sum::<f32>() + rest.iter().sum::<f32>()
}

/// Layer norm of one row in place: `(x - mean) / sqrt(var + eps) * weight + bias`, the
/// variance biased (divided by n), as torch computes it.
fn layer_norm(row: &mut [f32], norm: &Norm, eps: f32) {
    let n = row.len() as f32;
    let mean = sum(row) / n;
    let mut acc = [0.0f32; 8];
    let (chunks, rest) = row.split_at(row.len() - row.len() % 8);
    for c in chunks.chunks_exact(8) {
        for l in 0..8 {
            let d = c[l] - mean;
            acc[l] += d * d;
        }
    }
    let var =
        (acc.iter().sum::<f32>() + rest.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>()) / n;
    let inv = 1.0 / (var + eps).sqrt();
    for ((x, w), b) in row.iter_mut().zip(&norm.weight).zip(&norm.bias) {
        *x = (*x - mean) * inv * w + b;
    }
}

/// Softmax of one row in place.
#[inline(always)]
fn softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for x in row.iter_mut() {
        *x -= max;
    }
    exp_neg(row);
    let total = sum(row);
    let inv = 1.0 / total;
    for x in row.iter_mut() {
        *x *= inv;
    }
}

/// `e^x` in place for `x <= 0` (what softmax and the `erf` below need): `x = n·ln 2 + r` with
/// `|r| <= ln 2 / 2`, `e^r` by its Taylor series to degree 7 (truncation error below 6e-9
/// relative), times `2^n` built in the exponent bits. Below -87 the result is 0.
#[inline(always)]
fn exp_neg_one(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 in two parts, so that n·LN2_HI is exact for the n that occur.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding and subtracting 1.5·2^23 rounds to the nearest integer without a branch.
    const ROUND: f32 = 12_582_912.0;
    let underflow = x < -87.0;
    let x = x.clamp(-87.0, 0.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // n is an integer in [-126, 0]: 2^n is a normal float with exponent bits n + 127.
    let scale = f32::from_bits((((n as i32) + 127) as u32) << 23);
    if underflow {
        0.0
    } else {
        p * scale
    }
}

fn exp_neg_portable(v: &mut [f32]) {
    for x in v.iter_mut() {
        *x = exp_neg_one(*x);
    }
}

/// The exact (erf) GELU of one value: `x/2 · (1 + erf(x/√2))`, with erf from Abramowitz and
/// Stegun's formula 7.1.26 (absolute error below 1.5e-7).
#[inline(always)]
pub(super) fn gelu_one(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A1: f32 = 0.254_829_6;
    const A2: f32 = -0.284_496_74;
    const A3: f32 = 1.421_413_8;
    const A4: f32 = -1.453_152_1;
    const A5: f32 = 1.061_405_4;
    let z = (x * std::f32::consts::FRAC_1_SQRT_2).abs();
    let t = 1.0 / (1.0 + P * z);
    let poly = t * (A1 + t * (A2 + t * (A3 + t * (A4 + t * A5))));
    let erf_abs = 1.0 - poly * exp_neg_one(-z * z);
    let erf = erf_abs.copysign(x);
    0.5 * x * (1.0 + erf)
}

/// The tanh GELU, `x/2 · (1 + tanh(√(2/π)·(x + 0.044715·x³)))`, with
/// `tanh(y) = sign(y)·(1 - e^(-2|y|)) / (1 + e^(-2|y|))`.
fn gelu_tanh_one(x: f32) -> f32 {
    let y = (2.0 / std::f32::consts::PI).sqrt() * (x + 0.044_715 * x * x * x);
    let e = exp_neg_one(-2.0 * y.abs());
    let tanh = ((1.0 - e) / (1.0 + e)).copysign(y);
    0.5 * x * (1.0 + tanh)
}

fn gelu_portable(v: &mut [f32]) {
    for x in v.iter_mut() {
        *x = gelu_one(*x);
    }
}

/// Runtime dispatch of a slice kernel to the widest vector unit: the same scalar code,
/// compiled again with AVX-512 or AVX2 + FMA enabled so that the compiler vectorises it.
macro_rules! dispatch {
    ($name:ident, $portable:ident, $avx512:ident, $avx2:ident) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f")]
        fn $avx512(v: &mut [f32]) {
            $portable(v)
        }
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        fn $avx2(v: &mut [f32]) {
            $portable(v)
        }
        pub(crate) fn $name(v: &mut [f32]) {
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F (checked just above), the only feature
                    // the function is compiled for; it touches nothing but `v`.
                    return unsafe { $avx512(v) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has AVX2 and FMA (checked just above), the only
                    // features the function is compiled for; it touches nothing but `v`.
                    return unsafe { $avx2(v) };
                }
            }
            $portable(v)
        }
    };
}

dispatch!(gelu, gelu_portable, gelu_avx512, gelu_avx2);
dispatch!(exp_neg, exp_neg_portable, exp_neg_avx512, exp_neg_avx2);

#[cfg(test)]
mod tests {
    use super::*;

    /// erf by its Maclaurin series in f64, the independent reference for the GELU: its
    /// alternating terms reach e^(x²), so it is used only for |x| <= 3 (error below 1e-12).
    fn erf_series(x: f64) -> f64 {
        assert!(x.abs() <= 3.0);
        let mut term = x;
        let mut total = x;
        let mut n = 0.0;
        while term.abs() > 1e-17 * total.abs().max(1e-300) {
            n += 1.0;
            term *= -x * x / n;
            total += term / (2.0 * n + 1.0);
            if n > 400.0 {
                break;
            }
        }
        total * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn gelu_matches_the_erf_definition() {
        let xs: Vec<f32> = (-8000..=8000).map(|i| i as f32 * 1e-3).collect();
        let mut ys = xs.clone();
        gelu(&mut ys);
        let mut scalar = xs.clone();
        gelu_portable(&mut scalar);
        for ((&x, &y), &s) in xs.iter().zip(&ys).zip(&scalar) {
            let x64 = f64::from(x);
            let z = x64.abs() / std::f64::consts::SQRT_2;
            // Past z = 3, erfc(z) <= e^(-z²) / (z·√π) bounds the distance to max(x, 0).
            let (want, slack) = if z <= 3.0 {
                (
                    0.5 * x64 * (1.0 + erf_series(x64 / std::f64::consts::SQRT_2)),
                    0.0,
                )
            } else {
                let erfc_max = (-z * z).exp() / (z * std::f64::consts::PI.sqrt());
                (x64.max(0.0), 0.5 * x64.abs() * erfc_max)
            };
            let err = (f64::from(y) - want).abs();
            assert!(
                err <= 2e-7 * x64.abs().max(1.0) + slack,
                "gelu({x}) = {y}, want {want}"
            );
            assert!((y - s).abs() <= 1e-6 * x.abs().max(1.0), "{x}: {y} vs {s}");
        }
    }

    #[test]
    fn exp_matches_std_within_float_rounding() {
        let xs: Vec<f32> = (0..=100_000).map(|i| -(i as f32) * 1e-3).collect();
        let mut ys = xs.clone();
        exp_neg(&mut ys);
        for (&x, &y) in xs.iter().zip(&ys) {
            let want = f64::from(x).exp();
            if x < -87.0 {
                assert_eq!(y, 0.0);
            } else {
                assert!(
                    (f64::from(y) - want).abs() <= 4e-7 * want,
                    "exp({x}) = {y}, want {want}"
                );
            }
        }
    }

    #[test]
    fn softmax_and_layer_norm_match_f64() {
        let row: Vec<f32> = (0..37)
            .map(|i| ((i * 7919) % 101) as f32 * 0.13 - 6.0)
            .collect();
        let mut s = row.clone();
        softmax(&mut s);
        let max = row.iter().fold(f64::MIN, |m, &x| m.max(f64::from(x)));
        let total: f64 = row.iter().map(|&x| (f64::from(x) - max).exp()).sum();
        for (&x, &y) in row.iter().zip(&s) {
            let want = (f64::from(x) - max).exp() / total;
            assert!(
                (f64::from(y) - want).abs() <= 1e-6 * want.max(1e-3),
                "{y} vs {want}"
            );
        }

        let norm = Norm {
            weight: (0..37).map(|i| 1.0 + i as f32 * 0.01).collect(),
            bias: (0..37).map(|i| i as f32 * -0.02).collect(),
        };
        let mut l = row.clone();
        layer_norm(&mut l, &norm, 1e-12);
        let n = row.len() as f64;
        let mean = row.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let var = row
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / n;
        for (i, (&x, &y)) in row.iter().zip(&l).enumerate() {
            let want = (f64::from(x) - mean) / (var + 1e-12).sqrt() * f64::from(norm.weight[i])
                + f64::from(norm.bias[i]);
            assert!((f64::from(y) - want).abs() <= 1e-5, "{y} vs {want}");
        }
    }

    /// Attention of one sequence against softmax(q·kᵀ/√d)·v in f64, on odd lengths and head
    /// sizes.
    #[test]
    fn attention_matches_an_f64_reference() {
        for &(len, h, heads) in &[
            (1usize, 12usize, 3usize),
            (7, 12, 4),
            (33, 384, 12),
            (5, 40, 2),
        ] {
            let d = h / heads;
            let seq: Vec<f32> = (0..len * 3 * h)
                .map(|i| ((i * 7919) % 211) as f32 * 0.02 - 2.1)
                .collect();
            // The CPU's path (AVX-512 intrinsics where it has them) and the portable one.
            let mut out = vec![f32::NAN; len * h];
            attend(&seq, len, h, heads, &mut out);
            let mut portable = vec![f32::NAN; len * h];
            attend_portable(&seq, len, h, heads, &mut portable);
            for (a, b) in out.iter().zip(&portable) {
                assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0), "{a} vs {b}");
            }
            let at = |t: usize, c: usize| f64::from(seq[t * 3 * h + c]);
            for head in 0..heads {
                for i in 0..len {
                    let scores: Vec<f64> = (0..len)
                        .map(|j| {
                            (0..d)
                                .map(|c| at(i, head * d + c) * at(j, h + head * d + c))
                                .sum::<f64>()
                                / (d as f64).sqrt()
                        })
                        .collect();
                    let max = scores.iter().fold(f64::MIN, |m, &x| m.max(x));
                    let total: f64 = scores.iter().map(|&x| (x - max).exp()).sum();
                    for c in 0..d {
                        let want: f64 = (0..len)
                            .map(|j| (scores[j] - max).exp() / total * at(j, 2 * h + head * d + c))
                            .sum();
                        let got = f64::from(out[i * h + head * d + c]);
                        assert!(
                            (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                            "len {len} h {h} heads {heads} ({i}, {head}, {c}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn dense_layer_matches_a_plain_loop() {
        let (input, output, rows) = (19, 23, 45);
        let weight: Vec<f32> = (0..input * output)
            .map(|i| ((i * 31) % 17) as f32 * 0.1 - 0.8)
            .collect();
        let bias: Vec<f32> = (0..output).map(|i| i as f32 * 0.05).collect();
        let x: Vec<f32> = (0..rows * input)
            .map(|i| ((i * 13) % 11) as f32 * 0.2 - 1.0)
            .collect();
        let residual: Vec<f32> = (0..rows * output).map(|i| (i % 5) as f32).collect();
        // The CPU's form (packed for AVX-512 where it has it) and the portable one.
        for dense in [
            Dense::new(&weight, bias.clone(), input),
            Dense::plain(&weight, bias.clone(), input),
        ] {
            let mut out = Vec::new();
            dense.apply(&x, rows, &mut out, Some(&residual)).unwrap();
            for r in 0..rows {
                for o in 0..output {
                    let mut want = f64::from(bias[o]) + f64::from(residual[r * output + o]);
                    for i in 0..input {
                        want += f64::from(x[r * input + i]) * f64::from(weight[o * input + i]);
                    }
                    let got = f64::from(out[r * output + o]);
                    assert!((got - want).abs() <= 1e-4, "({r}, {o}): {got} vs {want}");
                }
            }
        }
    }
}
