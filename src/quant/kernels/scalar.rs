//! Scalar references: obviously right, used where no SIMD path applies and by the tests.

/// `sum(a[i] * b[i])` over the shorter length, exactly (i32 cannot overflow below 2^17
/// components: 127 * 127 * 2^17 < 2^31).
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| i32::from(x) * i32::from(y))
        .sum()
}

/// `sum_d v[d] * bit_d(code)` for a query whose 4-bit values `v[d]` (in `-8..=7`) are given
/// as the bit planes of their two's complement: `planes[j * words + w]` holds bit `j` of
/// `v & 0xf` for components `64 * w ..`. Equals `sum_{j<3} 2^j * popcount(plane_j & code) -
/// 8 * popcount(plane_3 & code)`.
pub fn bits_dot(planes: &[u64], code: &[u8]) -> i32 {
    let words = planes.len() / 4;
    let mut sum = 0i32;
    for (w, c) in code.chunks_exact(8).take(words).enumerate() {
        let c = word(c);
        for j in 0..3 {
            sum += ((planes[j * words + w] & c).count_ones() as i32) << j;
        }
        sum -= 8 * (planes[3 * words + w] & c).count_ones() as i32;
    }
    sum
}

/// [`dot_i8`] of `q` with the first `q.len()` bytes of each `code_len`-byte code in `codes`.
pub fn dot_i8_block(q: &[i8], codes: &[u8], code_len: usize, out: &mut [i32]) {
    for (code, o) in codes.chunks_exact(code_len).zip(out.iter_mut()) {
        *o = dot_i8(q, super::super::bytes_as_i8(code));
    }
}

/// [`bits_dot`] of `planes` with each `code_len`-byte code in `codes`.
pub fn bits_dot_block(planes: &[u64], codes: &[u8], code_len: usize, out: &mut [i32]) {
    for (code, o) in codes.chunks_exact(code_len).zip(out.iter_mut()) {
        *o = bits_dot(planes, code);
    }
}

/// [`super::Kernel::above_masks`] for `keys.len() <= 32 * masks.len()`.
pub fn above_masks(keys: &[f32], threshold: f32, masks: &mut [u32]) {
    masks.fill(0);
    for (i, &key) in keys.iter().enumerate() {
        masks[i / 32] |= u32::from(key > threshold || key.is_nan()) << (i % 32);
    }
}

/// Eight code bytes as the little-endian word they store.
#[inline(always)]
pub(crate) fn word(c: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&c[..8]);
    u64::from_le_bytes(b)
}
