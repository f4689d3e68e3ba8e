//! The quantized flat index: every row the scan may see is scored on its code, the best
//! `k * oversample` are kept, and those are rescored exactly from the f32 rows with the
//! pairwise kernel of the exact gather-scan, so the hits and their scores are exact for the
//! candidates found.

use super::codes::CodeTable;
use crate::index::flat::FlatIndex;
use crate::index::topk::Candidate;
use crate::index::{Index, Queries, ScanSet};

/// A search over one snapshot's codes.
pub struct QuantizedIndex<'a> {
    /// The codes of the snapshot's rows (the rows past its end, if any, are scored exactly).
    pub codes: &'a CodeTable,
    /// Rescores the candidates (and scores rows the codes do not cover).
    pub exact: FlatIndex,
    /// Candidates kept per hit.
    pub oversample: usize,
}

impl Index for QuantizedIndex<'_> {
    fn name(&self) -> &'static str {
        "flat-quantized"
    }

    fn search(&self, set: &ScanSet<'_>, queries: &Queries, k: usize) -> Vec<Vec<Candidate>> {
        // Not yet: until the code scan lands, answer exactly (never wrong, only slower).
        self.exact.search(set, queries, k)
    }
}
