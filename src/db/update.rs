//! Updates of existing records (see [`crate::store::Update`]): validated whole before anything
//! changes. Metadata and documents change in place: the row keeps its number and its vector,
//! the new values wait in [`super::Pending`] for the next commit, and the metadata version is
//! bumped so caches built from the old values are dropped. A new vector is appended as a new
//! row carrying the record's (possibly new) metadata and document, and the old row deleted, as
//! an upsert does.

use super::validate::{
    check_documents_and_metadata, dimension_mismatch, first_non_finite, non_finite_error,
};
use super::{lock_poison_free, Database, Writer};
use crate::error::{Error, Result};
use crate::store::Update;
use crate::types::Metadata;
use std::collections::HashSet;
use std::sync::Arc;

impl Database {
    /// Applies `request` atomically: an unknown id ([`Error::NotFound`]), a repeated id or a
    /// bad entry changes nothing.
    pub(super) fn update_rows(&self, request: &Update<'_>) -> Result<()> {
        let Update {
            ids,
            vectors,
            metadatas,
            documents,
        } = *request;
        let n = ids.len();
        if n == 0 {
            let given = vectors.is_some_and(|v| !v.is_empty())
                || metadatas.is_some_and(|m| !m.is_empty())
                || documents.is_some_and(|d| !d.is_empty());
            if given {
                return Err(Error::invalid(
                    "vectors, metadatas or documents given without ids",
                ));
            }
            return Ok(());
        }
        if let Some(m) = metadatas.filter(|m| m.len() != n) {
            return Err(Error::invalid(format!(
                "{} metadatas for {n} ids: pass one per id (None removes a record's metadata)",
                m.len()
            )));
        }
        if let Some(d) = documents.filter(|d| d.len() != n) {
            return Err(Error::invalid(format!(
                "{} documents for {n} ids: pass one per id (None removes a record's document)",
                d.len()
            )));
        }
        check_documents_and_metadata(metadatas.unwrap_or(&[]), documents.unwrap_or(&[]))?;
        // Before the writer lock: no rayon work may run under it (see `append_rows`).
        let non_finite = vectors.and_then(first_non_finite);

        let mut w = lock_poison_free(&self.writer);
        w.check()?;
        let rows = {
            let state = self.ids_read();
            let mut seen = HashSet::with_capacity(n);
            let mut rows = Vec::with_capacity(n);
            for (i, id) in ids.iter().enumerate() {
                let id = *id;
                if !seen.insert(id) {
                    return Err(Error::InvalidInput {
                        reason: format!(
                            "id {id:?} appears more than once in one update: pass each id once"
                        ),
                        index: Some(i),
                    });
                }
                match state.ids.row(id) {
                    Some(row) => rows.push((row, Arc::<str>::from(id))),
                    None => return Err(Error::NotFound { id: id.to_owned() }),
                }
            }
            rows
        };
        match vectors {
            Some(vectors) => {
                // The ids exist, so the dimension is fixed.
                let Some(dim) = w.dim.map(|d| d as usize) else {
                    return Err(Error::invalid("no vectors stored yet: nothing to update"));
                };
                if vectors.len() != n * dim {
                    return Err(dimension_mismatch(dim as u32, vectors, n));
                }
                if let Some(pos) = non_finite {
                    return Err(non_finite_error(vectors, pos, dim));
                }
                self.replace_vectors(&mut w, dim, ids, vectors, metadatas, documents, rows)
            }
            None if metadatas.is_none() && documents.is_none() => Ok(()),
            None => self.update_in_place(&mut w, metadatas, documents, &rows),
        }
    }

    /// New vectors: each record moves to a new row with its new vector and its new (or kept)
    /// metadata and document; the old rows are deleted.
    #[allow(clippy::too_many_arguments)]
    fn replace_vectors(
        &self,
        w: &mut Writer,
        dim: usize,
        ids: &[&str],
        vectors: &[f32],
        metadatas: Option<&[Option<Metadata>]>,
        documents: Option<&[Option<&str>]>,
        rows: Vec<(u64, Arc<str>)>,
    ) -> Result<()> {
        let (kept_metadata, kept_documents) = {
            let state = self.ids_read();
            let mut kept_metadata = Vec::new();
            if metadatas.is_none() {
                for (row, _) in &rows {
                    kept_metadata.push(self.row_metadata(&state.pending, *row)?);
                }
            }
            let mut kept_documents = Vec::new();
            if documents.is_none() {
                for (row, _) in &rows {
                    kept_documents.push(self.row_document(&state.pending, *row)?);
                }
            }
            (kept_metadata, kept_documents)
        };
        let metadatas = metadatas.unwrap_or(&kept_metadata);
        let kept_documents: Vec<Option<&str>> =
            kept_documents.iter().map(|d| d.as_deref()).collect();
        let documents = documents.unwrap_or(&kept_documents);
        self.append_records(w, dim, ids, vectors, metadatas, documents, rows)
    }

    /// Metadata and documents only: the rows keep their numbers and vectors.
    fn update_in_place(
        &self,
        w: &mut Writer,
        metadatas: Option<&[Option<Metadata>]>,
        documents: Option<&[Option<&str>]>,
        rows: &[(u64, Arc<str>)],
    ) -> Result<()> {
        if let Some(metadatas) = metadatas.filter(|_| !w.field_indexes.is_empty()) {
            let old = {
                let state = self.ids_read();
                rows.iter()
                    .map(|(row, _)| self.row_metadata(&state.pending, *row))
                    .collect::<Result<Vec<_>>>()?
            };
            let indexes = Arc::make_mut(&mut w.field_indexes);
            for (((row, _), old), new) in rows.iter().zip(&old).zip(metadatas) {
                indexes.remove_row(*row, old.as_ref());
                indexes.add_row(*row, new.as_ref());
            }
        }
        // Caches built from the old values are stale from this snapshot on.
        w.meta_version += 1;
        let uncommitted = {
            let mut state = self.ids_write();
            for (i, (row, _)) in rows.iter().enumerate() {
                state.pending.update(
                    *row,
                    *row < w.committed_rows,
                    metadatas.map(|m| m[i].as_ref()),
                    documents.map(|d| d[i]),
                );
            }
            self.published.store(Arc::new(Self::snapshot_of(w)));
            state.pending.ops()
        };
        self.auto_commit(w, uncommitted)
    }
}
