//! The metadata store: ids, metadata, tombstones, the configuration and the committed row
//! count, in redb. A redb commit is the database's commit point: rows past the committed count
//! in `vectors.bin` do not exist.

use crate::error::{Error, Result};
use crate::types::{EmbedderSpec, Metadata, Metric};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;

/// id -> row.
const ID_TO_ROW: TableDefinition<&str, u64> = TableDefinition::new("id_to_row");
/// row -> id (kept for tombstoned rows too, until compaction).
const ROW_TO_ID: TableDefinition<u64, &str> = TableDefinition::new("row_to_id");
/// row -> tagged metadata bytes (see `Metadata::encode`).
const ROW_META: TableDefinition<u64, &[u8]> = TableDefinition::new("row_meta");
/// row -> the text the row's vector was embedded from (documents stay out of `vectors.bin`,
/// whose rows are fixed-size). Kept in step with `row_meta` by commit, delete and compaction.
const ROW_DOC: TableDefinition<u64, &str> = TableDefinition::new("row_doc");
/// Deleted rows.
const TOMBSTONES: TableDefinition<u64, ()> = TableDefinition::new("tombstones");
/// Configuration and counters, by name.
const CONFIG: TableDefinition<&str, u64> = TableDefinition::new("config");
/// Text-valued configuration, by name: `embedder` (the model's name). A separate table because
/// `config` holds integers and changing its value type would make older files unreadable.
const CONFIG_TEXT: TableDefinition<&str, &str> = TableDefinition::new("config_text");

const KEY_FORMAT: &str = "format_version";
const KEY_DIMENSION: &str = "dimension";
const KEY_METRIC: &str = "metric";
const KEY_COMMITTED_ROWS: &str = "committed_rows";
/// The recorded text embedder: its name in `config_text`, its dimension in `config`.
const KEY_EMBEDDER: &str = "embedder";
const KEY_EMBEDDER_DIMENSION: &str = "embedder_dimension";
/// Set while a compaction's new rows live in `vectors.bin.compact` (see `Database::compact`).
const KEY_COMPACTION_PENDING: &str = "compaction_pending";

/// Version of the table layout.
const META_FORMAT: u64 = 1;

/// Maps redb's open errors onto ours: a second writer is `Locked`, anything about the bytes
/// is `Corrupt`.
pub(crate) fn map_db_error(e: redb::DatabaseError, path: &Path, dir: &Path) -> Error {
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => Error::Locked {
            path: dir.to_path_buf(),
        },
        redb::DatabaseError::Storage(redb::StorageError::Io(io))
            if io.kind() != std::io::ErrorKind::InvalidData =>
        {
            Error::io(format!("opening {}", path.display()), io)
        }
        other => Error::corrupt(path, format!("not a readable metadata store ({other})")),
    }
}

fn meta_err(context: &str) -> impl FnOnce(redb::Error) -> Error + '_ {
    move |e| match e {
        redb::Error::Io(io) => Error::io(context.to_owned(), io),
        redb::Error::Corrupted(msg) => Error::Metadata {
            context: context.into(),
            message: format!("corrupted: {msg}"),
        },
        other => Error::Metadata {
            context: context.into(),
            message: other.to_string(),
        },
    }
}

fn to_redb<E: Into<redb::Error>>(e: E) -> redb::Error {
    e.into()
}

/// Everything loaded from the store at open.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Dimension, if fixed.
    pub dimension: Option<u32>,
    /// Metric, if fixed.
    pub metric: Option<Metric>,
    /// Committed rows.
    pub committed_rows: u64,
    /// `row_to_id` for rows `0..committed_rows`; `None` for rows with no id entry.
    pub row_ids: Vec<Option<String>>,
    /// Tombstoned rows.
    pub tombstones: Vec<u64>,
    /// A compaction committed but its file rename may not have happened.
    pub compaction_pending: bool,
    /// The text embedder recorded at creation, if any.
    pub embedder: Option<EmbedderSpec>,
}

/// One commit's worth of changes.
#[derive(Debug, Default)]
pub struct CommitBatch<'a> {
    /// New rows: (row, id, metadata, document).
    pub inserts: Vec<(u64, &'a str, Option<&'a Metadata>, Option<&'a str>)>,
    /// Rows to tombstone, with the id they held.
    pub deletes: Vec<(u64, &'a str)>,
    /// The new committed row count.
    pub committed_rows: u64,
    /// Dimension and metric to record (set with the first rows).
    pub config: Option<(u32, Metric)>,
    /// The text embedder to record (set while none is recorded).
    pub embedder: Option<&'a EmbedderSpec>,
}

/// One surviving row of a compaction, in its new position.
#[derive(Debug)]
pub struct CompactedRow {
    /// Its id.
    pub id: String,
    /// Its metadata.
    pub metadata: Option<Metadata>,
    /// Its document.
    pub document: Option<String>,
}

/// A compaction's rewrite of the tables, staged in a redb write transaction: nothing is visible
/// until [`StagedCompaction::commit`]; dropping it abandons the rewrite.
pub struct StagedCompaction {
    txn: redb::WriteTransaction,
    ctx: String,
}

impl std::fmt::Debug for StagedCompaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagedCompaction").finish_non_exhaustive()
    }
}

impl StagedCompaction {
    /// Commits the rewrite durably: the compaction's commit point.
    pub fn commit(self) -> Result<()> {
        let ctx = self.ctx;
        self.txn
            .commit()
            .map_err(|e| meta_err(&ctx)(redb::Error::from(e)))
    }
}

/// The redb-backed metadata store.
#[derive(Debug)]
pub struct MetaStore {
    db: redb::Database,
    path: std::path::PathBuf,
}

impl MetaStore {
    /// Wraps an open redb database; `path` names it in errors.
    pub fn new(db: redb::Database, path: std::path::PathBuf) -> Self {
        MetaStore { db, path }
    }

    /// Reads everything the engine keeps in memory.
    pub fn load(&self) -> Result<Loaded> {
        let ctx = format!("reading {}", self.path.display());
        let run = || -> std::result::Result<Loaded, redb::Error> {
            let txn = self.db.begin_read().map_err(to_redb)?;
            let mut out = Loaded::default();
            let config = match txn.open_table(CONFIG) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(out),
                Err(e) => return Err(e.into()),
            };
            let get = |key: &str| -> std::result::Result<Option<u64>, redb::Error> {
                Ok(config.get(key)?.map(|v| v.value()))
            };
            if let Some(v) = get(KEY_FORMAT)? {
                if v != META_FORMAT {
                    return Err(redb::Error::Corrupted(format!(
                        "metadata format {v}, this build reads {META_FORMAT}"
                    )));
                }
            }
            out.dimension = get(KEY_DIMENSION)?.map(|d| d as u32);
            out.metric = match get(KEY_METRIC)? {
                Some(code) => Some(Metric::from_code(code as u8).ok_or_else(|| {
                    redb::Error::Corrupted(format!("unknown metric code {code}"))
                })?),
                None => None,
            };
            out.committed_rows = get(KEY_COMMITTED_ROWS)?.unwrap_or(0);
            out.compaction_pending = get(KEY_COMPACTION_PENDING)?.unwrap_or(0) != 0;
            let embedder_dim = get(KEY_EMBEDDER_DIMENSION)?;
            out.embedder = match txn.open_table(CONFIG_TEXT) {
                Ok(t) => match (t.get(KEY_EMBEDDER)?, embedder_dim) {
                    (Some(name), Some(dim)) => Some(EmbedderSpec {
                        name: name.value().to_owned(),
                        dimension: u32::try_from(dim).map_err(|_| {
                            redb::Error::Corrupted(format!("embedder dimension {dim}"))
                        })?,
                    }),
                    (None, None) => None,
                    _ => {
                        return Err(redb::Error::Corrupted(
                            "embedder name and dimension are not both recorded".into(),
                        ))
                    }
                },
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(e.into()),
            };
            let rows = usize::try_from(out.committed_rows)
                .map_err(|_| redb::Error::Corrupted("row count too large".into()))?;
            out.row_ids = vec![None; rows];
            let row_to_id = txn.open_table(ROW_TO_ID)?;
            for entry in row_to_id.iter()? {
                let (row, id) = entry?;
                let row = row.value() as usize;
                if row >= rows {
                    return Err(redb::Error::Corrupted(format!(
                        "row {row} has an id but only {rows} rows are committed"
                    )));
                }
                out.row_ids[row] = Some(id.value().to_owned());
            }
            let tombstones = txn.open_table(TOMBSTONES)?;
            for entry in tombstones.iter()? {
                out.tombstones.push(entry?.0.value());
            }
            Ok(out)
        };
        run().map_err(|e| match e {
            redb::Error::Corrupted(msg) => Error::corrupt(&self.path, msg),
            other => meta_err(&ctx)(other),
        })
    }

    /// Metadata of a committed row.
    pub fn metadata(&self, row: u64) -> Result<Option<Metadata>> {
        let ctx = format!("reading metadata from {}", self.path.display());
        let run = || -> std::result::Result<Option<Vec<u8>>, redb::Error> {
            let txn = self.db.begin_read().map_err(to_redb)?;
            let table = match txn.open_table(ROW_META) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            Ok(table.get(row)?.map(|v| v.value().to_vec()))
        };
        match run().map_err(meta_err(&ctx))? {
            None => Ok(None),
            Some(bytes) => Metadata::decode(&bytes).map(Some).ok_or_else(|| {
                Error::corrupt(&self.path, format!("undecodable metadata for row {row}"))
            }),
        }
    }

    /// The documents of committed rows, in the order asked (`None` for rows without one).
    pub fn documents(&self, rows: &[u64]) -> Result<Vec<Option<String>>> {
        let ctx = format!("reading documents from {}", self.path.display());
        let run = || -> std::result::Result<Vec<Option<String>>, redb::Error> {
            let txn = self.db.begin_read().map_err(to_redb)?;
            let table = match txn.open_table(ROW_DOC) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(vec![None; rows.len()]),
                Err(e) => return Err(e.into()),
            };
            rows.iter()
                .map(|&row| Ok(table.get(row)?.map(|v| v.value().to_owned())))
                .collect()
        };
        run().map_err(meta_err(&ctx))
    }

    /// Applies one commit in one redb write transaction, and commits it durably, but only once
    /// `rows_durable` (the fsync of the rows this batch names) has succeeded: that order is the
    /// commit protocol. With `overlap`, `rows_durable` runs on another thread while the
    /// transaction is staged here, so the redb work hides behind the disk flush.
    pub fn commit(
        &self,
        batch: &CommitBatch<'_>,
        rows_durable: impl FnOnce() -> Result<()> + Send,
        overlap: bool,
    ) -> Result<()> {
        let ctx = format!("committing to {}", self.path.display());
        let stage = || -> std::result::Result<redb::WriteTransaction, redb::Error> {
            let txn = self.db.begin_write().map_err(to_redb)?;
            Self::stage(&txn, batch)?;
            Ok(txn)
        };
        let (durable, staged) = if overlap {
            std::thread::scope(|scope| {
                let flushing = scope.spawn(rows_durable);
                let staged = stage();
                let durable = flushing.join().unwrap_or_else(|_| {
                    Err(Error::Poisoned {
                        reason: "the thread syncing vectors.bin panicked".into(),
                    })
                });
                (durable, staged)
            })
        } else {
            rows_durable()?;
            (Ok(()), stage())
        };
        // A failed fsync drops the staged transaction uncommitted: the batch is not recorded.
        durable?;
        let txn = staged.map_err(meta_err(&ctx))?;
        txn.commit()
            .map_err(|e| meta_err(&ctx)(redb::Error::from(e)))
    }

    /// Writes one batch's records into `txn` (not committed).
    fn stage(
        txn: &redb::WriteTransaction,
        batch: &CommitBatch<'_>,
    ) -> std::result::Result<(), redb::Error> {
        let mut config = txn.open_table(CONFIG)?;
        config.insert(KEY_FORMAT, META_FORMAT)?;
        if let Some((dim, metric)) = batch.config {
            config.insert(KEY_DIMENSION, u64::from(dim))?;
            config.insert(KEY_METRIC, u64::from(metric.code()))?;
        }
        config.insert(KEY_COMMITTED_ROWS, batch.committed_rows)?;
        if let Some(embedder) = batch.embedder {
            config.insert(KEY_EMBEDDER_DIMENSION, u64::from(embedder.dimension))?;
            let mut text = txn.open_table(CONFIG_TEXT)?;
            text.insert(KEY_EMBEDDER, embedder.name.as_str())?;
        }
        let mut id_to_row = txn.open_table(ID_TO_ROW)?;
        let mut row_to_id = txn.open_table(ROW_TO_ID)?;
        let mut row_meta = txn.open_table(ROW_META)?;
        let mut row_doc = txn.open_table(ROW_DOC)?;
        let mut tombstones = txn.open_table(TOMBSTONES)?;
        for (row, id, meta, doc) in &batch.inserts {
            id_to_row.insert(*id, *row)?;
            row_to_id.insert(*row, *id)?;
            if let Some(meta) = meta {
                row_meta.insert(*row, meta.encode().as_slice())?;
            }
            if let Some(doc) = doc {
                row_doc.insert(*row, *doc)?;
            }
        }
        for (row, id) in &batch.deletes {
            // Only unmap the id if it still points at this row (an upsert may have
            // re-pointed it in the same batch).
            let current = id_to_row.get(*id)?.map(|v| v.value());
            if current == Some(*row) {
                id_to_row.remove(*id)?;
            }
            row_meta.remove(*row)?;
            row_doc.remove(*row)?;
            tombstones.insert(*row, ())?;
        }
        Ok(())
    }

    /// Stages (does not commit) the replacement of every table with a compacted copy: `rows`
    /// are (id, metadata, document) of the surviving rows in their new order. The commit marks
    /// the compaction pending until `finish_compaction`. The embedder record (`config_text`) is
    /// kept as it is. Staging is the long part; readers keep reading the old tables meanwhile,
    /// and the caller commits when it is ready to switch its own state with it.
    pub fn stage_compacted(
        &self,
        rows: &[CompactedRow],
        dim: u32,
        metric: Metric,
    ) -> Result<StagedCompaction> {
        let ctx = format!("rewriting {} after compaction", self.path.display());
        let run = || -> std::result::Result<redb::WriteTransaction, redb::Error> {
            let txn = self.db.begin_write().map_err(to_redb)?;
            txn.delete_table(ID_TO_ROW)?;
            txn.delete_table(ROW_TO_ID)?;
            txn.delete_table(ROW_META)?;
            txn.delete_table(ROW_DOC)?;
            txn.delete_table(TOMBSTONES)?;
            {
                let mut config = txn.open_table(CONFIG)?;
                config.insert(KEY_FORMAT, META_FORMAT)?;
                config.insert(KEY_DIMENSION, u64::from(dim))?;
                config.insert(KEY_METRIC, u64::from(metric.code()))?;
                config.insert(KEY_COMMITTED_ROWS, rows.len() as u64)?;
                config.insert(KEY_COMPACTION_PENDING, 1)?;
                let mut id_to_row = txn.open_table(ID_TO_ROW)?;
                let mut row_to_id = txn.open_table(ROW_TO_ID)?;
                let mut row_meta = txn.open_table(ROW_META)?;
                let mut row_doc = txn.open_table(ROW_DOC)?;
                let _ = txn.open_table(TOMBSTONES)?;
                for (row, survivor) in rows.iter().enumerate() {
                    let row = row as u64;
                    id_to_row.insert(survivor.id.as_str(), row)?;
                    row_to_id.insert(row, survivor.id.as_str())?;
                    if let Some(meta) = &survivor.metadata {
                        row_meta.insert(row, meta.encode().as_slice())?;
                    }
                    if let Some(doc) = &survivor.document {
                        row_doc.insert(row, doc.as_str())?;
                    }
                }
            }
            Ok(txn)
        };
        let txn = run().map_err(meta_err(&ctx))?;
        Ok(StagedCompaction { txn, ctx })
    }

    /// Clears the compaction-pending mark once `vectors.bin` is the compacted file.
    pub fn finish_compaction(&self) -> Result<()> {
        let ctx = format!("finishing compaction in {}", self.path.display());
        let run = || -> std::result::Result<(), redb::Error> {
            let txn = self.db.begin_write().map_err(to_redb)?;
            {
                let mut config = txn.open_table(CONFIG)?;
                config.remove(KEY_COMPACTION_PENDING)?;
            }
            txn.commit()?;
            Ok(())
        };
        run().map_err(meta_err(&ctx))
    }

    /// Documents of all committed rows (compaction).
    pub fn all_documents(&self) -> Result<std::collections::HashMap<u64, String>> {
        let ctx = format!("reading documents from {}", self.path.display());
        let run = || -> std::result::Result<std::collections::HashMap<u64, String>, redb::Error> {
            let txn = self.db.begin_read().map_err(to_redb)?;
            let table = match txn.open_table(ROW_DOC) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Default::default()),
                Err(e) => return Err(e.into()),
            };
            let mut out = std::collections::HashMap::new();
            for entry in table.iter()? {
                let (k, v) = entry?;
                out.insert(k.value(), v.value().to_owned());
            }
            Ok(out)
        };
        run().map_err(meta_err(&ctx))
    }

    /// Metadata of many committed rows (compaction).
    pub fn all_metadata(&self) -> Result<std::collections::HashMap<u64, Metadata>> {
        let ctx = format!("reading metadata from {}", self.path.display());
        let run = || -> std::result::Result<Vec<(u64, Vec<u8>)>, redb::Error> {
            let txn = self.db.begin_read().map_err(to_redb)?;
            let table = match txn.open_table(ROW_META) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            };
            let mut out = Vec::new();
            for entry in table.iter()? {
                let (k, v) = entry?;
                out.push((k.value(), v.value().to_vec()));
            }
            Ok(out)
        };
        let raw = run().map_err(meta_err(&ctx))?;
        raw.into_iter()
            .map(|(row, bytes)| {
                Metadata::decode(&bytes).map(|m| (row, m)).ok_or_else(|| {
                    Error::corrupt(&self.path, format!("undecodable metadata for row {row}"))
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &std::path::Path) -> MetaStore {
        let path = dir.join("metadata.db");
        let db = redb::Database::create(&path).expect("create");
        MetaStore::new(db, path)
    }

    /// The commit protocol, with and without the overlapped fsync: a batch is recorded only if
    /// the rows it names were made durable first.
    #[test]
    fn a_batch_is_recorded_only_after_its_rows_are_durable() {
        for overlap in [false, true] {
            let dir = tempfile::tempdir().expect("tempdir");
            let meta = store(dir.path());
            let batch = |rows: u64| CommitBatch {
                inserts: vec![(rows - 1, "x", None, None)],
                deletes: Vec::new(),
                committed_rows: rows,
                config: Some((4, Metric::Dot)),
                embedder: None,
            };
            let synced = std::sync::atomic::AtomicBool::new(false);
            meta.commit(
                &batch(1),
                || {
                    synced.store(true, std::sync::atomic::Ordering::SeqCst);
                    Ok(())
                },
                overlap,
            )
            .expect("commit");
            assert!(synced.load(std::sync::atomic::Ordering::SeqCst));
            assert_eq!(meta.load().expect("load").committed_rows, 1);

            let failed = meta.commit(
                &batch(2),
                || {
                    Err(Error::io(
                        "syncing vectors.bin",
                        std::io::Error::other("disk gone"),
                    ))
                },
                overlap,
            );
            assert!(matches!(failed, Err(Error::Io { .. })), "overlap={overlap}");
            assert_eq!(
                meta.load().expect("load").committed_rows,
                1,
                "overlap={overlap}: a batch was recorded although its rows were not durable"
            );
        }
    }
}
