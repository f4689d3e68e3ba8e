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

use super::{lock_poison_free, Database, Writer};
use crate::error::{Error, Result};
use crate::meta::IndexRecord;
use crate::quant::codes::CodeTable;
use crate::quant::codes_file::{self, CodesFile, Opened};
use crate::quant::{Codebook, IndexInfo, IndexKind, IndexSpec, Quantization};
use crate::storage::{for_each_rows, Location, RowView};
use crate::types::Metric;
use std::sync::Arc;

/// Most rows a codebook is trained on; larger databases are sampled evenly.
pub const TRAIN_ROWS: u64 = 100_000;

impl Database {
    pub(super) fn create_vector_index(&self, spec: &IndexSpec) -> Result<IndexInfo> {
        let quantization = match (spec.kind, spec.quantization) {
            (IndexKind::Flat, Some(q)) => q,
            (IndexKind::Hnsw, _) => {
                return Err(Error::invalid("hnsw: not built yet (issue 17 in progress)"))
            }
            (IndexKind::Flat, None) => {
                return Err(Error::invalid(
                    "a flat index without quantization is the exact scan every search already runs: give quantization \"int8\" or \"binary\"",
                ))
            }
        };
        let mut w = lock_poison_free(&self.writer);
        w.check()?;
        if w.codes
            .as_ref()
            .is_some_and(|c| c.codebook().quantization() == quantization)
        {
            return Ok(info_of(w.codes.as_ref(), None));
        }
        if w.dim.is_none() {
            // Nothing to train on or size codes for yet: the index is recorded as pending and
            // built after the first rows are committed.
            if w.index_pending != Some(quantization) {
                self.meta.set_pending_vector_index(quantization)?;
                w.index_pending = Some(quantization);
                self.publish(&mut w);
            }
            return Ok(info_of(None, w.index_pending));
        }
        self.commit_locked(&mut w)?;
        // That commit may have built an index that was waiting for rows.
        if w.codes
            .as_ref()
            .is_none_or(|c| c.codebook().quantization() != quantization)
        {
            self.rebuild_vector_index(&mut w, quantization)?;
        }
        Ok(info_of(w.codes.as_ref(), None))
    }

    /// Trains a `quantization` codebook on the live rows, writes every row's code under a new
    /// generation, records it, and publishes it. Every row must be committed. A failure
    /// poisons the handle: the codes file may already be replaced (open repairs it).
    pub(super) fn rebuild_vector_index(
        &self,
        w: &mut Writer,
        quantization: Quantization,
    ) -> Result<()> {
        let result = (|| -> Result<(CodeTable, Option<CodesFile>)> {
            let dim = w
                .dim
                .ok_or_else(|| Error::invalid("no dimension: nothing to index"))?;
            let view = w.rows.as_ref().map(|r| r.view());
            let rows = view.as_ref().map_or(0, |v| v.rows());
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
            let generation = self.meta.next_index_generation()?;
            let file = match self.codes_on_disk {
                true => Some(CodesFile::create(
                    self.location.as_ref(),
                    &table,
                    generation,
                )?),
                false => None,
            };
            self.meta.set_vector_index(Some(&IndexRecord {
                codebook: table.codebook().as_ref().clone(),
                generation,
            }))?;
            Ok((table, file))
        })();
        match result {
            Ok((table, file)) => {
                w.codes = Some(table);
                w.codes_file = file;
                self.publish(w);
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
            Some(quantization) if w.committed_rows > 0 => {
                w.index_pending = None;
                self.rebuild_vector_index(w, quantization)
            }
            _ => Ok(()),
        }
    }

    pub(super) fn drop_vector_index(&self) -> Result<bool> {
        let mut w = lock_poison_free(&self.writer);
        w.check()?;
        if w.codes.is_none() && w.index_pending.is_none() {
            return Ok(false);
        }
        self.meta.set_vector_index(None)?;
        w.codes = None;
        w.codes_file = None;
        w.index_pending = None;
        self.publish(&mut w);
        // The record is gone: a file left by a failure here is removed on the next open.
        self.location.remove(codes_file::CODES)?;
        Ok(true)
    }

    pub(super) fn vector_index_info(&self) -> IndexInfo {
        let snap = self.published.load();
        info_of(snap.codes.as_ref(), snap.index_pending)
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
            all.extend_from_slice(bytes);
        }
        let ids = (0..snap.row_ids.len())
            .filter_map(|row| snap.row_ids.get(row).map(|id| id.to_string()))
            .collect();
        Some((codes.codebook().to_bytes(), all, ids))
    }
}

/// What `index_info` reports for `codes`, or for an index `pending` (no rows yet).
fn info_of(codes: Option<&CodeTable>, pending: Option<Quantization>) -> IndexInfo {
    IndexInfo {
        kind: IndexKind::Flat,
        quantization: codes.map(|c| c.codebook().quantization()).or(pending),
        rows: codes.map_or(0, |c| c.rows()),
        bytes: codes.map_or(0, |c| c.bytes()),
        hnsw: None,
    }
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
    let step = live.div_ceil(budget).max(1);
    let mut sample = Vec::new();
    for (k, row) in (0..rows).filter(|&row| !is_dead(row)).enumerate() {
        if (k as u64).is_multiple_of(step) {
            if let Some(data) = view.read_row(row)? {
                sample.push(data);
            }
        }
    }
    let sample = sample.iter().map(|data| (&data[..dim], data[dim]));
    Ok(Codebook::train(quantization, metric, dim, sample))
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
    record: IndexRecord,
    dim: Option<u32>,
    metric: Metric,
    view: Option<&dyn RowView>,
    committed_rows: u64,
) -> Result<(CodeTable, CodesFile)> {
    if dim != Some(record.codebook.dim() as u32) || record.codebook.metric() != metric {
        return Err(Error::corrupt(
            location.path_of(crate::storage::names::METADATA),
            format!(
                "the vector index's codebook is for {} dimensions / {}, the database holds {dim:?} / {metric}: drop_index() and create it again",
                record.codebook.dim(),
                record.codebook.metric()
            ),
        ));
    }
    let generation = record.generation;
    let mut table = CodeTable::new(Arc::new(record.codebook));
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
