//! Every row's id, held in memory compactly: the text of many ids packed in one allocation per
//! chunk of rows, and an id -> row table that stores only row numbers (it hashes and compares
//! through the packed text). At 1M rows with short ids this takes about 20 bytes a row, where a
//! map of `Arc<str>` plus a row -> `Arc<str>` table took about 90: one allocation per id,
//! pointed to twice, each with its own allocator overhead.

use hashbrown::HashTable;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

/// Ids per chunk of [`RowIds`].
const CHUNK_IDS: usize = 4096;

/// The most rows a database holds: [`IdTable`] stores row numbers in 32 bits (the HNSW graph
/// numbers its nodes the same way).
pub const MAX_ROWS: u64 = u32::MAX as u64;

/// Ids `first..first + ends.len()` of a [`RowIds`]: id `i` is `text[ends[i - 1]..ends[i]]`.
#[derive(Debug, Clone, Default)]
struct Chunk {
    text: String,
    ends: Vec<u32>,
}

impl Chunk {
    fn get(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)? as usize;
        let start = match i {
            0 => 0,
            _ => self.ends[i - 1] as usize,
        };
        self.text.get(start..end)
    }
}

/// Row -> id, append-only. Clones share every full chunk, so the writer keeps appending while
/// snapshots hold old clones; an append copies at most the last chunk (as `ChunkedVec` does).
#[derive(Debug, Clone, Default)]
pub struct RowIds {
    chunks: Vec<Arc<Chunk>>,
    len: usize,
}

impl RowIds {
    /// No rows.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The id of `row`, if the row exists.
    pub fn get(&self, row: usize) -> Option<&str> {
        self.chunks.get(row / CHUNK_IDS)?.get(row % CHUNK_IDS)
    }

    /// Appends the id of the next row.
    pub fn push(&mut self, id: &str) {
        let full = self.chunks.last().is_none_or(|c| c.ends.len() == CHUNK_IDS);
        if full {
            self.chunks.push(Arc::new(Chunk {
                text: String::with_capacity(id.len() * CHUNK_IDS.min(64)),
                ends: Vec::with_capacity(CHUNK_IDS),
            }));
        }
        let Some(last) = self.chunks.last_mut() else {
            return;
        };
        let chunk = Arc::make_mut(last);
        chunk.text.push_str(id);
        // A chunk holds at most CHUNK_IDS ids of at most MAX_ID_BYTES each: far below u32::MAX.
        chunk.ends.push(chunk.text.len() as u32);
        if chunk.ends.len() == CHUNK_IDS {
            // Full chunks are never appended to again: give back the growth slack.
            chunk.text.shrink_to_fit();
        }
        self.len += 1;
    }
}

/// Id -> row for the live rows, over the [`RowIds`] that name them. Holds only row numbers:
/// lookups hash the id given and compare it with the text of the candidate rows.
#[derive(Debug, Clone)]
pub struct IdTable {
    ids: RowIds,
    rows: HashTable<u32>,
    /// Seeded per process (SipHash), so ids chosen by an adversary cannot force collisions.
    hasher: RandomState,
}

impl Default for IdTable {
    fn default() -> Self {
        IdTable {
            ids: RowIds::new(),
            rows: HashTable::new(),
            hasher: RandomState::new(),
        }
    }
}

impl IdTable {
    /// An empty table over `ids`, with room for `live` rows.
    pub fn with_ids(ids: RowIds, live: usize) -> Self {
        IdTable {
            ids,
            rows: HashTable::with_capacity(live),
            hasher: RandomState::new(),
        }
    }

    /// The ids the table names rows by.
    pub fn ids(&self) -> &RowIds {
        &self.ids
    }

    /// Replaces the ids with `ids`, which must extend the current ones (the writer's table after
    /// an append): rows already mapped keep their ids.
    pub fn extend_ids(&mut self, ids: &RowIds) {
        debug_assert!(ids.len() >= self.ids.len());
        self.ids = ids.clone();
    }

    /// Number of live ids.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when no id is live.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The row `id` names, if it is live.
    pub fn row(&self, id: &str) -> Option<u64> {
        let hash = self.hasher.hash_one(id);
        let ids = &self.ids;
        self.rows
            .find(hash, |&r| ids.get(r as usize) == Some(id))
            .map(|&r| u64::from(r))
    }

    /// True when `id` is live.
    pub fn contains(&self, id: &str) -> bool {
        self.row(id).is_some()
    }

    /// Makes `row` the live row of its id (its id must be in [`IdTable::ids`]). Returns the row
    /// the id named before, if any. A row beyond [`MAX_ROWS`] or without an id is ignored and
    /// returns `None`: writers check [`MAX_ROWS`] before appending.
    pub fn insert(&mut self, row: u64) -> Option<u64> {
        let (Ok(r), Some(id)) = (u32::try_from(row), self.ids.get(row as usize)) else {
            return None;
        };
        let hasher = &self.hasher;
        let ids = &self.ids;
        let hash = hasher.hash_one(id);
        let rehash = |&r: &u32| hasher.hash_one(ids.get(r as usize).unwrap_or_default());
        match self
            .rows
            .entry(hash, |&other| ids.get(other as usize) == Some(id), rehash)
        {
            hashbrown::hash_table::Entry::Occupied(mut o) => {
                Some(u64::from(std::mem::replace(o.get_mut(), r)))
            }
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert(r);
                None
            }
        }
    }

    /// Forgets `id` (deleted); returns the row it named, if it was live.
    pub fn remove(&mut self, id: &str) -> Option<u64> {
        let hash = self.hasher.hash_one(id);
        let ids = &self.ids;
        match self
            .rows
            .find_entry(hash, |&r| ids.get(r as usize) == Some(id))
        {
            Ok(entry) => Some(u64::from(entry.remove().0)),
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn row_ids_cross_chunks_and_share_with_clones() {
        let mut ids = RowIds::new();
        let n = CHUNK_IDS * 2 + 7;
        for i in 0..n {
            ids.push(&format!("id-{i}"));
        }
        let snapshot = ids.clone();
        ids.push("");
        ids.push("ü-multibyte");
        assert_eq!(snapshot.len(), n);
        assert_eq!(ids.len(), n + 2);
        for i in 0..n {
            assert_eq!(ids.get(i), Some(format!("id-{i}").as_str()));
            assert_eq!(snapshot.get(i), ids.get(i));
        }
        assert_eq!(ids.get(n), Some(""));
        assert_eq!(ids.get(n + 1), Some("ü-multibyte"));
        assert_eq!(snapshot.get(n), None);
        assert_eq!(ids.get(n + 2), None);
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Append a row with id `k`, making it live (an add, or an upsert when `k` is live).
        Append(u8),
        /// Delete id `k`.
        Delete(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => any::<u8>().prop_map(Op::Append),
            1 => any::<u8>().prop_map(Op::Delete),
        ]
    }

    proptest! {
        /// The table answers as a `HashMap<String, u64>` fed the same operations.
        #[test]
        fn id_table_matches_a_hash_map(ops in proptest::collection::vec(op(), 0..600)) {
            let mut column = RowIds::new();
            let mut table = IdTable::default();
            let mut reference: HashMap<String, u64> = HashMap::new();
            for op in ops {
                match op {
                    Op::Append(k) => {
                        let id = format!("k{k}");
                        let row = column.len() as u64;
                        column.push(&id);
                        table.extend_ids(&column);
                        prop_assert_eq!(table.insert(row), reference.insert(id, row));
                    }
                    Op::Delete(k) => {
                        let id = format!("k{k}");
                        prop_assert_eq!(table.remove(&id), reference.remove(&id));
                    }
                }
                prop_assert_eq!(table.len(), reference.len());
            }
            for k in 0..=255u8 {
                let id = format!("k{k}");
                prop_assert_eq!(table.row(&id), reference.get(&id).copied());
            }
        }
    }
}
