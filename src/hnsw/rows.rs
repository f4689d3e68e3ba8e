//! Rows by number without a virtual call per row: a traversal scores a few thousand rows
//! scattered over the view, and `RowView::row` behind `dyn` (a call, a segment lookup and
//! bounds checks) would cost a visible share of each.

use crate::storage::RowView;

/// The segments of a resident view, looked up by division when they are of one size.
pub(crate) struct ResidentRows<'a> {
    segments: Vec<(u64, &'a [f32])>,
    /// Rows per segment when every segment but the last holds this many.
    per_segment: Option<u64>,
    stride: usize,
    total: u64,
}

impl<'a> ResidentRows<'a> {
    /// The view's rows, or `None` when it is not resident (its rows are read on demand).
    pub fn new(view: &'a dyn RowView) -> Option<Self> {
        if !view.resident() {
            return None;
        }
        let stride = view.layout().stride_f32.max(1);
        let segments: Vec<(u64, &[f32])> =
            (0..view.segment_count()).map(|i| view.segment(i)).collect();
        let per = segments.first().map_or(0, |s| (s.1.len() / stride) as u64);
        let uniform = per > 0
            && segments
                .iter()
                .enumerate()
                .all(|(i, s)| s.0 == i as u64 * per && (s.1.len() / stride) as u64 <= per);
        Some(ResidentRows {
            segments,
            per_segment: uniform.then_some(per),
            stride,
            total: view.rows(),
        })
    }

    /// Row `row` (components, norm, padding), if in the view.
    #[inline]
    pub fn row(&self, row: u64) -> Option<&'a [f32]> {
        if row >= self.total {
            return None;
        }
        let (first, data) = match self.per_segment {
            Some(per) => *self.segments.get((row / per) as usize)?,
            None => {
                let i = self
                    .segments
                    .partition_point(|s| s.0 <= row)
                    .checked_sub(1)?;
                self.segments[i]
            }
        };
        let at = usize::try_from(row - first).ok()? * self.stride;
        data.get(at..at + self.stride)
    }
}

/// Hints the CPU to load the first `lines` cache lines of `data` (a no-op where there is no
/// prefetch hint).
#[inline]
pub(crate) fn prefetch<T>(data: &[T], lines: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let bytes = std::mem::size_of_val(data);
        let base = data.as_ptr().cast::<i8>();
        for line in 0..lines.min(bytes.div_ceil(64)) {
            // SAFETY: `line * 64 < bytes`, so the address is inside the live slice `data`
            // (which other threads may read but never free while it is borrowed); a prefetch
            // is a hint that never faults and writes nothing; SSE is baseline on x86_64.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(base.add(line * 64)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (data, lines);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::RowLayout;
    use crate::storage::cached::CachedRows;
    use crate::storage::RowStore;

    #[test]
    fn finds_every_row_of_a_many_segment_view_and_none_past_it() {
        let layout = RowLayout::new(600);
        let mut store = CachedRows::open(None, Default::default(), layout, 0).unwrap();
        let n = 3000u64;
        let mut buf = vec![0f32; layout.stride_f32];
        for r in 0..n {
            layout.encode_row(&vec![r as f32; 600], 1.0, &mut buf);
            store.append(&buf).unwrap();
        }
        let view = store.view();
        assert!(view.segment_count() > 1, "the test needs several segments");
        let rows = ResidentRows::new(view.as_ref()).unwrap();
        for r in 0..n {
            assert_eq!(rows.row(r).unwrap()[0], r as f32);
        }
        assert!(rows.row(n).is_none());
    }
}
