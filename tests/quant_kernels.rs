//! The code-scoring kernels and the codebooks' accuracy:
//! - every dispatch path available on this CPU against the scalar reference (random codes,
//!   extreme codes, dimensions 1..=70, 384, 1536);
//! - the prepared binary query against an f32 definition of what it approximates;
//! - recall@10 on the real MiniLM embeddings after exact rescoring of `k * oversample`
//!   candidates, against a brute-force reference written here (skips when the data is absent).

mod common;

use common::Rng;
use srvdb::quant::bit_groups;
use srvdb::quant::kernels::{bits_lut, PackedI8};
use srvdb::quant::{Codebook, Kernel, PreparedQuery, Quantization};
use srvdb::Metric;

fn dims() -> impl Iterator<Item = usize> {
    (1..=70).chain([384, 1536])
}

/// A code byte: uniform over every i8 one time in two, else an extreme (-128, -127, 127, 0).
fn code_byte(rng: &mut Rng) -> u8 {
    match rng.below(8) {
        0 => 0x80,
        1 => (-127i8) as u8,
        2 => 127,
        3 => 0,
        _ => rng.below(256) as u8,
    }
}

/// A query component in -127..=127 (what `prepare` makes), extremes often.
fn query_i8(rng: &mut Rng) -> i8 {
    match rng.below(4) {
        0 => -127,
        1 => 127,
        _ => (rng.below(255) as i32 - 127) as i8,
    }
}

#[test]
fn int8_dot_every_path_matches_scalar() {
    let mut rng = Rng::new(common::seed());
    let kernels = Kernel::available();
    eprintln!("kernels on this CPU: {kernels:?}");
    for dim in dims() {
        // The codebook's layout (padded + norm) and a looser stride.
        for code_len in [dim.next_multiple_of(4) + 4, dim + 13] {
            let rows = 1 + rng.below(9) as usize;
            let q: Vec<i8> = (0..dim).map(|_| query_i8(&mut rng)).collect();
            let mut codes: Vec<u8> = (0..rows * code_len).map(|_| code_byte(&mut rng)).collect();
            if dim == 1536 {
                // The largest magnitude sums: every product +127 * 127 or -127 * -128.
                codes[..dim].fill(127);
            }
            let want: Vec<i32> = codes
                .chunks_exact(code_len)
                .map(|c| {
                    q.iter()
                        .zip(c)
                        .map(|(&a, &b)| i32::from(a) * i32::from(b as i8))
                        .sum()
                })
                .collect();
            for &k in &kernels {
                let mut got = vec![i32::MIN; rows];
                k.dot_i8_block(&q, &codes, code_len, &mut got);
                assert_eq!(
                    got,
                    want,
                    "{k:?} dim {dim} code_len {code_len} (seed {})",
                    common::seed()
                );
            }
        }
    }
}

/// The packed int8 groups (up to fifteen queries per `vpdpbusd` lane set, a lane of code
/// sums for the unsigned-operand correction) against the same sums written here: every
/// group size that matters, row counts around the 8-row tile, padded and loose code
/// strides, and the largest sums (every product 127 * 127 at 1536-d).
#[test]
fn int8_packed_groups_match_scalar_on_every_path() {
    let mut rng = Rng::new(common::seed() ^ 0x9ac8);
    for dim in dims() {
        for code_len in [dim.next_multiple_of(4) + 4, dim + 13] {
            for nq in [1usize, 2, 6, 14, 15] {
                let rows = 1 + rng.below(20) as usize;
                let queries: Vec<Vec<i8>> = (0..nq)
                    .map(|_| (0..dim).map(|_| query_i8(&mut rng)).collect())
                    .collect();
                let mut codes: Vec<u8> =
                    (0..rows * code_len).map(|_| code_byte(&mut rng)).collect();
                if dim == 1536 {
                    codes[..dim].fill(127);
                }
                let mut want = vec![0i32; nq * rows];
                for (j, q) in queries.iter().enumerate() {
                    for (r, c) in codes.chunks_exact(code_len).enumerate() {
                        want[j * rows + r] = q
                            .iter()
                            .zip(c)
                            .map(|(&a, &b)| i32::from(a) * i32::from(b as i8))
                            .sum();
                    }
                }
                let refs: Vec<&[i8]> = queries.iter().map(Vec::as_slice).collect();
                let packed = PackedI8::new(&refs, dim).expect("1..=15 queries of one length");
                for k in Kernel::available() {
                    let mut got = vec![i32::MIN; nq * rows];
                    k.dot_i8_block_packed(&packed, &codes, code_len, &mut got);
                    assert_eq!(
                        got,
                        want,
                        "{k:?} dim {dim} code_len {code_len} nq {nq} rows {rows} (seed {})",
                        common::seed()
                    );
                }
            }
        }
    }
    let q = vec![1i8; 4];
    let too_many: Vec<&[i8]> = (0..16).map(|_| q.as_slice()).collect();
    assert!(
        PackedI8::new(&too_many, 4).is_none(),
        "sixteen queries do not fit the lanes"
    );
    assert!(
        PackedI8::new(&[&q[..3]], 4).is_none(),
        "a query of another length"
    );
}

/// `score_block_many` (packed groups where the CPU has them, one query at a time below
/// `PACKED_I8_MIN_QUERIES` and for the rest) gives exactly `score` for every pair.
#[test]
fn codebook_block_groups_match_single_scores() {
    let mut rng = Rng::new(common::seed() ^ 0x6a0);
    for quantization in [Quantization::Int8, Quantization::Binary] {
        for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
            for dim in [7usize, 65, 384] {
                let n = 40;
                let (book, codes) = coded(&mut rng, quantization, metric, dim, n);
                let len = book.code_len();
                for nq in [1usize, 5, 6, 17, 30] {
                    let qs = rng.vectors(nq, dim);
                    let prepared: Vec<PreparedQuery> = qs
                        .chunks_exact(dim)
                        .map(|q| book.prepare(q, norm(q)))
                        .collect();
                    let mut got = vec![f32::NAN; nq * n];
                    let scan = book.scan_layout(&codes);
                    book.score_block_many(&book.prepare_group(&prepared), &scan, &mut got);
                    for (j, q) in prepared.iter().enumerate() {
                        for (r, c) in codes.chunks_exact(len).enumerate() {
                            assert_eq!(
                                got[j * n + r],
                                book.score(q, c),
                                "{quantization:?} {metric:?} dim {dim} nq {nq} q {j} r {r}"
                            );
                        }
                    }
                }
            }
        }
    }
}

/// The four bit planes of a 4-bit query over `words` code words: case 0, `v = -8` everywhere
/// (only the sign plane); case 1, `v = 7` everywhere; else random.
fn query_planes(case: u64, words: usize, rng: &mut Rng) -> Vec<u64> {
    match case {
        0 => (0..4 * words)
            .map(|i| if i >= 3 * words { !0 } else { 0 })
            .collect(),
        1 => (0..4 * words)
            .map(|i| if i < 3 * words { !0 } else { 0 })
            .collect(),
        _ => (0..4 * words).map(|_| rng.next_u64()).collect(),
    }
}

/// The grouped layout's table-lookup kernel on every path gives the reference's value for
/// every row: dimensions 1..=70, 384, 1536 and one past the SIMD paths' code length (4,160:
/// 520-byte codes), codes with padding bytes, and row counts on both sides of a group.
#[test]
fn bits_dot_groups_every_path_matches_the_reference() {
    let mut rng = Rng::new(common::seed() ^ 0x6a0c);
    let kernels = Kernel::available();
    for dim in dims().chain([4160]) {
        let words = dim.div_ceil(64);
        for code_len in [8 * words, 8 * words + 8] {
            let rows = 1 + rng.below(70) as usize;
            let case = rng.below(4);
            let planes = query_planes(case, words, &mut rng);
            let mut codes: Vec<u8> = (0..rows * code_len).map(|_| rng.below(256) as u8).collect();
            codes[..code_len].fill(0xff);
            let want: Vec<i32> = codes
                .chunks_exact(code_len)
                .map(|c| bits_dot_reference(&planes, c))
                .collect();
            let groups = bit_groups::to_groups(&codes, code_len);
            let lut = bits_lut(&planes, code_len);
            for &k in &kernels {
                let mut got = vec![i32::MIN; rows];
                k.bits_dot_groups(&lut, &groups, code_len, &mut got);
                assert_eq!(
                    got,
                    want,
                    "{k:?} dim {dim} code_len {code_len} rows {rows} (seed {})",
                    common::seed()
                );
                // Fewer groups than rows asked for: only the rows held are written.
                if rows > 32 {
                    let mut short = vec![i32::MIN; rows];
                    k.bits_dot_groups(&lut, &groups[..32 * code_len], code_len, &mut short);
                    assert_eq!(short[..32], want[..32], "{k:?} dim {dim}, one group");
                    assert!(short[32..].iter().all(|&v| v == i32::MIN));
                }
            }
        }
    }
}

/// `score_block` on every path gives exactly `score` (the scalar reference) for every
/// quantization and metric, and ill-shaped inputs neither panic nor read out of bounds.
#[test]
fn codebook_blocks_match_single_scores_on_every_path() {
    let mut rng = Rng::new(common::seed() ^ 0xc0de);
    for quantization in [Quantization::Int8, Quantization::Binary] {
        for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
            for dim in [1, 7, 64, 65, 384] {
                let n = 50;
                let (book, codes) = coded(&mut rng, quantization, metric, dim, n);
                let len = book.code_len();
                let qv = rng.vectors(1, dim);
                let q = book.prepare(&qv, norm(&qv));
                let want: Vec<f32> = codes.chunks_exact(len).map(|c| book.score(&q, c)).collect();
                // The scan's layout: binary codes in groups of 32 rows.
                let scan = book.scan_layout(&codes);
                // Rows the block holds, the last group's padding included.
                let held = scan.len() / len;
                for k in Kernel::available() {
                    let mut got = vec![f32::NAN; held + 3];
                    book.score_block_with(k, &q, &scan, &mut got);
                    assert_eq!(
                        &got[..n],
                        &want[..],
                        "{k:?} {quantization:?} {metric:?} dim {dim}"
                    );
                    assert!(
                        got[held..].iter().all(|x| x.is_nan()),
                        "wrote past the rows"
                    );
                    // A truncated block scores only its whole codes (binary: whole groups).
                    let unit = book.scan_len(1);
                    let mut short = vec![f32::NAN; unit / len + 1];
                    book.score_block_with(k, &q, &scan[..unit + unit / 2], &mut short);
                    let whole = unit / len;
                    assert_eq!(&short[..whole], &want[..whole]);
                    assert!(short[whole].is_nan());
                }
            }
        }
    }
}

/// The prepared binary query approximates `sum_d q[d] * bit_d(code)` to within half a step
/// per set bit (its components are rounded to the nearest step, never clamped).
#[test]
fn binary_query_approximates_its_dot_with_the_bits() {
    let mut rng = Rng::new(common::seed() ^ 0xb1);
    for dim in dims() {
        let mean = vec![0f32; dim];
        let book = Codebook::Binary {
            metric: Metric::Dot,
            mean,
        };
        let q = rng.vectors(1, dim);
        let prepared = book.prepare(&q, 1.0);
        let PreparedQuery::Binary { step, .. } = &prepared else {
            panic!("binary codebook prepared {prepared:?}");
        };
        // Codes as `encode` makes them: no bits past `dim`.
        let mut codes: Vec<u8> = (0..5 * book.code_len())
            .map(|_| rng.below(256) as u8)
            .collect();
        for code in codes.chunks_exact_mut(book.code_len()) {
            for d in dim..8 * code.len() {
                code[d / 8] &= !(1 << (d % 8));
            }
        }
        let mut got = vec![0f32; 5];
        book.score_block(&prepared, &book.scan_layout(&codes), &mut got);
        for (code, got) in codes.chunks_exact(book.code_len()).zip(got) {
            let set: Vec<usize> = (0..dim)
                .filter(|&d| code[d / 8] >> (d % 8) & 1 == 1)
                .collect();
            let want: f64 = set.iter().map(|&d| f64::from(q[d])).sum();
            let bound = f64::from(*step) * (0.5 * set.len() as f64 + 1e-3) + 1e-5;
            assert!(
                (f64::from(got) - want).abs() <= bound,
                "dim {dim}: {got} vs {want} (bound {bound})"
            );
        }
    }
}

/// Exact cosine scores of every row against each query (f64 sums, no engine code): one
/// `Vec` per query.
fn brute_force(data: &common::Dataset) -> Vec<Vec<f64>> {
    let dim = data.dim;
    let inv: Vec<f64> = data
        .base
        .chunks_exact(dim)
        .map(|r| {
            1.0 / r
                .iter()
                .map(|&x| f64::from(x) * f64::from(x))
                .sum::<f64>()
                .sqrt()
        })
        .collect();
    data.queries
        .chunks_exact(dim)
        .map(|q| {
            data.base
                .chunks_exact(dim)
                .zip(&inv)
                .map(|(r, inv)| {
                    let mut dot = 0f64;
                    for d in 0..dim {
                        dot += f64::from(q[d]) * f64::from(r[d]);
                    }
                    dot * inv
                })
                .collect()
        })
        .collect()
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

/// Indices of the `k` largest of `scores`, best first, ties by lower index.
fn top(scores: &[f64], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// Mean recall@10 of `quantization` on the real data for each oversample in `oversamples`:
/// the codes are scored once per query, the best `10 * oversample` rows by code score are
/// rescored exactly, and their exact top 10 is compared with the brute-force top 10.
fn recall(
    data: &common::Dataset,
    exact: &[Vec<f64>],
    quantization: Quantization,
    oversamples: &[usize],
) -> Vec<f64> {
    const K: usize = 10;
    let dim = data.dim;
    let rows: Vec<&[f32]> = data.base.chunks_exact(dim).collect();
    let book = Codebook::train(
        quantization,
        Metric::Cosine,
        dim,
        rows.iter().map(|r| (*r, norm(r))),
    );
    let code_len = book.code_len();
    let mut codes = vec![0u8; rows.len() * code_len];
    for (row, code) in rows.iter().zip(codes.chunks_exact_mut(code_len)) {
        book.encode(row, norm(row), code);
    }
    let scan = book.scan_layout(&codes);
    let mut hits = vec![0usize; oversamples.len()];
    let mut keys = vec![0f32; rows.len()];
    for (q, exact) in data.queries.chunks_exact(dim).zip(exact) {
        let truth = top(exact, K);
        book.score_block(&book.prepare(q, norm(q)), &scan, &mut keys);
        let approx: Vec<f64> = keys.iter().map(|&s| f64::from(s)).collect();
        let max_os = *oversamples.iter().max().unwrap();
        let ranked = top(&approx, K * max_os);
        for (h, &os) in hits.iter_mut().zip(oversamples) {
            let candidates = &ranked[..K * os];
            let mut rescored: Vec<(usize, f64)> =
                candidates.iter().map(|&r| (r, exact[r])).collect();
            rescored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            *h += rescored[..K]
                .iter()
                .filter(|(r, _)| truth.contains(r))
                .count();
        }
    }
    hits.iter()
        .map(|&h| h as f64 / (K * data.nq) as f64)
        .collect()
}

/// The targets, with the oversample the engine uses by default: int8 recall@10 >= 0.99
/// at oversample <= 4, binary >= 0.95 at oversample <= 10.
#[test]
fn recall_on_real_embeddings_after_rescoring() {
    let Some(data) = common::dataset() else {
        return;
    };
    let exact = brute_force(&data);
    // The reference agrees with the data set's own ground truth (NumPy, f64).
    let agree = exact
        .iter()
        .zip(data.gt.chunks_exact(data.gt.len() / data.nq))
        .map(|(e, gt)| {
            top(e, 10)
                .iter()
                .filter(|&&r| gt[..10].contains(&(r as i32)))
                .count()
        })
        .sum::<usize>();
    assert!(
        agree as f64 >= 0.999 * (10 * data.nq) as f64,
        "brute force vs gt_cosine: {agree}"
    );
    for (quantization, oversamples, target) in [
        (Quantization::Int8, vec![1, 2, 3, 4], 0.99),
        (Quantization::Binary, vec![2, 5, 10, 20], 0.95),
    ] {
        let got = recall(&data, &exact, quantization, &oversamples);
        for (os, r) in oversamples.iter().zip(&got) {
            eprintln!("{} oversample {os}: recall@10 {r:.4}", quantization.name());
        }
        let default = quantization.default_oversample();
        let at_default = oversamples
            .iter()
            .position(|&os| os == default)
            .map(|i| got[i])
            .unwrap_or_else(|| recall(&data, &exact, quantization, &[default])[0]);
        assert!(
            at_default >= target,
            "{}: recall@10 {at_default:.4} at the default oversample {default}, target {target}",
            quantization.name()
        );
    }
}

/// The definition of the binary code score: `v[d]` is the 4-bit two's complement value of the
/// planes' bits at `d` (plane 3 the sign), summed where the code has bit `d`.
fn bits_dot_reference(planes: &[u64], code: &[u8]) -> i32 {
    let words = planes.len() / 4;
    let bit = |w: &[u64], d: usize| (w[d / 64] >> (d % 64)) & 1;
    let cw: Vec<u64> = code[..8 * words]
        .chunks_exact(8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (0..64 * words)
        .filter(|&d| bit(&cw, d) == 1)
        .map(|d| {
            let nibble = (0..4)
                .map(|j| (bit(&planes[j * words..], d) as i32) << j)
                .sum::<i32>();
            if nibble >= 8 {
                nibble - 16
            } else {
                nibble
            }
        })
        .sum()
}

/// Six-word codes (384-d binary codes) in groups on every path: row counts around a group's
/// 32 and its halves, extreme planes (every value -8, or 7) and all-ones codes for the
/// largest sums of either sign.
#[test]
fn bits_dot_of_six_word_codes_matches_the_definition_on_every_path() {
    let mut rng = Rng::new(common::seed() ^ 0x6b17);
    let words = 6;
    for rows in [0, 1, 7, 15, 16, 17, 31, 32, 33, 40, 63, 64, 65] {
        for case in 0..4 {
            let planes = query_planes(case, words, &mut rng);
            let mut codes: Vec<u8> = (0..rows * 8 * words)
                .map(|_| rng.below(256) as u8)
                .collect();
            if case < 3 {
                for code in codes.chunks_exact_mut(8 * words).step_by(3) {
                    code.fill(0xff);
                }
            }
            let want: Vec<i32> = codes
                .chunks_exact(8 * words)
                .map(|c| bits_dot_reference(&planes, c))
                .collect();
            for k in Kernel::available() {
                let mut got = vec![i32::MIN; rows];
                let (groups, lut) = (
                    bit_groups::to_groups(&codes, 8 * words),
                    bits_lut(&planes, 8 * words),
                );
                k.bits_dot_groups(&lut, &groups, 8 * words, &mut got);
                assert_eq!(got, want, "{k:?} rows {rows} case {case}");
            }
        }
    }
}

/// `above_masks` on every path against a comparison written here, with NaN keys, infinities,
/// signed zeros and keys equal to the threshold, at lengths around the vector widths and
/// with more mask words than keys.
#[test]
fn above_masks_match_the_comparison_on_every_path() {
    let mut rng = Rng::new(common::seed() ^ 0xab0e);
    let special = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 1.0];
    for len in (0..=70usize).chain([255, 256]) {
        for _ in 0..20 {
            let mut pick = || match rng.below(4) {
                0 => special[rng.below(special.len() as u64) as usize],
                _ => rng.below(5) as f32 - 2.0,
            };
            let keys: Vec<f32> = (0..len).map(|_| pick()).collect();
            let threshold = pick();
            if threshold.is_nan() {
                continue; // unspecified
            }
            let words = len.div_ceil(32) + 1;
            for k in Kernel::available() {
                let mut masks = vec![u32::MAX; words];
                k.above_masks(&keys, threshold, &mut masks);
                for i in 0..32 * words {
                    let got = masks[i / 32] >> (i % 32) & 1 == 1;
                    let want = keys.get(i).is_some_and(|&x| x.is_nan() || x > threshold);
                    assert_eq!(got, want, "{k:?} key {i} of {len}, threshold {threshold}");
                }
            }
        }
    }
}

/// A codebook trained on `n` random rows of `dim` and the rows' codes, one after another.
fn coded(
    rng: &mut Rng,
    quantization: Quantization,
    metric: Metric,
    dim: usize,
    n: usize,
) -> (Codebook, Vec<u8>) {
    let data = rng.vectors(n, dim);
    let rows: Vec<&[f32]> = data.chunks_exact(dim).collect();
    let book = Codebook::train(
        quantization,
        metric,
        dim,
        rows.iter().map(|r| (*r, norm(r))),
    );
    let len = book.code_len();
    let mut codes = vec![0u8; n * len];
    for (r, c) in rows.iter().zip(codes.chunks_exact_mut(len)) {
        book.encode(r, norm(r), c);
    }
    (book, codes)
}
