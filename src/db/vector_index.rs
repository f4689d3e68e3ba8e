//! The quantized vector index's life cycle. Codes are derived data (a pure function of the
//! codebook and the f32 row), kept in `index.codes` (`crate::quant::codes_file`) and in memory
//! ([`CodeTable`], shared by snapshots like the rows):
//!
//! - create: commit pending writes, train a codebook on the live rows (an even sample of at
//!   most [`TRAIN_ROWS`]), encode every row (deleted ones too, so row numbers stay the
//!   index), write the codes file durably under a new generation, then one redb transaction
//!   records the index (codebook and generation). A database with a dimension but no rows
//!   gets a neutral codebook; `compact` retrains it. One with no dimension yet records the
//!   index as pending, and the first commit of rows builds it (trained on those rows); a
//!   crash between that commit and the build leaves the pending record, and open builds it.
//! - keep in step: appended rows are encoded at once (`write::append_rows`); at commit their
//!   codes are written and fsynced with the rows, before the redb commit that names them.
//!   Deletes need nothing: the scan skips tombstoned rows.
//! - open: the file is checked against the record (quantization, metric, dimension, codebook
//!   fingerprint, generation) and cut to the committed rows; rows it lacks are re-encoded
//!   from `vectors.bin`. A missing, foreign or damaged file is rebuilt on open from
//!   `vectors.bin`. A codes file without a record (a crash before the create's commit, or
//!   after a drop's) is removed.
//! - compact: the compaction's redb transaction gives the record a generation no file
//!   carries, so codes of the old numbering are never used again; after the switch the
//!   codebook is retrained on the surviving rows and the codes rewritten under a new
//!   generation. A crash in between leaves a record whose codes open rebuilds.
//! - drop: one redb transaction removes the record, then the file is removed.
//!
//! An in-memory database keeps its codes in memory only (`Database::codes_on_disk`).
//!
//! An HNSW index adds a graph (`crate::hnsw`), kept only in redb: every node's links in table
//! `hnsw_links`, its parameters, seed, node count and entry in the index record. Create builds
//! it over every row and writes it in one transaction; appended rows are inserted at once and
//! the links they changed commit in the rows' own transaction; open loads it as committed
//! ([`open_graph`] rebuilds only a stale or damaged one); compaction commits the graph of the
//! new numbering with the rows' switch; drop removes it in one transaction. See
//! docs/design.md, "The HNSW graph".

use super::{lock_poison_free, Database, Writer};
use crate::error::{Error, Result};
use crate::hnsw::graph::{Graph, Space};
use crate::meta::{GraphRecord, IndexRecord, MetaStore};
use crate::quant::codes::CodeTable;
use crate::quant::codes_file::{self, CodesFile, Opened};
use crate::quant::{Codebook, IndexInfo, IndexKind, IndexSpec, Quantization};
use crate::storage::{for_each_rows, Location, RowView};
use crate::types::Metric;
use std::collections::BTreeSet;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

/// Most rows a codebook is trained on; larger databases are sampled evenly.
pub const TRAIN_ROWS: u64 = 100_000;

/// `spec` with its defaults filled in (an HNSW index's parameters), or an error saying what
/// to ask for instead.
fn checked_spec(spec: &IndexSpec) -> Result<IndexSpec> {
    match (spec.kind, spec.quantization) {
        (IndexKind::Flat, Some(_)) if spec.hnsw.is_some() => Err(Error::invalid(
            "graph parameters (m, ef_construction) given for a flat index: create kind \"hnsw\", or leave them out",
        )),
        (IndexKind::Flat, Some(_)) => Ok(*spec),
        (IndexKind::Flat, None) => Err(Error::invalid(
            "a flat index without quantization is the exact scan every search already runs: give quantization \"int8\" or \"binary\"",
        )),
        (IndexKind::Hnsw, Some(Quantization::Binary)) => Err(Error::invalid(
            "an HNSW graph traverses on int8 codes or on the f32 rows: give quantization \"int8\" or none",
        )),
        (IndexKind::Hnsw, _) => {
            let params = spec.hnsw.unwrap_or_default();
            params.validate()?;
            Ok(IndexSpec {
                hnsw: Some(params),
                ..*spec
            })
        }
    }
}

/// The index the writer keeps now, as the spec that would create it.
pub(super) fn current_spec(w: &Writer) -> Option<IndexSpec> {
    let quantization = w.codes.as_ref().map(|c| c.codebook().quantization());
    match (&w.graph, quantization) {
        (Some(graph), q) => Some(IndexSpec::hnsw(q).with_hnsw(graph.params())),
        (None, Some(q)) => Some(IndexSpec::flat(q)),
        (None, None) => None,
    }
}

impl Database {
    pub(super) fn create_vector_index(&self, spec: &IndexSpec) -> Result<IndexInfo> {
        let spec = checked_spec(spec)?;
        let mut w = lock_poison_free(&self.writer);
        w.check()?;
        if current_spec(&w) == Some(spec) {
            return Ok(info_of_writer(&w));
        }
        if w.dim.is_none() {
            // Nothing to train on or size codes for yet: the index is recorded as pending and
            // built after the first rows are committed.
            if w.index_pending != Some(spec) {
                self.meta.set_pending_vector_index(&spec)?;
                w.index_pending = Some(spec);
                self.publish(&mut w);
            }
            return Ok(info_of_writer(&w));
        }
        self.commit_locked(&mut w)?;
        // That commit may have built an index that was waiting for rows.
        if current_spec(&w) != Some(spec) {
            self.rebuild_vector_index(&mut w, spec, false)?;
        }
        Ok(info_of_writer(&w))
    }

    /// Builds the index `spec` over every row and records it in one redb transaction,
    /// replacing any index: with a quantization, trains a codebook on the live rows and writes
    /// every row's code under a new generation; for an HNSW index, builds the graph over every
    /// row (deleted ones too: they route) and writes every node's links, unless `keep_graph`
    /// and the writer's graph has `spec`'s parameters (a compaction built it already). Every
    /// row must be committed. A failure poisons the handle: the codes file may already be
    /// replaced (open repairs it).
    pub(super) fn rebuild_vector_index(
        &self,
        w: &mut Writer,
        spec: IndexSpec,
        keep_graph: bool,
    ) -> Result<()> {
        let space = self.space();
        // Closed before a new codes file is renamed over it: Windows refuses to replace an
        // open file without POSIX rename semantics (Wine 8 has none). Whatever happens below
        // replaces it (a failure poisons the handle).
        let had_codes_file = w.codes_file.take().is_some();
        let result = (|| -> Result<Built> {
            let dim = w
                .dim
                .ok_or_else(|| Error::invalid("no dimension: nothing to index"))?;
            let view = w.rows.as_ref().map(|r| r.view());
            let rows = view.as_ref().map_or(0, |v| v.rows());
            let table = match spec.quantization {
                Some(quantization) => {
                    let tombstones = &w.tombstones;
                    let codebook = train(
                        quantization,
                        self.metric,
                        dim as usize,
                        view.as_deref(),
                        rows,
                        w.live,
                        |row| tombstones.contains(row),
                    )?;
                    let mut table = CodeTable::new(Arc::new(codebook));
                    if let Some(view) = view.as_deref() {
                        encode_rows(&mut table, view, rows)?;
                    }
                    Some(table)
                }
                None => None,
            };
            let generation = self.meta.next_index_generation()?;
            let file = match (&table, self.codes_on_disk) {
                (Some(table), true) => Some(CodesFile::create(
                    self.location.as_ref(),
                    table,
                    generation,
                )?),
                _ => None,
            };
            let (graph, built) = match (spec.kind, spec.hnsw) {
                (IndexKind::Hnsw, Some(params)) => match &w.graph {
                    Some(graph) if keep_graph && graph.params() == params => {
                        (Some(Arc::clone(graph)), false)
                    }
                    _ => {
                        let graph = build_graph(params, new_seed(), view.as_deref(), rows, space)?;
                        (Some(Arc::new(graph)), true)
                    }
                },
                _ => (None, false),
            };
            let record = IndexRecord {
                codebook: table.as_ref().map(|t| t.codebook().as_ref().clone()),
                generation,
                graph: graph.as_deref().map(graph_record),
            };
            self.meta
                .set_vector_index(Some(&record), graph.as_deref().filter(|_| built))?;
            Ok((table, file, graph))
        })();
        match result {
            Ok((table, file, graph)) => {
                let stale_codes = table.is_none() && had_codes_file;
                w.codes_trained_on = w.live.min(TRAIN_ROWS);
                w.codes = table;
                w.codes_file = file;
                w.graph = graph;
                w.graph_dirty.clear();
                self.publish(w);
                if stale_codes {
                    // The record names no codes now: a file left by a failure here is removed
                    // on the next open.
                    self.location.remove(codes_file::CODES)?;
                }
                Ok(())
            }
            Err(e) => {
                w.poisoned = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// Builds the index recorded as pending once rows are committed (see
    /// [`Writer::index_pending`]); nothing to do otherwise.
    pub(super) fn build_pending_index(&self, w: &mut Writer) -> Result<()> {
        match w.index_pending {
            Some(spec) if w.committed_rows > 0 => {
                w.index_pending = None;
                self.rebuild_vector_index(w, spec, false)
            }
            _ => Ok(()),
        }
    }

    /// Rebuilds the codes of the index the writer keeps (after a compaction renumbered the
    /// rows, or to retrain the codebook), keeping its graph; nothing without codes.
    pub(super) fn retrain_codes(&self, w: &mut Writer, spec: Option<IndexSpec>) -> Result<()> {
        match spec {
            Some(spec) if spec.quantization.is_some() => self.rebuild_vector_index(w, spec, true),
            _ => Ok(()),
        }
    }

    /// Retrains the codes once the live rows are more than twice those the codebook was
    /// trained on (and it saw fewer than [`TRAIN_ROWS`]): an index created on an empty or
    /// small database would otherwise score codes whose range fits its first rows only (int8
    /// clips the rest), so the code scan or the traversal misses neighbours that the exact
    /// rescoring never sees (a flat int8 index created before 5,000 rows of l2 data found
    /// 0.31 of the true top 10). Doubling makes the re-encoding O(rows) over the database's
    /// life. A graph is kept (its links are of the f32 rows).
    pub(super) fn retrain_outgrown_codes(&self, w: &mut Writer) -> Result<()> {
        let outgrown = w.codes_trained_on < TRAIN_ROWS && w.live > 2 * w.codes_trained_on;
        match current_spec(w) {
            Some(spec) if outgrown && spec.quantization.is_some() => {
                self.rebuild_vector_index(w, spec, true)
            }
            _ => Ok(()),
        }
    }

    pub(super) fn drop_vector_index(&self) -> Result<bool> {
        let mut w = lock_poison_free(&self.writer);
        w.check()?;
        if w.codes.is_none() && w.graph.is_none() && w.index_pending.is_none() {
            return Ok(false);
        }
        self.meta.set_vector_index(None, None)?;
        w.codes = None;
        w.codes_file = None;
        w.graph = None;
        w.graph_dirty.clear();
        w.index_pending = None;
        self.publish(&mut w);
        // The record is gone: a file left by a failure here is removed on the next open.
        self.location.remove(codes_file::CODES)?;
        Ok(true)
    }

    pub(super) fn vector_index_info(&self) -> IndexInfo {
        let snap = self.published.load();
        info_of(
            snap.codes.as_ref(),
            snap.graph.as_ref().map(|g| (&*g.graph, g.nodes)),
            snap.index_pending,
        )
    }

    /// How the graph compares rows: this database's metric and kernels.
    pub(super) fn space(&self) -> Space {
        Space {
            metric: self.metric,
            kernels: self.kernels,
        }
    }

    /// Publishes the writer's state to readers (under the id lock, as every publish is).
    fn publish(&self, w: &mut Writer) {
        let _state = self.ids_write();
        self.published.store(Arc::new(Self::snapshot_of(w)));
    }

    /// The current codebook's bytes, the codes of every row (deleted ones too) and every
    /// row's id, for tests that recompute the codes independently.
    #[doc(hidden)]
    pub fn index_codes_for_test(&self) -> Option<(Vec<u8>, Vec<u8>, Vec<String>)> {
        let snap = self.published.load();
        let codes = snap.codes.as_ref()?;
        let mut all = Vec::new();
        for (_, bytes) in codes.runs(0, codes.rows()) {
            all.extend_from_slice(&bytes);
        }
        let ids = (0..snap.row_ids.len())
            .filter_map(|row| snap.row_ids.get(row).map(|id| id.to_string()))
            .collect();
        Some((codes.codebook().to_bytes(), all, ids))
    }

    /// The published graph: its node count, entry, and every node's links as
    /// [`Graph::links_bytes`] encodes them, for tests that check a reopened graph is exactly
    /// the committed one.
    #[doc(hidden)]
    pub fn hnsw_links_for_test(&self) -> Option<(u64, Option<crate::hnsw::Entry>, Vec<Vec<u8>>)> {
        let snap = self.published.load();
        let view = snap.graph.as_ref()?;
        let links = (0..view.nodes)
            .filter_map(|node| u32::try_from(node).ok())
            .map(|node| view.graph.links_bytes(node))
            .collect();
        Some((view.nodes, view.entry, links))
    }
}

/// A rebuilt index before it is published: its codes (and their file) and its graph.
type Built = (Option<CodeTable>, Option<CodesFile>, Option<Arc<Graph>>);

/// What `index_info` reports for the writer's index (or the one pending).
fn info_of_writer(w: &Writer) -> IndexInfo {
    info_of(
        w.codes.as_ref(),
        w.graph.as_deref().map(|g| (g, g.len())),
        w.index_pending,
    )
}

/// What `index_info` reports for `codes` and `graph` (with the nodes the caller's view
/// covers), or for an index `pending` (no rows yet).
fn info_of(
    codes: Option<&CodeTable>,
    graph: Option<(&Graph, u64)>,
    pending: Option<IndexSpec>,
) -> IndexInfo {
    if codes.is_none() && graph.is_none() {
        if let Some(spec) = pending {
            return IndexInfo {
                kind: spec.kind,
                quantization: spec.quantization,
                rows: 0,
                bytes: 0,
                hnsw: spec.hnsw,
            };
        }
    }
    let codes_bytes = codes.map_or(0, |c| c.bytes());
    match graph {
        Some((graph, nodes)) => IndexInfo {
            kind: IndexKind::Hnsw,
            quantization: codes.map(|c| c.codebook().quantization()),
            rows: nodes,
            bytes: graph.bytes() + codes_bytes,
            hnsw: Some(graph.params()),
        },
        None => IndexInfo {
            kind: IndexKind::Flat,
            quantization: codes.map(|c| c.codebook().quantization()),
            rows: codes.map_or(0, |c| c.rows()),
            bytes: codes_bytes,
            hnsw: None,
        },
    }
}

/// A seed for a new graph's layers, drawn once per build and recorded with it.
fn new_seed() -> u64 {
    // `RandomState` is seeded from the platform's randomness (per process, then varied).
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0x5eed);
    hasher.finish()
}

/// A graph over rows `0..rows` of `view` (none without a view).
fn build_graph(
    params: crate::quant::HnswParams,
    seed: u64,
    view: Option<&dyn RowView>,
    rows: u64,
    space: Space,
) -> Result<Graph> {
    let graph = Graph::new(params, seed);
    if let Some(view) = view {
        // Every node is written by the caller: the dirty set is not needed.
        let mut dirty = BTreeSet::new();
        graph.insert(view, space, rows, &mut dirty)?;
    }
    Ok(graph)
}

/// The record of `graph` as it is now.
pub(super) fn graph_record(graph: &Graph) -> GraphRecord {
    GraphRecord {
        params: graph.params(),
        seed: graph.seed(),
        nodes: graph.len(),
        entry: graph.entry(),
    }
}

/// The graph at open: loaded from `hnsw_links` as committed when the record's node count is
/// the committed rows and every node's links decode; otherwise (a graph made stale, links
/// missing or damaged) rebuilt from the rows with the recorded parameters and seed, and
/// written back with `record` in one transaction. Returns the graph and whether it was
/// rebuilt.
pub(super) fn open_graph(
    meta: &MetaStore,
    mut record: IndexRecord,
    view: Option<&dyn RowView>,
    committed_rows: u64,
    space: Space,
) -> Result<(Graph, bool)> {
    let Some(recorded) = record.graph else {
        return Err(Error::invalid("the index record has no graph"));
    };
    if recorded.nodes == committed_rows {
        let loaded = meta.with_hnsw_links(|links| {
            let mut expected = 0u64;
            let mut short = false;
            // Nodes must come exactly in order 0..nodes: a gap or an extra is damage.
            let checked = links.map(|item| {
                let (node, bytes) = item?;
                if u64::from(node) != expected || expected >= recorded.nodes {
                    short = true;
                    return Err(Error::invalid(format!(
                        "hnsw_links: node {node} where node {expected} was expected"
                    )));
                }
                expected += 1;
                Ok((node, bytes))
            });
            let graph = Graph::from_links(
                recorded.params,
                recorded.seed,
                recorded.nodes,
                recorded.entry,
                checked,
            )?;
            if short || expected != recorded.nodes {
                return Err(Error::invalid(format!(
                    "hnsw_links holds {expected} nodes, the record {}",
                    recorded.nodes
                )));
            }
            Ok(graph)
        });
        match loaded {
            Ok(graph) => return Ok((graph, false)),
            // The store cannot be read: not the graph's damage, so not repaired here.
            Err(e @ Error::Io { .. }) => return Err(e),
            Err(_) => {}
        }
    }
    let graph = build_graph(recorded.params, recorded.seed, view, committed_rows, space)?;
    record.graph = Some(graph_record(&graph));
    meta.set_vector_index(Some(&record), Some(&graph))?;
    Ok((graph, true))
}

/// Bytes of rows copied for training when the view is not resident (read from the file on
/// demand): the sample is then smaller than [`TRAIN_ROWS`] for wide rows, so training never
/// holds more than this of them (a resident view's sample is borrowed, not copied).
pub const TRAIN_COPY_BYTES: usize = 64 << 20;

/// Bytes of rows read at a time when encoding from a view that is not resident.
const ENCODE_READ_BYTES: usize = 4 << 20;

/// Trains on the live rows of `view` (`rows` of them, `live` not deleted), an even sample
/// of at most [`TRAIN_ROWS`] (fewer for a view that is not resident, see
/// [`TRAIN_COPY_BYTES`]).
fn train(
    quantization: Quantization,
    metric: Metric,
    dim: usize,
    view: Option<&dyn RowView>,
    rows: u64,
    live: u64,
    is_dead: impl Fn(u64) -> bool,
) -> Result<Codebook> {
    let Some(view) = view else {
        return Ok(Codebook::train(
            quantization,
            metric,
            dim,
            std::iter::empty(),
        ));
    };
    let budget = if view.resident() {
        TRAIN_ROWS
    } else {
        (TRAIN_COPY_BYTES / view.layout().stride_bytes()).clamp(1, TRAIN_ROWS as usize) as u64
    };
    Codebook::train_on_sample(quantization, metric, view, rows, live, budget, is_dead)
}

/// Appends to `table` the codes of its missing rows `table.rows()..to` of `view` (resident or
/// read from the file in bounded runs).
fn encode_rows(table: &mut CodeTable, view: &dyn RowView, to: u64) -> Result<()> {
    let layout = view.layout();
    for_each_rows(view, table.rows(), to, ENCODE_READ_BYTES, |_, rows| {
        table.push_rows(layout, rows);
        Ok(())
    })
}

/// The index's codes at open, from `record` and the committed rows of `view`: read from
/// `index.codes` when it matches, with the rows it lacks re-encoded (and written, durably),
/// or rebuilt entirely when it is missing, foreign or damaged.
pub(super) fn open_codes(
    location: &dyn Location,
    codebook: Codebook,
    generation: u64,
    dim: Option<u32>,
    metric: Metric,
    view: Option<&dyn RowView>,
    committed_rows: u64,
) -> Result<(CodeTable, CodesFile)> {
    if dim != Some(codebook.dim() as u32) || codebook.metric() != metric {
        return Err(Error::corrupt(
            location.path_of(crate::storage::names::METADATA),
            format!(
                "the vector index's codebook is for {} dimensions / {}, the database holds {dim:?} / {metric}: drop_index() and create it again",
                codebook.dim(),
                codebook.metric()
            ),
        ));
    }
    let mut table = CodeTable::new(Arc::new(codebook));
    let opened = CodesFile::open(location, table.codebook(), generation, committed_rows)?;
    let encode = |table: &mut CodeTable| match view {
        Some(view) => encode_rows(table, view, committed_rows),
        None if committed_rows == 0 => Ok(()),
        None => Err(Error::invalid("no rows to index")),
    };
    match opened {
        Opened::Usable(mut file) => {
            file.read_into(&mut table)?;
            if file.rows() < committed_rows {
                encode(&mut table)?;
                file.append(&table, committed_rows)?;
                file.sync()?;
            }
            Ok((table, file))
        }
        Opened::Missing | Opened::Unusable(_) => {
            encode(&mut table)?;
            let file = CodesFile::create(location, &table, generation)?;
            Ok((table, file))
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::quant::{HnswParams, IndexKind, IndexSpec, Quantization};
    use crate::store::{Delete, Store, Write};
    use crate::types::OpenOptions;
    use crate::Database;

    const DIM: usize = 8;

    /// `n` pseudo-random vectors (an LCG: the test needs variety, not quality).
    fn vectors(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (0..n * DIM)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    fn ids(from: usize, to: usize) -> Vec<String> {
        (from..to).map(|i| format!("v{i}")).collect()
    }

    fn add(db: &Database, from: usize, to: usize) {
        let ids = ids(from, to);
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let v = vectors(to - from, from as u64);
        db.write(&Write::add(&ids, &v)).expect("add");
    }

    /// A reopened database loads the graph exactly as committed (node count, entry, every
    /// node's links), after a create over existing rows, after rows added to the graph, and
    /// after a compaction renumbered it; `index_info` describes it.
    #[test]
    fn a_reopened_database_has_the_committed_graph() {
        let dir = tempfile::tempdir().expect("tempdir");
        let params = HnswParams {
            m: 6,
            ef_construction: 40,
        };
        let spec = IndexSpec::hnsw(Some(Quantization::Int8)).with_hnsw(params);
        let reopen_same = |rows: u64| {
            let db = Database::open(dir.path(), OpenOptions::default()).expect("open");
            let (nodes, entry, links) = db.hnsw_links_for_test().expect("a graph");
            assert_eq!(nodes, rows);
            assert_eq!(links.len() as u64, rows);
            let info = db.index_info().expect("info");
            assert_eq!(info.kind, IndexKind::Hnsw);
            assert_eq!(info.quantization, Some(Quantization::Int8));
            assert_eq!(info.hnsw, Some(params));
            assert_eq!(info.rows, rows);
            (db, (nodes, entry, links))
        };

        let committed = {
            let db = Database::open(dir.path(), OpenOptions::default()).expect("open");
            add(&db, 0, 150);
            db.create_index(&spec).expect("create");
            add(&db, 150, 400);
            db.persist().expect("persist");
            let committed = db.hnsw_links_for_test().expect("a graph");
            db.close().expect("close");
            committed
        };
        let (db, reopened) = reopen_same(400);
        assert_eq!(
            reopened, committed,
            "the reopened graph differs from the committed one"
        );
        // The same spec again is the index there is: nothing rebuilt.
        db.create_index(&spec).expect("same spec");
        assert_eq!(db.hnsw_links_for_test(), Some(committed));

        let dead = ids(0, 120);
        let dead: Vec<&str> = dead.iter().map(String::as_str).collect();
        db.remove(&Delete::ids(&dead)).expect("delete");
        db.compact().expect("compact");
        let compacted = db.hnsw_links_for_test().expect("a graph");
        assert_eq!(compacted.0, 280);
        db.close().expect("close");
        let (db, reopened) = reopen_same(280);
        assert_eq!(reopened, compacted);

        assert!(db.drop_index().expect("drop"));
        assert_eq!(db.hnsw_links_for_test(), None);
        db.close().expect("close");
        let db = Database::open(dir.path(), OpenOptions::default()).expect("open");
        assert_eq!(db.hnsw_links_for_test(), None);
        assert_eq!(db.index_info().expect("info").kind, IndexKind::Flat);
    }

    /// An HNSW index asked for before the first rows is pending, survives a reopen as such,
    /// and is built over the first committed rows.
    #[test]
    fn a_pending_graph_is_built_at_the_first_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = IndexSpec::hnsw(None);
        {
            let db = Database::open(dir.path(), OpenOptions::default()).expect("open");
            let info = db.create_index(&spec).expect("pending");
            assert_eq!((info.kind, info.rows), (IndexKind::Hnsw, 0));
            db.close().expect("close");
        }
        let db = Database::open(dir.path(), OpenOptions::default()).expect("open");
        assert_eq!(db.index_info().expect("info").kind, IndexKind::Hnsw);
        add(&db, 0, 50);
        db.persist().expect("persist");
        let info = db.index_info().expect("info");
        assert_eq!(
            (info.kind, info.quantization, info.rows),
            (IndexKind::Hnsw, None, 50)
        );
        assert_eq!(db.hnsw_links_for_test().map(|g| g.0), Some(50));
    }

    /// Binary codes cannot be traversed: the error names what can.
    #[test]
    fn a_binary_graph_is_refused() {
        let db = Database::in_memory(OpenOptions::default()).expect("db");
        let e = db
            .create_index(&IndexSpec::hnsw(Some(Quantization::Binary)))
            .expect_err("binary");
        assert!(e.to_string().contains("int8"), "{e}");
    }
}
