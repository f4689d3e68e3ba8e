//! Row bitmaps: bit `r % 64` of word `r / 64` is row `r`, the layout of the tombstones. Filters
//! are evaluated into these and combined word by word.

/// A set of rows `0..rows` as a bitmap. Bits past `rows` are always clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowBits {
    words: Vec<u64>,
    rows: usize,
}

impl RowBits {
    /// No row of `rows`.
    pub fn none(rows: usize) -> Self {
        RowBits {
            words: vec![0; rows.div_ceil(64)],
            rows,
        }
    }

    /// Every row of `rows`.
    pub fn all(rows: usize) -> Self {
        let mut b = RowBits {
            words: vec![!0; rows.div_ceil(64)],
            rows,
        };
        b.clear_tail();
        b
    }

    /// The rows of `rows` whose bit `f(row)` returns, built a word at a time.
    pub(crate) fn from_fn(rows: usize, mut f: impl FnMut(usize) -> bool) -> Self {
        let mut words = vec![0u64; rows.div_ceil(64)];
        for (w, word) in words.iter_mut().enumerate() {
            let base = w * 64;
            let end = (base + 64).min(rows);
            let mut bits = 0u64;
            for r in base..end {
                bits |= u64::from(f(r)) << (r - base);
            }
            *word = bits;
        }
        RowBits { words, rows }
    }

    fn clear_tail(&mut self) {
        let extra = self.rows % 64;
        if extra != 0 {
            if let Some(last) = self.words.last_mut() {
                *last &= (1u64 << extra) - 1;
            }
        }
    }

    /// The words (bit `r % 64` of word `r / 64`).
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// Adds `row` (ignored past the end).
    pub fn insert(&mut self, row: u64) {
        if (row as usize) < self.rows {
            self.words[(row >> 6) as usize] |= 1 << (row & 63);
        }
    }

    /// True when `row` is in the set.
    pub fn contains(&self, row: u64) -> bool {
        crate::index::row_bit_set(&self.words, row)
    }

    /// Keeps the rows also in `other`.
    pub fn and(&mut self, other: &RowBits) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a &= b;
        }
    }

    /// Adds the rows of `other`.
    pub fn or(&mut self, other: &RowBits) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= b;
        }
    }

    /// The complement within `0..rows`.
    pub fn not(&mut self) {
        for w in &mut self.words {
            *w = !*w;
        }
        self.clear_tail();
    }

    /// Removes the rows set in `bits` (another bitmap of the same layout, such as the
    /// tombstones; it may be shorter or longer).
    pub fn and_not_words(&mut self, bits: &[u64]) {
        for (a, b) in self.words.iter_mut().zip(bits) {
            *a &= !b;
        }
    }

    /// Number of rows in the set.
    pub fn count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// The rows in the set, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let bit = w.trailing_zeros() as u64;
                w &= w - 1;
                Some(((i as u64) << 6) | bit)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_operations_agree_with_a_bool_vector() {
        let n = 200;
        let a: Vec<bool> = (0..n).map(|r| r % 3 == 0).collect();
        let b: Vec<bool> = (0..n).map(|r| r % 5 == 1).collect();
        let ba = RowBits::from_fn(n, |r| a[r]);
        let bb = RowBits::from_fn(n, |r| b[r]);
        let mut and = ba.clone();
        and.and(&bb);
        let mut or = ba.clone();
        or.or(&bb);
        let mut not = ba.clone();
        not.not();
        for r in 0..n {
            assert_eq!(and.contains(r as u64), a[r] && b[r]);
            assert_eq!(or.contains(r as u64), a[r] || b[r]);
            assert_eq!(not.contains(r as u64), !a[r]);
        }
        assert!(!not.contains(n as u64), "no bit past the end");
        assert_eq!(not.count(), a.iter().filter(|x| !**x).count() as u64);
        let listed: Vec<u64> = or.iter().collect();
        let expected: Vec<u64> = (0..n as u64)
            .filter(|&r| a[r as usize] || b[r as usize])
            .collect();
        assert_eq!(listed, expected);
        assert_eq!(RowBits::all(n).count(), n as u64);
    }
}
