//! Writes acknowledged but not yet committed to redb. One owner, because four paths change
//! them (write, delete, commit, compaction) and readers (`get`, `documents`) must see the
//! metadata and documents of rows redb does not hold yet.

use crate::meta::CommitBatch;
use crate::types::{EmbedderSpec, Metadata, Metric};
use std::collections::HashMap;
use std::sync::Arc;

/// The rows inserted and deleted since the last commit, with the new rows' metadata and
/// documents. Lives beside the id table, under its lock, so a reader pairs a row with its
/// pending values and never with another row's.
#[derive(Debug, Default)]
pub(super) struct Pending {
    inserts: Vec<(u64, Arc<str>)>,
    deletes: Vec<(u64, Arc<str>)>,
    metadata: HashMap<u64, Metadata>,
    documents: HashMap<u64, String>,
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
            self.metadata.insert(row, m.clone());
        }
        if let Some(d) = document {
            self.documents.insert(row, d.to_owned());
        }
    }

    /// Row `row` (which held `id`) is deleted; its pending values go with it.
    pub(super) fn delete(&mut self, row: u64, id: Arc<str>) {
        self.deletes.push((row, id));
        self.metadata.remove(&row);
        self.documents.remove(&row);
    }

    /// The metadata of `row` if it is not committed yet.
    pub(super) fn metadata(&self, row: u64) -> Option<&Metadata> {
        self.metadata.get(&row)
    }

    /// The document of `row` if it is not committed yet.
    pub(super) fn document(&self, row: u64) -> Option<&str> {
        self.documents.get(&row).map(String::as_str)
    }

    /// Inserts and deletes since the last commit (what `auto_commit_rows` counts).
    pub(super) fn ops(&self) -> usize {
        self.inserts.len() + self.deletes.len()
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
                .map(|(row, id)| (*row, &**id, self.metadata(*row), self.document(*row)))
                .collect(),
            deletes: self.deletes.iter().map(|(row, id)| (*row, &**id)).collect(),
            committed_rows,
            config,
            embedder,
        }
    }

    /// Forgets everything: committed, or renumbered by a compaction (which commits first).
    pub(super) fn clear(&mut self) {
        *self = Pending::default();
    }
}
