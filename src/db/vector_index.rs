//! The quantized vector index's life cycle. Codes are derived data (a pure function of the
//! codebook and the f32 row), kept in `index.codes` (`crate::quant::codes_file`) and in memory
//! ([`CodeTable`], shared by snapshots like the rows):
//!
//! - create: commit pending writes, train a codebook on the live rows (an even sample of at
//!   most [`TRAIN_ROWS`]), encode every row (deleted ones too, so row numbers stay the
//!   index), write the codes file durably under a new generation, then one redb transaction
//!   records the index (codebook and generation). A database with a dimension but no rows
//!   gets a neutral codebook; `compact` retrains it.
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

use super::{lock_poison_free, Database, Writer};
use crate::error::{Error, Result};
use crate::meta::IndexRecord;
use crate::quant::codes::CodeTable;
use crate::quant::codes_file::{self, CodesFile, Opened};
use crate::quant::{Codebook, IndexInfo, IndexKind, IndexSpec, Quantization};
use crate::storage::{Location, RowView};
use crate::types::Metric;
use std::sync::Arc;

/// Most rows a codebook is trained on; larger databases are sampled evenly.
pub const TRAIN_ROWS: u64 = 100_000;

impl Database {
    pub(super) fn create_vector_index(&self, spec: &IndexSpec) -> Result<IndexInfo> {
        let quantization = match (spec.kind, spec.quantization) {
            (IndexKind::Flat, Some(q)) => q,
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
            return Ok(info_of(w.codes.as_ref()));
        }
        if w.dim.is_none() {
            return Err(Error::invalid(
                "the database has no dimension yet: add rows (or open with a dimension) before creating an index",
            ));
        }
        self.commit_locked(&mut w)?;
        self.rebuild_vector_index(&mut w, quantization)?;
        Ok(info_of(w.codes.as_ref()))
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
            );
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

    pub(super) fn drop_vector_index(&self) -> Result<bool> {
        let mut w = lock_poison_free(&self.writer);
        w.check()?;
        if w.codes.is_none() {
            return Ok(false);
        }
        self.meta.set_vector_index(None)?;
        w.codes = None;
        w.codes_file = None;
        self.publish(&mut w);
        // The record is gone: a file left by a failure here is removed on the next open.
        self.location.remove(codes_file::CODES)?;
        Ok(true)
    }

    pub(super) fn vector_index_info(&self) -> IndexInfo {
        info_of(self.published.load().codes.as_ref())
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

/// What `index_info` reports for `codes`.
fn info_of(codes: Option<&CodeTable>) -> IndexInfo {
    IndexInfo {
        kind: IndexKind::Flat,
        quantization: codes.map(|c| c.codebook().quantization()),
        rows: codes.map_or(0, |c| c.rows()),
        bytes: codes.map_or(0, |c| c.bytes()),
    }
}

/// Trains on the live rows of `view` (`rows` of them, `live` not deleted), an even sample
/// of at most [`TRAIN_ROWS`].
fn train(
    quantization: Quantization,
    metric: Metric,
    dim: usize,
    view: Option<&dyn RowView>,
    rows: u64,
    live: u64,
    is_dead: impl Fn(u64) -> bool,
) -> Codebook {
    let step = live.div_ceil(TRAIN_ROWS).max(1);
    let sample = view.into_iter().flat_map(|view| {
        (0..rows)
            .filter(|&row| !is_dead(row))
            .step_by(step as usize)
            .filter_map(move |row| view.row(row))
            .map(move |data| (&data[..dim], data[dim]))
    });
    Codebook::train(quantization, metric, dim, sample)
}

/// Appends to `table` the codes of its missing rows `table.rows()..to` of `view`.
fn encode_rows(table: &mut CodeTable, view: &dyn RowView, to: u64) -> Result<()> {
    let layout = view.layout();
    let stride = layout.stride_f32;
    for i in 0..view.segment_count() {
        let from = table.rows();
        if from >= to {
            break;
        }
        let (first, data) = view.segment(i);
        let n = (data.len() / stride) as u64;
        if first + n <= from {
            continue;
        }
        let lo = (from - first) as usize;
        let hi = (to.min(first + n) - first) as usize;
        table.push_rows(layout, &data[lo * stride..hi * stride]);
    }
    if table.rows() < to {
        return Err(Error::invalid(format!(
            "only {} of {to} rows could be read for the index: vectors.bin is shorter than its commit",
            table.rows()
        )));
    }
    Ok(())
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
