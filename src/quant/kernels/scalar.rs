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

/// The table that scores nibble codes against a 4-bit query given as [`bits_dot`]'s
/// `planes`: entry `32 b + 16 h + n` is `32 + sum_t v[8 b + 4 h + t] * bit_t(n)` for code
/// byte `b < code_len`, nibble `h` (0 low, 1 high) and nibble value `n`, with `v = 0` past
/// the planes' components. Entries are in `0..=60`: the `+ 32` keeps them unsigned for byte
/// lookups and is taken off once per row ([`bits_dot_groups`]).
pub fn bits_lut(planes: &[u64], code_len: usize) -> Vec<u8> {
    let words = planes.len() / 4;
    let v = |d: usize| -> i32 {
        let (w, i) = (d / 64, d % 64);
        if w >= words {
            return 0;
        }
        let bit = |j: usize| ((planes[j * words + w] >> i) & 1) as i32;
        bit(0) + 2 * bit(1) + 4 * bit(2) - 8 * bit(3)
    };
    let mut lut = vec![0u8; 32 * code_len];
    for (p, table) in lut.chunks_exact_mut(16).enumerate() {
        let d0 = 4 * p;
        let vs = [v(d0), v(d0 + 1), v(d0 + 2), v(d0 + 3)];
        // Entry n is entry n-without-its-lowest-bit plus that bit's component.
        table[0] = 32;
        for n in 1..16 {
            let sum = i32::from(table[n & (n - 1)]) + vs[n.trailing_zeros() as usize];
            table[n] = sum as u8;
        }
    }
    lut
}

/// [`bits_dot`] of each row of `groups` (codes in [`crate::quant::bit_groups`]' layout,
/// `code_len` bytes per row, `groups.len() >= grouped_len(out.len(), code_len)`) by table
/// lookups in `lut` ([`bits_lut`]): a group at a time, nibble position by position, as the
/// SIMD kernels do 16 or 32 lanes at once.
pub fn bits_dot_groups(lut: &[u8], groups: &[u8], code_len: usize, out: &mut [i32]) {
    use crate::quant::bit_groups::GROUP_ROWS;
    let group_bytes = GROUP_ROWS * code_len;
    let bias = 64 * code_len as i32;
    for (group, out) in groups
        .chunks_exact(group_bytes)
        .zip(out.chunks_mut(GROUP_ROWS))
    {
        let mut sums = [0i32; GROUP_ROWS];
        for (x, table) in group.chunks_exact(16).zip(lut.chunks_exact(16)) {
            let (low, high) = sums.split_at_mut(16);
            for ((&x, l), h) in x.iter().zip(low).zip(high) {
                *l += i32::from(table[usize::from(x & 0xf)]);
                *h += i32::from(table[usize::from(x >> 4)]);
            }
        }
        for (o, s) in out.iter_mut().zip(sums) {
            *o = s - bias;
        }
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
