//! The exact scan of one row range, for a host that splits a batch across several engine
//! instances (`srvdb-host`'s partitions: each instance scans its range on its own thread, and
//! the host merges the per-range top-k lists). Rows are numbered as in the whole database, so
//! ranges of instances serving the same commit are disjoint and cover it.

use super::validate::batch_len;
use super::Database;
use crate::error::Result;
use crate::filter::bitmap::RowBits;
use crate::filter::Filter;
use crate::format::RowLayout;
use crate::index::flat::FlatIndex;
use crate::index::{Index, ScanSet};
use crate::storage::RowView;
use crate::types::SearchHit;

/// What a host needs to know before it splits a scan by row range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanState {
    /// Rows the exact scan covers, deleted ones included: row numbers run `0..rows`.
    pub rows: u64,
    /// Bytes of rows the exact scan reads.
    pub bytes: u64,
    /// True when the handle has changes no commit recorded yet (another instance opening the
    /// directory would not see them).
    pub uncommitted: bool,
    /// True when a quantized index or a graph answers searches that are not `exact`.
    pub indexed: bool,
}

impl Database {
    /// Rows, uncommitted changes and index presence now (see [`ScanState`]).
    pub fn scan_state(&self) -> ScanState {
        let uncommitted = {
            // Lock order as in a commit: the writer, then the ids.
            let w = super::lock_poison_free(&self.writer);
            let ids = self.ids_read();
            w.has_pending(&ids.pending)
        };
        let snap = self.published.load_full();
        let rows = snap.rows.as_ref().map_or(0, |r| r.rows());
        ScanState {
            rows,
            bytes: snap
                .rows
                .as_ref()
                .map_or(0, |r| rows.saturating_mul(r.layout().stride_bytes() as u64)),
            uncommitted,
            indexed: snap.codes.is_some() || snap.graph.is_some(),
        }
    }

    /// The `k` best live rows among rows `first..end` (clamped to the rows there are) that
    /// match `filter`, for each query of `queries` (back to back), by the exact scan, whatever
    /// index exists: the host's partition scan. Each list is ordered as the whole scan orders
    /// hits (best first, ties to the lower row), so lists of consecutive ranges merge into
    /// the whole scan's answer by a stable merge on the score.
    pub fn query_rows(
        &self,
        queries: &[f32],
        k: usize,
        filter: Option<&Filter>,
        first: u64,
        end: u64,
    ) -> Result<Vec<Vec<SearchHit>>> {
        let (snap, matching) = self.select_rows(filter)?;
        let Some(dim) = snap.dim else {
            return Ok(Vec::new());
        };
        let n = batch_len(dim, queries)?;
        let qs = self.checked_queries(dim, queries, n)?;
        let Some(rows) = &snap.rows else {
            return Ok(vec![Vec::new(); n]);
        };
        rows.check_backed()?;
        let end = end.min(rows.rows());
        let first = first.min(end);
        let len = usize::try_from(end - first).unwrap_or(usize::MAX);
        // Rows of the range the scan must skip: deleted, or outside the filter.
        let mut skip = RowBits::none(len);
        for r in 0..len as u64 {
            if !matching.contains(first + r) {
                skip.insert(r);
            }
        }
        let allowed = len as u64 - skip.count();
        let k = k.min(usize::try_from(allowed).unwrap_or(usize::MAX));
        let view = RangeView::new(rows.as_ref(), first, end);
        let set = ScanSet {
            rows: &view,
            tombstones: skip.words(),
        };
        let found = FlatIndex::new(self.metric, self.kernels).search(&set, &qs, k);
        if !rows.resident() {
            rows.check_backed()?; // a read on demand that failed during the scan
        }
        Ok(super::search::hits_of_range(
            &snap,
            self.metric.higher_is_better(),
            first,
            found,
        ))
    }
}

/// Rows `first..end` of a view, renumbered from 0: what the exact scan of a range reads. A
/// view read on demand reads only the range from its file.
struct RangeView<'a> {
    inner: &'a dyn RowView,
    first: u64,
    end: u64,
    /// The inner view's segments clipped to the range, renumbered.
    segments: Vec<(u64, &'a [f32])>,
}

impl<'a> RangeView<'a> {
    fn new(inner: &'a dyn RowView, first: u64, end: u64) -> Self {
        let stride = inner.layout().stride_f32;
        let mut segments = Vec::new();
        for i in 0..inner.segment_count() {
            let (start, data) = inner.segment(i);
            let stop = start + (data.len() / stride.max(1)) as u64;
            let (from, to) = (start.max(first), stop.min(end));
            if from < to {
                let at = ((from - start) as usize) * stride;
                let upto = ((to - start) as usize) * stride;
                segments.push((from - first, &data[at..upto]));
            }
        }
        RangeView {
            inner,
            first,
            end,
            segments,
        }
    }
}

impl RowView for RangeView<'_> {
    fn layout(&self) -> RowLayout {
        self.inner.layout()
    }

    fn rows(&self) -> u64 {
        self.end - self.first
    }

    fn segment_count(&self) -> usize {
        self.segments.len()
    }

    fn segment(&self, i: usize) -> (u64, &[f32]) {
        self.segments.get(i).copied().unwrap_or((self.rows(), &[]))
    }

    fn row(&self, row: u64) -> Option<&[f32]> {
        if row >= self.rows() {
            return None;
        }
        self.inner.row(self.first + row)
    }

    fn resident(&self) -> bool {
        self.inner.resident()
    }

    fn read_rows(&self, first: u64, out: &mut [f32]) -> Result<()> {
        let stride = self.layout().stride_f32.max(1);
        let n = (out.len() / stride) as u64;
        if first.saturating_add(n) > self.rows() {
            return Err(crate::error::Error::invalid(format!(
                "rows {first}..{} are past the {} rows of this range",
                first.saturating_add(n),
                self.rows()
            )));
        }
        self.inner.read_rows(self.first + first, out)
    }

    fn check_backed(&self) -> Result<()> {
        self.inner.check_backed()
    }
}
