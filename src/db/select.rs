//! Selecting rows by filter: the filter's row bitmap for one consistent state (the published
//! snapshot, redb and the uncommitted writes), and what reads it besides search: `records`
//! and `count_matching`.

use super::field_index::FieldIndexes;
use super::pending::Pending;
use super::{lock_poison_free, Database, IdState, Snapshot};
use crate::error::Result;
use crate::filter::bitmap::RowBits;
use crate::filter::columns::{FieldIndex, RowSource};
use crate::filter::{Filter, Scalar};
use crate::meta::MetaStore;
use crate::store::Select;
use crate::types::{Metadata, Record};
use std::ops::Range;
use std::sync::{Arc, RwLockReadGuard};

/// Rows' metadata and documents as one state holds them: uncommitted values first, then redb.
/// Built while the id lock is held, so a commit cannot move values from one to the other.
struct StateSource<'a> {
    meta: &'a MetaStore,
    pending: &'a Pending,
}

impl RowSource for StateSource<'_> {
    fn metadata(&self, rows: Range<u64>) -> Result<Vec<Option<Metadata>>> {
        let mut out = self.meta.metadata_range(rows.clone())?;
        for (slot, row) in out.iter_mut().zip(rows) {
            // The uncommitted value (an insert's, or an update's, possibly none) wins.
            if let Some(m) = self.pending.metadata(row) {
                *slot = m.cloned();
            }
        }
        Ok(out)
    }

    fn documents(&self, rows: Range<u64>) -> Result<Vec<Option<String>>> {
        let mut out = self.meta.documents_range(rows.clone())?;
        for (slot, row) in out.iter_mut().zip(rows) {
            if let Some(d) = self.pending.document(row) {
                *slot = d.map(str::to_owned);
            }
        }
        Ok(out)
    }
}

impl FieldIndex for FieldIndexes {
    fn rows_equal(&self, field: &str, value: &Scalar) -> Option<&[u64]> {
        FieldIndexes::rows_equal(self, field, value)
    }
}

impl Database {
    /// The newest snapshot and its live rows matching `filter` (all live rows without one).
    /// Under the writer lock this is the writer's current state.
    pub(super) fn select_rows(&self, filter: Option<&Filter>) -> Result<(Arc<Snapshot>, RowBits)> {
        let (snap, bits, _state) = self.select_locked(filter)?;
        Ok((snap, bits))
    }

    /// [`Database::select_rows`], returning the id lock it read under so the caller can read
    /// the selected rows' values from the same state.
    fn select_locked(
        &self,
        filter: Option<&Filter>,
    ) -> Result<(Arc<Snapshot>, RowBits, RwLockReadGuard<'_, IdState>)> {
        let filter = filter.filter(|f| !f.is_empty());
        // Lock order: the cache, then the id lock (writers take the id lock without the cache).
        let mut cache = filter.map(|_| lock_poison_free(&self.filter_cache));
        let state = self.ids_read();
        // Loaded under the id lock: the snapshot, the uncommitted values and redb agree.
        let snap = self.published.load_full();
        let rows = snap.row_ids.len();
        let mut bits = match (filter, cache.as_deref_mut()) {
            (Some(f), Some(c)) => {
                let source = StateSource {
                    meta: &self.meta,
                    pending: &state.pending,
                };
                let columns =
                    c.prepare(f, rows, snap.meta_version, &source, &*snap.field_indexes)?;
                // Other queries may build or read columns while this one evaluates.
                cache = None;
                columns.evaluate(f, rows, &*snap.field_indexes)
            }
            _ => RowBits::all(rows),
        };
        drop(cache);
        bits.and_not_words(snap.tombstones.words());
        Ok((snap, bits, state))
    }

    /// Live records matching `request.filter`, in row order, with offset and limit: the
    /// committed values from one redb read transaction, the uncommitted ones from memory.
    pub(super) fn select_records(&self, request: &Select<'_>) -> Result<Vec<Record>> {
        let (snap, bits, state) = self.select_locked(request.filter)?;
        let limit = request.limit.unwrap_or(usize::MAX);
        let rows: Vec<u64> = bits.iter().skip(request.offset).take(limit).collect();
        let (Some(view), Some(dim)) = (&snap.rows, snap.dim) else {
            return Ok(Vec::new());
        };
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        view.check_backed()?;
        let stored = self.meta.metadata_and_documents(&rows)?;
        let mut out = Vec::with_capacity(rows.len());
        for (row, (metadata, document)) in rows.into_iter().zip(stored) {
            let metadata = match state.pending.metadata(row) {
                Some(m) => m.cloned(),
                None => metadata,
            };
            let document = match state.pending.document(row) {
                Some(d) => d.map(str::to_owned),
                None => document,
            };
            let vector = view
                .read_row(row)?
                .map(|data| data[..dim as usize].to_vec())
                .unwrap_or_default();
            let id = snap
                .row_ids
                .get(row as usize)
                .map(|s| s.to_string())
                .unwrap_or_default();
            out.push(Record {
                id,
                vector,
                metadata,
                document,
            });
        }
        Ok(out)
    }

    /// Live records matching `filter`.
    pub(super) fn count_where(&self, filter: &Filter) -> Result<u64> {
        if filter.is_empty() {
            return Ok(self.count());
        }
        Ok(self.select_rows(Some(filter))?.1.count())
    }
}
