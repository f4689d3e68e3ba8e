//! Compaction: rewrite the rows without the deleted ones, crash-safely. The redb commit that
//! records the new numbering is the switch; open finishes or discards an interrupted one.

use super::field_index::FieldIndexes;
use super::{lock_poison_free, Database, Tombstones, Writer};
use crate::error::{Error, Result};
use crate::format::Header;
use crate::hnsw::graph::Graph;
use crate::ids::{IdTable, RowIds};
use crate::meta::CompactedRow;
use crate::storage::{names, Location};
use std::collections::BTreeSet;
use std::sync::Arc;

impl Database {
    /// Rewrites the database without deleted rows. Crash-safe: a crash at any point leaves the
    /// old or the new database (the redb commit that records the new rows is the switch).
    /// Row numbers change; ids do not.
    pub(super) fn compact_all(&self) -> Result<()> {
        let mut w = lock_poison_free(&self.writer);
        w.check()?;
        self.commit_locked(&mut w)?;
        let index = super::vector_index::current_spec(&w);
        // With nothing deleted there is nothing to rewrite, but the index's codebook is still
        // retrained on the rows there are now (one created on an empty database starts
        // neutral). After a rewrite, the compaction's commit made the old codes stale (see
        // `vector_index`); until they are remade here, searches run exact.
        let rewritten = if w.tombstones.count() == 0 {
            Ok(())
        } else {
            // Before anything changes, so that this failure leaves the handle usable.
            if !remove_replaced_rows(self.location.as_ref())? {
                return Err(Error::io(
                    format!(
                        "compacting: {} (the rows the last compaction replaced) is still \
                         mapped by a search or snapshot that began before it; retry compact() \
                         once those readers are done",
                        self.location.path_of(names::VECTORS_REPLACED).display()
                    ),
                    std::io::Error::from(std::io::ErrorKind::ResourceBusy),
                ));
            }
            self.compact_locked(&mut w)
        };
        // The graph needs nothing more: the rewrite's commit carried the graph of the new
        // numbering, and without a rewrite the graph is unchanged.
        let result = rewritten.and_then(|()| self.retrain_codes(&mut w, index));
        if let Err(e) = &result {
            w.poisoned = Some(e.to_string());
        }
        result
    }

    fn compact_locked(&self, w: &mut Writer) -> Result<()> {
        let (Some(dim), Some(store)) = (w.dim, w.rows.as_ref()) else {
            return Ok(());
        };
        let view = store.view();
        let layout = view.layout();
        let header = Header {
            layout,
            metric: self.metric,
        };
        let total = w.committed_rows;
        let is_dead = |row: u64| w.tombstones.contains(row);
        let survivors_count = usize::try_from(w.live).unwrap_or(usize::MAX);

        // 1. The surviving rows into a new file, durably.
        let mut new_store = self.location.create_rows(names::VECTORS_COMPACT, &header)?;
        // Bounded by the rows there are, whatever the write buffer's size.
        let rows_per_slab =
            (self.options.buffer_bytes / layout.stride_bytes()).clamp(1, survivors_count.max(1));
        let mut slab: Vec<f32> = Vec::new();
        slab.try_reserve_exact(rows_per_slab.saturating_mul(layout.stride_f32))
            .map_err(|_| {
                Error::invalid(format!(
                    "the write buffer ({} bytes) cannot be allocated: open with a smaller buffer_bytes",
                    self.options.buffer_bytes
                ))
            })?;
        let mut keep: Vec<u64> = Vec::with_capacity(survivors_count);
        for row in 0..total {
            if is_dead(row) {
                continue;
            }
            let Some(data) = view.read_row(row)? else {
                return Err(Error::corrupt(
                    self.location.path_of(names::VECTORS),
                    format!("row {row} unreadable"),
                ));
            };
            slab.extend_from_slice(&data);
            keep.push(row);
            if slab.len() >= rows_per_slab * layout.stride_f32 {
                new_store.append(&slab)?;
                slab.clear();
            }
        }
        if !slab.is_empty() {
            new_store.append(&slab)?;
        }
        new_store.sync()?;
        drop(view);
        // Closing the writer trims its preallocated tail (the file shrinks on disk); the store
        // the handle switches to is the file reopened at exactly its rows.
        drop(new_store);
        let n = keep.len() as u64;
        let Some((_, new_store)) = self.location.open_rows(names::VECTORS_COMPACT, n)? else {
            return Err(Error::corrupt(
                self.location.path_of(names::VECTORS_COMPACT),
                "vanished during compaction",
            ));
        };

        // 2. The new numbering, built before the switch so the switch is short.
        let mut all_meta = self.meta.all_metadata()?;
        let mut all_docs = self.meta.all_documents()?;
        let survivors: Vec<CompactedRow> = keep
            .iter()
            .map(|&row| CompactedRow {
                id: w
                    .row_ids
                    .get(row as usize)
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
                metadata: all_meta.remove(&row),
                document: all_docs.remove(&row),
            })
            .collect();
        // The field indexes under the new numbering (the staged rewrite does the same in redb).
        let mut field_indexes = FieldIndexes::default();
        for field in w.field_indexes.fields() {
            field_indexes.add_field(field, Vec::new());
        }
        for (new_row, survivor) in survivors.iter().enumerate() {
            field_indexes.add_row(new_row as u64, survivor.metadata.as_ref());
        }
        let mut row_ids = RowIds::new();
        for survivor in &survivors {
            row_ids.push(&survivor.id);
        }
        let mut id_table = IdTable::with_ids(row_ids.clone(), survivors.len());
        for new_row in 0..survivors.len() as u64 {
            id_table.insert(new_row);
        }

        // 3. The commit point: redb now describes the compacted rows. Readers pair a row number
        //    from the id table with redb's metadata and documents while holding the id lock, so
        //    the new numbering goes live in memory under the same write lock as in redb: no
        //    reader sees one numbering in memory and the other in redb. The rewrite is staged
        //    first, so readers wait only for the commit itself. From here the handle reads the
        //    new file (still named vectors.bin.compact; the rename does not touch the open file).
        // The graph of the new numbering, built over the new file before the switch (readers
        // keep the old snapshot meanwhile) and committed with it: no torn state between them.
        let graph = match &w.graph {
            Some(old) => {
                let graph = Graph::new(old.params(), old.seed());
                let mut dirty = BTreeSet::new();
                graph.insert(&*new_store.view(), self.space(), n, &mut dirty)?;
                Some(Arc::new(graph))
            }
            None => None,
        };
        let staged = self
            .meta
            .stage_compacted(&survivors, dim, self.metric, graph.as_deref())?;
        {
            let mut state = self.ids_write();
            staged.commit()?;
            w.rows = Some(new_store);
            w.row_ids = row_ids;
            w.tombstones = Tombstones::default();
            // Rows are renumbered: caches built from the old numbering are stale.
            w.meta_version += 1;
            w.field_indexes = Arc::new(field_indexes);
            w.committed_rows = n;
            w.live = n;
            // Codes of the old numbering: never published with the new rows.
            w.codes = None;
            w.codes_file = None;
            w.graph = graph;
            w.graph_dirty.clear();
            state.ids = id_table;
            state.pending.clear();
            self.published.store(Arc::new(Self::snapshot_of(w)));
        }

        // 4. Swap the files and clear the mark (open finishes this after a crash). Readers of
        //    older snapshots may still map the old file: it is moved aside rather than
        //    replaced, since Windows refuses to replace or remove a mapped file but lets it be
        //    renamed (Unix allows all three; the one sequence serves both). Between the two
        //    renames there is no `vectors.bin`; open then finds the mark and the compacted
        //    file and finishes the switch.
        self.location
            .rename(names::VECTORS, names::VECTORS_REPLACED)?;
        self.location
            .rename(names::VECTORS_COMPACT, names::VECTORS)?;
        self.meta.finish_compaction()?;
        // Unix frees its space now (readers keep their mappings); Windows once they are done.
        remove_replaced_rows(self.location.as_ref())?;
        Ok(())
    }
}

/// Removes the rows an earlier compaction replaced (`vectors.bin.old`), if they are there.
/// `Ok(false)` when the file is still mapped by a reader, which only Windows reports (see
/// [`crate::storage::fs::still_mapped`]): it stays until the next compaction or open.
pub(super) fn remove_replaced_rows(location: &dyn Location) -> Result<bool> {
    match location.remove(names::VECTORS_REPLACED) {
        Ok(()) => Ok(true),
        Err(Error::Io { source, .. }) if crate::storage::fs::still_mapped(&source) => Ok(false),
        Err(e) => Err(e),
    }
}
