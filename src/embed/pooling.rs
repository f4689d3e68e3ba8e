//! From the transformer's token vectors to one sentence vector: what sentence-transformers'
//! `Pooling` and `Normalize` modules do, on plain slices so it is testable by hand.

/// How token vectors become one sentence vector (`1_Pooling/config.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The mean of the token vectors the attention mask keeps (all-MiniLM-L6-v2's).
    Mean,
    /// The first token's (`[CLS]`) vector.
    Cls,
}

/// Writes into `out` (length `d`) the mean of the rows of `tokens` (`mask.len()` rows of `d`)
/// whose mask is 1; padding rows do not count. All zero if no row is kept.
pub fn mean_pool(tokens: &[f32], mask: &[u32], out: &mut [f32]) {
    let d = out.len();
    out.fill(0.0);
    let mut kept = 0u32;
    for (row, &m) in tokens.chunks_exact(d).zip(mask) {
        if m == 0 {
            continue;
        }
        kept += 1;
        for (o, x) in out.iter_mut().zip(row) {
            *o += x;
        }
    }
    // sentence-transformers clamps the count at 1e-9 to avoid dividing by zero.
    let count = (kept as f32).max(1e-9);
    for o in out.iter_mut() {
        *o /= count;
    }
}

/// Scales `v` to unit length; a zero vector stays zero (torch's `normalize` uses eps 1e-12).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v
        .iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt();
    let scale = 1.0 / norm.max(1e-12);
    for x in v.iter_mut() {
        *x = (f64::from(*x) * scale) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_pool_skips_padding() {
        // Three tokens of d = 2, the last is padding.
        let tokens = [1.0, 2.0, 3.0, 6.0, 100.0, 100.0];
        let mut out = [0.0; 2];
        mean_pool(&tokens, &[1, 1, 0], &mut out);
        assert_eq!(out, [2.0, 4.0]);
    }

    #[test]
    fn mean_pool_of_nothing_is_zero() {
        let mut out = [5.0; 3];
        mean_pool(&[1.0, 2.0, 3.0], &[0], &mut out);
        assert_eq!(out, [0.0; 3]);
    }

    #[test]
    fn normalize_gives_unit_length_and_keeps_zero() {
        let mut v = [3.0, 4.0];
        l2_normalize(&mut v);
        assert!(
            (v[0] - 0.6).abs() < 1e-7 && (v[1] - 0.8).abs() < 1e-7,
            "{v:?}"
        );
        let mut z = [0.0; 4];
        l2_normalize(&mut z);
        assert_eq!(z, [0.0; 4]);
    }
}
