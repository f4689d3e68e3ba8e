//! The metadata store: ids, metadata, tombstones, the configuration and the committed row
//! count, in redb. A redb commit is the database's commit point: rows past the committed count
//! in `vectors.bin` do not exist.

use crate::error::{Error, Result};
use crate::types::{Metadata, Metric};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;

/// id -> row.
const ID_TO_ROW: TableDefinition<&str, u64> = TableDefinition::new("id_to_row");
/// row -> id (kept for tombstoned rows too, until compaction).
const ROW_TO_ID: TableDefinition<u64, &str> = TableDefinition::new("row_to_id");
/// row -> tagged metadata bytes (see `Metadata::encode`).
const ROW_META: TableDefinition<u64, &[u8]> = TableDefinition::new("row_meta");
/// Deleted rows.
const TOMBSTONES: TableDefinition<u64, ()> = TableDefinition::new("tombstones");
/// Configuration and counters, by name.
const CONFIG: TableDefinition<&str, u64> = TableDefinition::new("config");

const KEY_FORMAT: &str = "format_version";
const KEY_DIMENSION: &str = "dimension";
const KEY_METRIC: &str = "metric";
const KEY_COMMITTED_ROWS: &str = "committed_rows";
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
}

/// One commit's worth of changes.
#[derive(Debug, Default)]
pub struct CommitBatch<'a> {
    /// New rows: (row, id, metadata).
    pub inserts: Vec<(u64, &'a str, Option<&'a Metadata>)>,
    /// Rows to tombstone, with the id they held.
    pub deletes: Vec<(u64, &'a str)>,
    /// The new committed row count.
    pub committed_rows: u64,
    /// Dimension and metric to record (set with the first rows).
    pub config: Option<(u32, Metric)>,
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
        let mut id_to_row = txn.open_table(ID_TO_ROW)?;
        let mut row_to_id = txn.open_table(ROW_TO_ID)?;
        let mut row_meta = txn.open_table(ROW_META)?;
        let mut tombstones = txn.open_table(TOMBSTONES)?;
        for (row, id, meta) in &batch.inserts {
            id_to_row.insert(*id, *row)?;
            row_to_id.insert(*row, *id)?;
            if let Some(meta) = meta {
                row_meta.insert(*row, meta.encode().as_slice())?;
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
            tombstones.insert(*row, ())?;
        }
        Ok(())
    }

    /// Replaces every table with a compacted copy: `rows` are (id, metadata) of the surviving
    /// rows in their new order. Marks the compaction pending until `finish_compaction`.
    pub fn rewrite_compacted(
        &self,
        rows: &[(String, Option<Metadata>)],
        dim: u32,
        metric: Metric,
    ) -> Result<()> {
        let ctx = format!("rewriting {} after compaction", self.path.display());
        let run = || -> std::result::Result<(), redb::Error> {
            let txn = self.db.begin_write().map_err(to_redb)?;
            txn.delete_table(ID_TO_ROW)?;
            txn.delete_table(ROW_TO_ID)?;
            txn.delete_table(ROW_META)?;
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
                let _ = txn.open_table(TOMBSTONES)?;
                for (row, (id, meta)) in rows.iter().enumerate() {
                    let row = row as u64;
                    id_to_row.insert(id.as_str(), row)?;
                    row_to_id.insert(row, id.as_str())?;
                    if let Some(meta) = meta {
                        row_meta.insert(row, meta.encode().as_slice())?;
                    }
                }
            }
            txn.commit()?;
            Ok(())
        };
        run().map_err(meta_err(&ctx))
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
                inserts: vec![(rows - 1, "x", None)],
                deletes: Vec::new(),
                committed_rows: rows,
                config: Some((4, Metric::Dot)),
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
