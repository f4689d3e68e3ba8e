//! The vector index's life cycle: create (train a codebook, encode every row, write the codes
//! file durably, then commit the record), keep in step (codes appended with the rows, before
//! the commit that records them), drop, and rebuild after compaction or when the codes file
//! lacks rows on open.

use super::Database;
use crate::error::{Error, Result};
use crate::quant::{IndexInfo, IndexKind, IndexSpec};

impl Database {
    pub(super) fn create_vector_index(&self, spec: &IndexSpec) -> Result<IndexInfo> {
        let _ = spec;
        Err(Error::invalid("quantized indexes are not built yet"))
    }

    pub(super) fn drop_vector_index(&self) -> Result<bool> {
        Ok(false)
    }

    pub(super) fn vector_index_info(&self) -> IndexInfo {
        let snap = self.published.load();
        match &snap.codes {
            Some(codes) => IndexInfo {
                kind: IndexKind::Flat,
                quantization: Some(codes.codebook().quantization()),
                rows: codes.rows(),
                bytes: codes.bytes(),
            },
            None => IndexInfo {
                kind: IndexKind::Flat,
                quantization: None,
                rows: 0,
                bytes: 0,
            },
        }
    }
}
