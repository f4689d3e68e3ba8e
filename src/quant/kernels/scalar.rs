//! Scalar references: obviously right, used where no SIMD path applies and by the tests.

/// `sum(a[i] * b[i])` over the shorter length, exactly (i32 cannot overflow below 2^17
/// components: 127 * 127 * 2^17 < 2^31).
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| i32::from(x) * i32::from(y))
        .sum()
}

/// Number of differing bits between `a` (u64 words) and `code` (the same bits as
/// little-endian bytes, `8 * a.len()` of them).
pub fn hamming_bytes(a: &[u64], code: &[u8]) -> u32 {
    a.iter()
        .zip(code.chunks_exact(8))
        .map(|(w, c)| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            (w ^ u64::from_le_bytes(b)).count_ones()
        })
        .sum()
}
