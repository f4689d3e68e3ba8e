//! Which rows are deleted. One owner for the bitmap, because the writer sets bits (delete,
//! upsert), open rebuilds it from redb, and searches, `ids` and compaction read it.

use crate::index::row_bit_set;
use std::sync::Arc;

/// A bitmap of deleted rows (bit `r % 64` of word `r / 64`; rows past its end are live),
/// shared copy-on-write: a snapshot keeps the bits it was taken with, and the writer copies
/// them only when it changes bits a snapshot still holds.
#[derive(Debug, Clone, Default)]
pub(super) struct Tombstones(Arc<Vec<u64>>);

impl Tombstones {
    /// No row deleted, with room for `rows` rows.
    pub(super) fn with_rows(rows: usize) -> Self {
        Tombstones(Arc::new(vec![0; rows.div_ceil(64)]))
    }

    /// Marks `row` deleted.
    pub(super) fn set(&mut self, row: u64) {
        let words = Arc::make_mut(&mut self.0);
        let w = (row >> 6) as usize;
        if words.len() <= w {
            words.resize(w + 1, 0);
        }
        words[w] |= 1 << (row & 63);
    }

    /// True when `row` is deleted.
    pub(super) fn contains(&self, row: u64) -> bool {
        row_bit_set(&self.0, row)
    }

    /// How many rows are deleted.
    pub(super) fn count(&self) -> u64 {
        self.0.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// The words, as the scan takes them ([`crate::index::ScanSet::tombstones`]).
    pub(super) fn words(&self) -> &[u64] {
        &self.0
    }
}
