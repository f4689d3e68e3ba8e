//! Writes acknowledged but not yet committed to redb. One owner, because five paths change
//! them (write, delete, update, commit, compaction) and readers (`get`, `documents`, the
//! filter's metadata reads) must see the metadata and documents redb does not hold yet.

use crate::meta::{CommitBatch, RowUpdate};
use crate::types::{EmbedderSpec, Metadata, Metric};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// The rows inserted and deleted since the last commit, with the new rows' metadata and
/// documents, and the in-place updates of committed rows. Lives beside the id table, under its
/// lock, so a reader pairs a row with its pending values and never with another row's.
#[derive(Debug, Default)]
pub(super) struct Pending {
    inserts: Vec<(u64, Arc<str>)>,
    deletes: Vec<(u64, Arc<str>)>,
    /// Metadata redb does not hold yet, for new rows and updated committed rows; `None` means
    /// the row has none (an update removed it).
    metadata: HashMap<u64, Option<Metadata>>,
    /// Documents redb does not hold yet, as `metadata`.
    documents: HashMap<u64, Option<String>>,
    /// Committed rows changed in place (their entries in `metadata` / `documents` go to redb
    /// as updates, not inserts).
    updated: BTreeSet<u64>,
    /// Rows updated since the last commit, counted per call (what auto-commit counts).
    update_ops: usize,
}

impl Pending {
    /// A new row `row` under `id`.
    pub(super) fn insert(
        &mut self,
        row: u64,
        id: Arc<str>,
        metadata: Option<&Metadata>,
        document: Option<&str>,
    ) {
        self.inserts.push((row, id));
        if let Some(m) = metadata {
            self.metadata.insert(row, Some(m.clone()));
        }
        if let Some(d) = document {
            self.documents.insert(row, Some(d.to_owned()));
        }
    }

    /// Row `row` (which held `id`) is deleted; its pending values go with it.
    pub(super) fn delete(&mut self, row: u64, id: Arc<str>) {
        self.deletes.push((row, id));
        self.metadata.remove(&row);
        self.documents.remove(&row);
        self.updated.remove(&row);
    }

    /// Changes row `row` in place: `metadata` / `document` are `None` to keep the value,
    /// `Some(None)` to remove it. `committed` says whether redb holds the row already; a row
    /// that is not committed just has its pending insert edited.
    pub(super) fn update(
        &mut self,
        row: u64,
        committed: bool,
        metadata: Option<Option<&Metadata>>,
        document: Option<Option<&str>>,
    ) {
        if let Some(m) = metadata {
            self.metadata.insert(row, m.cloned());
        }
        if let Some(d) = document {
            self.documents.insert(row, d.map(str::to_owned));
        }
        if committed {
            self.updated.insert(row);
        }
        self.update_ops += 1;
    }

    /// The metadata of `row` as not yet committed: `Some(value)` when the pending state decides
    /// it (`value` is `None` for a row without metadata), `None` when redb's value holds.
    pub(super) fn metadata(&self, row: u64) -> Option<Option<&Metadata>> {
        self.metadata.get(&row).map(Option::as_ref)
    }

    /// The document of `row` as not yet committed, as [`Pending::metadata`].
    pub(super) fn document(&self, row: u64) -> Option<Option<&str>> {
        self.documents.get(&row).map(Option::as_deref)
    }

    /// Inserts, deletes and row updates since the last commit (what `auto_commit_rows` counts).
    pub(super) fn ops(&self) -> usize {
        self.inserts.len() + self.deletes.len() + self.update_ops
    }

    /// The commit that makes these writes durable, with the row count and the configuration
    /// to record.
    pub(super) fn batch<'a>(
        &'a self,
        committed_rows: u64,
        config: Option<(u32, Metric)>,
        embedder: Option<&'a EmbedderSpec>,
    ) -> CommitBatch<'a> {
        CommitBatch {
            inserts: self
                .inserts
                .iter()
                .map(|(row, id)| {
                    let metadata = self.metadata(*row).flatten();
                    (*row, &**id, metadata, self.document(*row).flatten())
                })
                .collect(),
            deletes: self.deletes.iter().map(|(row, id)| (*row, &**id)).collect(),
            updates: self
                .updated
                .iter()
                .map(|&row| RowUpdate {
                    row,
                    metadata: self.metadata(row),
                    document: self.document(row),
                })
                .collect(),
            committed_rows,
            config,
            embedder,
            metric: None,
            graph: None,
        }
    }

    /// Forgets everything: committed, or renumbered by a compaction (which commits first).
    pub(super) fn clear(&mut self) {
        *self = Pending::default();
    }
}
