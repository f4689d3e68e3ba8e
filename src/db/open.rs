//! Opening: check the stored configuration against the caller's, finish or discard an
//! interrupted compaction, cut the torn tail of the rows, and rebuild the in-memory tables from
//! the last commit. A read-only open does none of the repairs: it refuses a database that
//! needs one (see [`OpenOptions::read_only`]).

use super::field_index::FieldIndexes;
use super::vector_index;
use super::{lock_poison_free, Database, IdState, Pending, Snapshot, Tombstones, Writer};
use crate::coalesce::Coalescer;
use crate::distance::Kernels;
use crate::error::{Error, Result};
use crate::ids::{IdTable, RowIds};
use crate::meta::MetaStore;
use crate::quant::codes_file;
use crate::storage::fs::DirLock;
use crate::storage::{names, Location, RowStore};
use crate::types::OpenOptions;
use arc_swap::ArcSwap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};

impl Database {
    pub(super) fn open_in(
        location: Arc<dyn Location>,
        options: OpenOptions,
        lock: Option<DirLock>,
    ) -> Result<Self> {
        Self::open_in_with(location, options, lock, false)
    }

    /// [`Database::open_in`]; with `recover_copy` (and a read-only open), `metadata.db` is
    /// read through a recovered in-memory copy (see `Database::open_partition_reader`).
    pub(super) fn open_in_with(
        location: Arc<dyn Location>,
        options: OpenOptions,
        lock: Option<DirLock>,
        recover_copy: bool,
    ) -> Result<Self> {
        let options = options.validated()?;
        let meta_existed = location.exists(names::METADATA)?;
        let vectors_existed = location.exists(names::VECTORS)?;
        if !meta_existed && vectors_existed {
            return Err(Error::corrupt(
                location.path_of(names::METADATA),
                "missing, but vectors.bin exists: the ids and the commit record are gone",
            ));
        }
        let read_only = options.read_only;
        let meta = if read_only && recover_copy {
            MetaStore::open_recovered_copy(location.as_ref())?
        } else if read_only {
            MetaStore::open_read_only(location.as_ref())?
        } else {
            MetaStore::open(location.as_ref())?
        };
        let mut loaded = meta.load()?;
        if read_only && (loaded.compaction_pending || location.exists(names::VECTORS_COMPACT)?) {
            return Err(needs_writer(
                "a compaction was interrupted (its last writer did not close cleanly)",
            ));
        }

        // Committed rows with no file to hold them (and no compacted file about to become it):
        // damage. Refuse before the repairs below remove anything, so every copy left in the
        // directory (`vectors.bin.old`, `vectors.bin.compact`) is still there to restore from.
        if loaded.committed_rows > 0
            && !location.exists(names::VECTORS)?
            && !(loaded.compaction_pending && location.exists(names::VECTORS_COMPACT)?)
        {
            return Err(Error::corrupt(
                location.path_of(names::VECTORS),
                format!(
                    "missing, but metadata.db committed {} rows (nothing else in the directory \
                     was changed)",
                    loaded.committed_rows
                ),
            ));
        }

        // Finish or discard a compaction that a crash interrupted.
        if loaded.compaction_pending {
            if location.exists(names::VECTORS_COMPACT)? {
                location.rename(names::VECTORS_COMPACT, names::VECTORS)?;
            } else {
                // Renamed already, but perhaps only in the page cache of a process that died
                // before syncing the directory: make the rename durable before the mark that
                // says it happened is cleared, or a power cut would bring the old rows back
                // under the compacted numbering.
                location.sync_dir()?;
            }
            meta.finish_compaction()?;
            loaded.compaction_pending = false;
        } else if location.exists(names::VECTORS_COMPACT)? {
            location.remove(names::VECTORS_COMPACT)?;
        }
        // The rows a finished compaction replaced, if it could not remove them (still mapped,
        // on Windows) or crashed first. Still mapped now (by a closed handle's last reader in
        // this process): the next compaction retries. A reader leaves them to the next writer.
        if !read_only {
            super::compact::remove_replaced_rows(location.as_ref())?;
        }

        // A database records the embedder it was created for; vectors of two models must
        // never share one, since their scores would be meaningless.
        let (embedder, embedder_unrecorded) = match (loaded.embedder.take(), &options.embedder) {
            (Some(stored), Some(asked)) if stored != *asked => {
                return Err(Error::EmbedderMismatch {
                    stored: stored.to_string(),
                    asked: asked.to_string(),
                })
            }
            (Some(stored), _) => (Some(stored), None),
            (None, Some(asked)) if loaded.committed_rows > 0 => {
                return Err(Error::EmbedderMismatch {
                    stored: "vectors added without a recorded embedder".into(),
                    asked: asked.to_string(),
                })
            }
            (None, Some(asked)) => (Some(asked.clone()), Some(asked.clone())),
            (None, None) => (None, None),
        };

        let metric = match (loaded.metric, options.metric) {
            (Some(stored), Some(asked)) if stored != asked => {
                return Err(Error::invalid(format!(
                    "the database was created with metric {stored}, not {asked}: open it without a metric or with {stored}"
                )))
            }
            (Some(stored), _) => stored,
            (None, asked) => asked.unwrap_or_default(),
        };
        // A metric asked for before any dimension is recorded now, or reopening without one
        // would fall back to the default and the first rows would be scored with it.
        let metric_unrecorded = loaded.metric.is_none() && options.metric.is_some();
        if let (Some(stored), Some(asked)) = (loaded.dimension, options.dimension) {
            if stored != asked {
                return Err(Error::DimensionMismatch {
                    expected: stored,
                    got: asked as usize,
                    index: None,
                });
            }
        }

        let mut rows: Option<Box<dyn RowStore>> = None;
        if let Some(dim) = loaded.dimension {
            match location.open_rows(names::VECTORS, loaded.committed_rows)? {
                Some((header, store)) => {
                    if header.layout.dim != dim || header.metric != metric {
                        return Err(Error::corrupt(
                            location.path_of(names::VECTORS),
                            format!(
                                "header says dim {} / {}, metadata.db says dim {dim} / {metric}",
                                header.layout.dim, header.metric
                            ),
                        ));
                    }
                    rows = Some(store);
                }
                None if loaded.committed_rows == 0 => {}
                None => {
                    return Err(Error::corrupt(
                        location.path_of(names::VECTORS),
                        format!(
                            "missing, but metadata.db committed {} rows",
                            loaded.committed_rows
                        ),
                    ))
                }
            }
        } else if vectors_existed {
            // Created by a first batch that never committed: nothing in it exists.
            location.remove(names::VECTORS)?;
        }

        // Rebuild the in-memory tables from the committed state.
        let row_ids = loaded.row_ids;
        let mut tombstones = Tombstones::with_rows(row_ids.len());
        for &row in &loaded.tombstones {
            if row >= loaded.committed_rows {
                return Err(Error::corrupt(
                    location.path_of(names::METADATA),
                    format!(
                        "tombstone for row {row} beyond the {} committed rows",
                        loaded.committed_rows
                    ),
                ));
            }
            tombstones.set(row);
        }
        let live = loaded.committed_rows - tombstones.count();
        let mut id_table = IdTable::with_ids(row_ids.clone(), live as usize);
        for row in 0..loaded.committed_rows {
            if !tombstones.contains(row) {
                if let Some(other) = id_table.insert(row) {
                    return Err(Error::corrupt(
                        location.path_of(names::METADATA),
                        format!(
                            "id {:?} is live in two rows ({other} and {row})",
                            row_ids.get(row as usize).unwrap_or_default()
                        ),
                    ));
                }
            }
        }

        // The quantized index's codes (see `vector_index`): a temporary file is a create that
        // never finished, and a codes file without a record belongs to no index.
        location.remove(codes_file::CODES_TEMP)?;
        let mut index_pending = None;
        let view = rows.as_ref().map(|r| r.view());
        let (codes, codes_file, graph) = match meta.vector_index()? {
            Some(record) => {
                let (table, file) = match record.codebook.clone() {
                    Some(codebook) => {
                        let (table, file) = vector_index::open_codes(
                            location.as_ref(),
                            codebook,
                            record.generation,
                            loaded.dimension,
                            metric,
                            view.as_deref(),
                            loaded.committed_rows,
                        )?;
                        (Some(table), Some(file))
                    }
                    None => {
                        location.remove(codes_file::CODES)?;
                        (None, None)
                    }
                };
                // The graph as committed; rebuilt only when stale or damaged (see
                // `vector_index::open_graph`).
                let graph = match record.graph {
                    Some(_) => {
                        let space = crate::hnsw::graph::Space {
                            metric,
                            kernels: Kernels::best(),
                        };
                        let (graph, _rebuilt) = vector_index::open_graph(
                            &meta,
                            record,
                            view.as_deref(),
                            loaded.committed_rows,
                            space,
                        )?;
                        Some(Arc::new(graph))
                    }
                    None => None,
                };
                (table, file, graph)
            }
            None => {
                location.remove(codes_file::CODES)?;
                index_pending = meta.pending_vector_index()?;
                (None, None, None)
            }
        };
        drop(view);

        // The field indexes as of the last commit (after a finished compaction, its rewrite).
        let field_indexes =
            FieldIndexes::from_loaded(meta.load_field_indexes(loaded.committed_rows)?);
        // Everything is loaded: the writer's page cache starts empty rather than full of it.
        let meta = meta.ready_for_writes(location.as_ref())?;

        let writer = Writer {
            dim: loaded.dimension,
            rows,
            committed_rows: loaded.committed_rows,
            // Nothing is pending at open: a stored configuration is committed, and without one
            // there is nothing to record until the first rows arrive.
            config_committed: true,
            row_ids,
            tombstones,
            live,
            poisoned: None,
            read_only,
            embedder_unrecorded,
            metric_unrecorded,
            meta_version: 0,
            field_indexes: Arc::new(field_indexes),
            codes,
            codes_file,
            index_pending,
            graph,
            graph_dirty: Default::default(),
            codes_trained_on: live,
        };
        let coalesce = options.coalesce_searches;
        let db = Database {
            location,
            meta,
            metric,
            embedder,
            kernels: Kernels::best(),
            options,
            published: ArcSwap::from_pointee(Snapshot {
                rows: None,
                row_ids: RowIds::new(),
                tombstones: Tombstones::default(),
                live: 0,
                dim: None,
                meta_version: 0,
                field_indexes: Default::default(),
                codes: None,
                index_pending: None,
                graph: None,
            }),
            codes_on_disk: true,
            coalescer: Coalescer::default(),
            coalesce: AtomicBool::new(coalesce),
            ids: RwLock::new(IdState {
                ids: id_table,
                pending: Pending::default(),
            }),
            writer: Mutex::new(writer),
            filter_cache: Default::default(),
            _lock: lock,
        };
        {
            let mut w = lock_poison_free(&db.writer);
            if w.read_only {
                if w.embedder_unrecorded.is_some()
                    || w.metric_unrecorded
                    || (w.dim.is_none() && db.options.dimension.is_some())
                {
                    return Err(Error::ReadOnly {
                        reason: "the database has not recorded its dimension, metric or embedder \
                                 yet, and a read-only open cannot record the ones given: open it \
                                 without them, or once for writing"
                            .into(),
                    });
                }
                if w.index_pending.is_some() && w.committed_rows > 0 {
                    return Err(needs_writer("a vector index is waiting to be built"));
                }
            }
            if w.dim.is_none() {
                if let Some(dim) = db.options.dimension {
                    // A dimension given up front is fixed now, durably.
                    db.create_rows(&mut w, dim)?;
                    db.commit_locked(&mut w)?;
                }
            }
            if w.embedder_unrecorded.is_some() || w.metric_unrecorded {
                db.commit_locked(&mut w)?;
            }
            // An index waiting for rows whose first commit happened before a crash let it
            // be built.
            db.build_pending_index(&mut w)?;
            let snapshot = Self::snapshot_of(&w);
            db.published.store(Arc::new(snapshot));
        }
        Ok(db)
    }
}

/// The refusal of a read-only open of a database that needs a writer's repair first.
fn needs_writer(what: &str) -> Error {
    Error::ReadOnly {
        reason: format!(
            "{what}, and a read-only open changes nothing: open the database once for writing \
             (and close it), then open the readers"
        ),
    }
}
