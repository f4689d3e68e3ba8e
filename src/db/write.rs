//! Writing: validate a batch whole, append its rows, publish it to readers, and commit (rows
//! fsynced first, then the redb transaction that names them).

use super::validate::{
    check_dimension, check_documents_and_metadata, check_id, dimension_mismatch, first_non_finite,
    non_finite_error,
};
use super::{lock_poison_free, Database, Writer};
use crate::error::{Error, Result};
use crate::format::{Header, RowLayout};
use crate::ids::MAX_ROWS;
use crate::meta::GraphCommit;
use crate::storage::names;
use crate::store::{Delete, Missing, Write, WriteMode};
use crate::types::Metadata;
use std::collections::HashSet;
use std::sync::Arc;

impl Database {
    /// Inserts or replaces a batch (see [`crate::Store::write`]): validated whole before any
    /// row is written.
    pub(super) fn write_batch(&self, request: &Write<'_>) -> Result<()> {
        let Write {
            mode,
            ids,
            vectors,
            metadatas,
            documents,
        } = *request;
        let n = ids.len();
        if n == 0 {
            if vectors.is_empty() && metadatas.is_empty() && documents.is_empty() {
                return Ok(());
            }
            return Err(Error::invalid(
                "vectors, metadatas or documents given without ids",
            ));
        }
        if !metadatas.is_empty() && metadatas.len() != n {
            return Err(Error::invalid(format!(
                "{} metadatas for {n} ids: pass one per id, or none",
                metadatas.len()
            )));
        }
        if !documents.is_empty() && documents.len() != n {
            return Err(Error::invalid(format!(
                "{} documents for {n} ids: pass one per id, or none",
                documents.len()
            )));
        }
        check_documents_and_metadata(metadatas, documents)?;
        // NaN/inf anywhere rejects the batch. Checked (on every core for large batches) before
        // the writer lock is taken: no rayon work may run under it (see `append_rows`).
        let non_finite = first_non_finite(vectors);
        let mut w = lock_poison_free(&self.writer);
        w.check()?;

        // Validate everything before writing anything.
        let dim = match w.dim {
            Some(d) => {
                if vectors.len() != n * d as usize {
                    // Whole vectors of the right length, but not one per id: a count error.
                    let rows = vectors.len() / d as usize;
                    if vectors.len().is_multiple_of(d as usize) && rows > 0 {
                        return Err(Error::invalid(format!(
                            "{rows} vectors for {n} ids: pass one vector per id"
                        )));
                    }
                    return Err(dimension_mismatch(d, vectors, n));
                }
                d as usize
            }
            None => {
                if vectors.is_empty() {
                    return Err(Error::invalid(
                        "the vectors are empty: each needs at least one component",
                    ));
                }
                if !vectors.len().is_multiple_of(n) {
                    return Err(Error::invalid(format!(
                        "{} values for {n} ids: vectors must all have the same length",
                        vectors.len()
                    )));
                }
                let d = vectors.len() / n;
                check_dimension(d)?;
                d
            }
        };
        if let Some(pos) = non_finite {
            return Err(non_finite_error(vectors, pos, dim));
        }
        let mut replaced = Vec::new();
        {
            let state = self.ids_read();
            let mut seen = HashSet::with_capacity(n);
            for (i, id) in ids.iter().enumerate() {
                let id = *id;
                check_id(id, i)?;
                if !seen.insert(id) {
                    return Err(Error::DuplicateId {
                        id: id.to_owned(),
                        index: Some(i),
                    });
                }
                if let Some(row) = state.ids.row(id) {
                    match mode {
                        WriteMode::Add => {
                            return Err(Error::DuplicateId {
                                id: id.to_owned(),
                                index: Some(i),
                            })
                        }
                        WriteMode::Upsert => replaced.push((row, Arc::<str>::from(id))),
                    }
                }
            }
        }

        self.append_records(&mut w, dim, ids, vectors, metadatas, documents, replaced)
    }

    /// Appends validated records as new rows, tombstones the rows they `replace` (row, id),
    /// publishes them to readers and commits if auto-commit is due. The records' metadata goes
    /// into the field indexes with them (the replaced rows stay listed until compaction, as
    /// tombstoned rows may).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn append_records(
        &self,
        w: &mut Writer,
        dim: usize,
        ids: &[&str],
        vectors: &[f32],
        metadatas: &[Option<Metadata>],
        documents: &[Option<&str>],
        replaced: Vec<(u64, Arc<str>)>,
    ) -> Result<()> {
        let n = ids.len();
        let first_row = w.rows.as_ref().map_or(0, |r| r.rows());
        if first_row + n as u64 > MAX_ROWS {
            return Err(Error::invalid(format!(
                "a database holds at most {MAX_ROWS} rows, and this batch would take it to {}: \
                 compact to reclaim deleted rows, or split the data between databases",
                first_row + n as u64
            )));
        }
        // Write the rows through the write buffer.
        if w.rows.is_none() {
            self.create_rows(w, dim as u32)?;
        }
        if let Err(e) = self.append_rows(w, vectors, dim) {
            w.poisoned = Some(e.to_string());
            return Err(e);
        }

        // Record the batch, then publish it.
        for id in ids {
            w.row_ids.push(id);
        }
        for (row, _) in &replaced {
            w.tombstones.set(*row);
        }
        w.live += (n - replaced.len()) as u64;
        if !w.field_indexes.is_empty() {
            let indexes = Arc::make_mut(&mut w.field_indexes);
            for (i, metadata) in metadatas.iter().enumerate() {
                indexes.add_row(first_row + i as u64, metadata.as_ref());
            }
        }
        let uncommitted = {
            let mut state = self.ids_write();
            state.ids.extend_ids(&w.row_ids);
            for (i, id) in ids.iter().enumerate() {
                let row = first_row + i as u64;
                state.ids.insert(row);
                let id = Arc::<str>::from(*id);
                let metadata = metadatas.get(i).and_then(Option::as_ref);
                let document = documents.get(i).copied().flatten();
                state.pending.insert(row, id, metadata, document);
            }
            for (row, id) in replaced {
                state.pending.delete(row, id);
            }
            self.published.store(Arc::new(Self::snapshot_of(w)));
            state.pending.ops()
        };

        self.auto_commit(w, uncommitted)
    }

    /// Commits when `uncommitted` operations reach the auto-commit threshold.
    pub(super) fn auto_commit(&self, w: &mut Writer, uncommitted: usize) -> Result<()> {
        if self.options.auto_commit_rows > 0 && uncommitted >= self.options.auto_commit_rows {
            self.commit_locked(w)?;
        }
        Ok(())
    }

    pub(super) fn create_rows(&self, w: &mut Writer, dim: u32) -> Result<()> {
        let header = Header {
            layout: RowLayout::new(dim),
            metric: self.metric,
        };
        let store = self.location.create_rows(names::VECTORS, &header)?;
        w.rows = Some(store);
        w.dim = Some(dim);
        w.config_committed = false;
        Ok(())
    }

    /// Encodes rows (vector, norm, padding) into slabs of the write buffer and appends them.
    /// Runs under the writer lock, so it starts no rayon work (see the loop).
    fn append_rows(&self, w: &mut Writer, vectors: &[f32], dim: usize) -> Result<()> {
        let Some(store) = w.rows.as_mut() else {
            return Err(Error::invalid("no row storage (dimension unknown)"));
        };
        let layout = store.layout();
        let stride = layout.stride_f32;
        let rows_per_slab = (self.options.buffer_bytes / layout.stride_bytes()).max(1);
        let n = vectors.len() / dim;
        let mut slab = vec![0.0f32; rows_per_slab.min(n) * stride];
        let kernels = self.kernels;
        let mut done = 0;
        while done < n {
            let take = rows_per_slab.min(n - done);
            let source = &vectors[done * dim..(done + take) * dim];
            let encode = |(out, v): (&mut [f32], &[f32])| {
                layout.encode_row(v, kernels.dot(v, v).sqrt(), out);
            };
            let target = &mut slab[..take * stride];
            // On this thread, never on rayon's pool: the writer lock is held here, and a thread
            // waiting for pool work may run another caller's `add` (if it is a pool worker
            // itself) or wait on workers that are all blocked on this lock. Encoding is a norm
            // and a copy per row, far faster than the disk it feeds.
            target
                .chunks_mut(stride)
                .zip(source.chunks(dim))
                .for_each(encode);
            store.append(target)?;
            if let Some(codes) = w.codes.as_mut() {
                codes.push_rows(layout, target);
            }
            done += take;
        }
        // The graph takes the rows in at once (they are searchable now); the commit writes
        // the links this changed.
        if let Some(graph) = &w.graph {
            graph.insert(
                &*store.view(),
                self.space(),
                store.rows(),
                &mut w.graph_dirty,
            )?;
        }
        Ok(())
    }

    /// Deletes `ids`, or the records matching the filter, or those of `ids` that match it;
    /// with [`Missing::Skip`], unknown ids are skipped under the same writer lock that
    /// deletes the others, so a concurrent delete cannot fail the call.
    pub(super) fn delete_rows(&self, request: &Delete<'_>) -> Result<usize> {
        let Delete {
            ids,
            filter,
            missing,
        } = *request;
        let filter = filter.filter(|f| !f.is_empty());
        if ids.is_none() && filter.is_none() {
            return Err(Error::invalid(
                "delete without ids or a filter: give ids, a filter, or the filter {} to delete every record",
            ));
        }
        let mut w = lock_poison_free(&self.writer);
        w.check()?;
        // The filter is evaluated under the writer lock: against the current state, and no
        // write can slip in between the selection and the delete.
        let matching = match filter {
            Some(f) => Some(self.select_rows(Some(f))?),
            None => None,
        };
        let mut rows = Vec::new();
        match (ids, &matching) {
            (None, Some((snap, bits))) => {
                for row in bits.iter() {
                    if let Some(id) = snap.row_ids.get(row as usize) {
                        rows.push((row, Arc::<str>::from(id)));
                    }
                }
            }
            (ids, _) => {
                let ids = ids.unwrap_or(&[]);
                let state = self.ids_read();
                let mut seen = HashSet::new();
                for id in ids {
                    let id = *id;
                    if !seen.insert(id) {
                        continue;
                    }
                    match state.ids.row(id) {
                        Some(row) => rows.push((row, Arc::<str>::from(id))),
                        None if missing == Missing::Skip => {}
                        None => return Err(Error::NotFound { id: id.to_owned() }),
                    }
                }
                if let Some((_, bits)) = &matching {
                    rows.retain(|(row, _)| bits.contains(*row));
                }
            }
        }
        for (row, _) in &rows {
            w.tombstones.set(*row);
        }
        w.live -= rows.len() as u64;
        let deleted = rows.len();
        let uncommitted = {
            let mut state = self.ids_write();
            for (row, id) in rows {
                state.ids.remove(&id);
                state.pending.delete(row, id);
            }
            self.published.store(Arc::new(Self::snapshot_of(&w)));
            state.pending.ops()
        };
        // Deleted rows stay listed in the in-memory field indexes (the scan skips tombstoned
        // rows); the commit removes them from redb's, and compaction from both.
        self.auto_commit(&mut w, uncommitted)?;
        Ok(deleted)
    }

    /// Makes every change so far durable: fsync `vectors.bin`, then commit redb.
    pub(super) fn persist_all(&self) -> Result<()> {
        let mut w = lock_poison_free(&self.writer);
        w.check()?;
        self.commit_locked(&mut w)
    }

    pub(super) fn commit_locked(&self, w: &mut Writer) -> Result<()> {
        if !w.has_pending(&self.ids_read().pending) {
            return Ok(());
        }
        let result = (|| -> Result<u64> {
            let committed_rows = w.rows.as_ref().map_or(0, |store| store.rows());
            let state = self.ids_read();
            let config = w.dim.map(|d| (d, self.metric));
            let mut batch =
                state
                    .pending
                    .batch(committed_rows, config, w.embedder_unrecorded.as_ref());
            if w.metric_unrecorded {
                batch.metric = Some(self.metric);
            }
            // The graph's changed links and node count commit with the rows they index.
            batch.graph = w.graph.as_deref().map(|graph| GraphCommit {
                graph,
                dirty: &w.graph_dirty,
            });
            // The rows, and their codes if an index exists, are made durable before redb
            // commits the batch that names them.
            let rows = &mut w.rows;
            let codes = w.codes.as_ref();
            let codes_file = &mut w.codes_file;
            let rows_durable = move || {
                rows.as_mut().map_or(Ok(()), |store| store.sync())?;
                if let (Some(codes), Some(file)) = (codes, codes_file.as_mut()) {
                    file.append(codes, committed_rows)?;
                    file.sync()?;
                }
                Ok(())
            };
            self.meta
                .commit(&batch, rows_durable, self.location.syncs_in_parallel())?;
            Ok(committed_rows)
        })();
        match result {
            Ok(committed_rows) => {
                self.ids_write().pending.clear();
                w.embedder_unrecorded = None;
                w.metric_unrecorded = false;
                w.committed_rows = committed_rows;
                w.config_committed = true;
                w.graph_dirty.clear();
                self.build_pending_index(w)?;
                self.retrain_outgrown_codes(w)
            }
            Err(e) => {
                w.poisoned = Some(e.to_string());
                Err(e)
            }
        }
    }
}
