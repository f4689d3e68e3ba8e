//! Rows kept on disk only: appends are written through to the [`ByteFile`] at once, and a view
//! reads the rows it is asked for from the file ([`RowView::read_rows`]). Nothing of the rows
//! stays in memory, so a database larger than memory opens (the WASI component's linear memory
//! is at most 4 GiB; 1M x 1536 rows are 6 GiB). A full scan reads the whole file per pass, so
//! this backend is meant for a database with a quantized index, whose search reads codes from
//! memory and only its candidates' rows from the file.

use super::{ByteFile, RowStore, RowView};
use crate::error::{Error, Result};
use crate::format::RowLayout;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Rows on disk, written through.
#[derive(Debug)]
pub struct OnDemandRows {
    file: Arc<dyn ByteFile>,
    path: PathBuf,
    layout: RowLayout,
    rows: u64,
}

impl OnDemandRows {
    /// The store over `file`, which holds a checked header and exactly `rows` rows.
    pub fn open(file: Arc<dyn ByteFile>, path: PathBuf, layout: RowLayout, rows: u64) -> Self {
        OnDemandRows {
            file,
            path,
            layout,
            rows,
        }
    }

    /// The file must still hold every row written so far (see
    /// [`super::check_not_truncated`]).
    fn check_not_truncated(&self, when: &str) -> Result<()> {
        let want = self.layout.file_len(self.rows);
        super::check_not_truncated(self.file.as_ref(), &self.path, want, when)
    }
}

impl RowStore for OnDemandRows {
    fn layout(&self) -> RowLayout {
        self.layout
    }

    fn rows(&self) -> u64 {
        self.rows
    }

    fn append(&mut self, rows: &[f32]) -> Result<()> {
        let stride = self.layout.stride_f32;
        if !rows.len().is_multiple_of(stride) {
            return Err(Error::invalid(format!(
                "{} floats are not whole rows of {stride}",
                rows.len()
            )));
        }
        self.check_not_truncated("an append")?;
        // Written through at once: a view taken after this call reads the rows from the file
        // (the page cache holds them until the commit's fsync).
        self.file
            .write_at(self.layout.row_offset(self.rows), &to_le_bytes(rows))
            .map_err(Error::io_ctx(format!(
                "appending rows to {}",
                self.path.display()
            )))?;
        self.rows += (rows.len() / stride) as u64;
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(Error::io_ctx(format!("syncing {}", self.path.display())))?;
        // After the sync: a commit must not record rows the file no longer holds.
        self.check_not_truncated("a commit")
    }

    fn view(&self) -> Arc<dyn RowView> {
        Arc::new(OnDemandView {
            file: self.file.clone(),
            path: self.path.clone(),
            layout: self.layout,
            rows: self.rows,
            failed: Mutex::new(None),
        })
    }
}

/// The rows as the file's little-endian bytes (a borrow where that is the memory layout).
fn to_le_bytes(rows: &[f32]) -> std::borrow::Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        std::borrow::Cow::Borrowed(bytemuck::cast_slice(rows))
    } else {
        std::borrow::Cow::Owned(rows.iter().flat_map(|x| x.to_le_bytes()).collect())
    }
}

/// The first `rows` rows of the file. Holds no rows: [`RowView::resident`] is false.
#[derive(Debug)]
struct OnDemandView {
    file: Arc<dyn ByteFile>,
    path: PathBuf,
    layout: RowLayout,
    rows: u64,
    /// The first read that failed, reported by [`RowView::check_backed`] from then on: a scan
    /// that cannot return an error (`Index::search`) stops at a failed read, and its caller
    /// checks the view after the scan.
    failed: Mutex<Option<(io::ErrorKind, String)>>,
}

impl OnDemandView {
    fn remember(&self, e: &io::Error) {
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        failed.get_or_insert_with(|| (e.kind(), e.to_string()));
    }
}

impl RowView for OnDemandView {
    fn layout(&self) -> RowLayout {
        self.layout
    }

    fn rows(&self) -> u64 {
        self.rows
    }

    fn resident(&self) -> bool {
        false
    }

    fn segment_count(&self) -> usize {
        0
    }

    fn segment(&self, _i: usize) -> (u64, &[f32]) {
        (0, &[])
    }

    fn row(&self, _row: u64) -> Option<&[f32]> {
        None
    }

    fn read_rows(&self, first: u64, out: &mut [f32]) -> Result<()> {
        let n = check_read(self.layout, self.rows, first, out.len())?;
        if n == 0 {
            return Ok(());
        }
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(out);
        if let Err(e) = self.file.read_at(self.layout.row_offset(first), bytes) {
            self.remember(&e);
            return Err(Error::io(
                format!("reading rows of {}", self.path.display()),
                e,
            ));
        }
        if cfg!(target_endian = "big") {
            for x in out.iter_mut() {
                *x = f32::from_bits(u32::from_le(x.to_bits()));
            }
        }
        Ok(())
    }

    fn check_backed(&self) -> Result<()> {
        let failed = self
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some((kind, message)) = failed {
            return Err(Error::io(
                format!(
                    "reading rows of {} on demand (a search stopped there; reopen the database if it persists)",
                    self.path.display()
                ),
                io::Error::new(kind, message),
            ));
        }
        let need = self.layout.file_len(self.rows);
        let len = self.file.len().map_err(Error::io_ctx(format!(
            "reading the length of {}",
            self.path.display()
        )))?;
        if len < need {
            return Err(Error::corrupt(
                &self.path,
                format!(
                    "truncated by another process while open ({len} bytes, {need} expected): \
                     this handle can no longer read its rows; reopen the database, and keep \
                     other programs from writing its files"
                ),
            ));
        }
        Ok(())
    }
}

/// Rows `first..first + n` of a view of `rows` rows, where `floats` (the caller's buffer) is `n`
/// whole rows; an error for a partial row or rows past the view. Returns `n`.
pub(super) fn check_read(layout: RowLayout, rows: u64, first: u64, floats: usize) -> Result<u64> {
    let stride = layout.stride_f32;
    if !floats.is_multiple_of(stride) {
        return Err(Error::invalid(format!(
            "a buffer of {floats} floats is not whole rows of {stride}"
        )));
    }
    let n = (floats / stride) as u64;
    if first.checked_add(n).is_none_or(|end| end > rows) {
        return Err(Error::invalid(format!(
            "rows {first}..{} are past the view's {rows} rows",
            first.saturating_add(n)
        )));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{Header, HEADER_BYTES};
    use crate::storage::fs::StdFile;
    use crate::types::Metric;

    fn store(dim: u32) -> (tempfile::TempDir, OnDemandRows) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("vectors.bin");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("create");
        let file: Arc<dyn ByteFile> = Arc::new(StdFile::new(file));
        let layout = RowLayout::new(dim);
        let header = Header {
            layout,
            metric: Metric::Dot,
        };
        file.write_at(0, &header.encode()).expect("header");
        (dir, OnDemandRows::open(file, path, layout, 0))
    }

    fn rows(layout: RowLayout, n: usize, seed: f32) -> Vec<f32> {
        (0..n * layout.stride_f32)
            .map(|i| seed + i as f32 * 0.5)
            .collect()
    }

    #[test]
    fn views_read_back_what_was_appended_and_never_see_later_rows() {
        let (_dir, mut s) = store(5);
        let layout = s.layout();
        let a = rows(layout, 3, 1.0);
        s.append(&a).expect("append");
        let before = s.view();
        let b = rows(layout, 2, -7.0);
        s.append(&b).expect("append");
        let after = s.view();
        assert!(!before.resident());
        assert_eq!((before.rows(), after.rows()), (3, 5));
        assert_eq!(before.segment_count(), 0);
        assert_eq!(before.row(0), None);
        let mut out = vec![0.0; 5 * layout.stride_f32];
        after.read_rows(0, &mut out).expect("read");
        assert_eq!(&out[..a.len()], &a[..]);
        assert_eq!(&out[a.len()..], &b[..]);
        let mut one = vec![0.0; layout.stride_f32];
        after.read_rows(4, &mut one).expect("read");
        assert_eq!(&one[..], &b[layout.stride_f32..]);
        // The earlier view stops at its own rows.
        assert!(before.read_rows(3, &mut one).is_err());
        assert!(after.read_rows(0, &mut one[..1]).is_err());
        before.check_backed().expect("backed");
    }

    #[test]
    fn a_truncated_file_fails_reads_and_is_remembered() {
        let (_dir, mut s) = store(3);
        let layout = s.layout();
        s.append(&rows(layout, 4, 0.0)).expect("append");
        let view = s.view();
        s.file
            .set_len((HEADER_BYTES + layout.stride_bytes()) as u64)
            .expect("cut");
        let mut out = vec![0.0; 2 * layout.stride_f32];
        assert!(view.read_rows(2, &mut out).is_err());
        // Rows still in the file read, but the view remembers the failure.
        view.read_rows(0, &mut out[..layout.stride_f32])
            .expect("row 0 is still there");
        assert!(matches!(view.check_backed(), Err(Error::Io { .. })));
        assert!(matches!(s.append(&out), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn for_each_rows_visits_every_row_once_in_order_on_both_kinds_of_view() {
        let (_dir, mut on_disk) = store(7);
        let layout = on_disk.layout();
        let mut cached =
            super::super::cached::CachedRows::open(None, PathBuf::from("mem"), layout, 0)
                .expect("cached");
        // More rows than one 4 MiB chunk of the cached store holds, so it has two segments.
        let n = (4 << 20) / layout.stride_bytes() + 100;
        let data = rows(layout, n, 3.0);
        on_disk.append(&data).expect("append");
        cached.append(&data).expect("append");
        for view in [on_disk.view(), cached.view()] {
            for (from, to, max_bytes) in
                [(0, n as u64, 1000), (5, n as u64 - 3, 1 << 20), (9, 10, 1)]
            {
                let mut seen = Vec::new();
                super::super::for_each_rows(view.as_ref(), from, to, max_bytes, |first, rows| {
                    assert_eq!(
                        first as usize * layout.stride_f32,
                        seen.len() + from as usize * layout.stride_f32
                    );
                    seen.extend_from_slice(rows);
                    Ok(())
                })
                .expect("visit");
                let want =
                    &data[from as usize * layout.stride_f32..to as usize * layout.stride_f32];
                assert!(
                    seen == want,
                    "rows {from}..{to} (resident: {})",
                    view.resident()
                );
            }
            let past =
                super::super::for_each_rows(view.as_ref(), 0, n as u64 + 1, 1000, |_, _| Ok(()));
            assert!(past.is_err());
        }
    }

    #[test]
    fn the_default_read_path_copies_from_resident_views() {
        let layout = RowLayout::new(4);
        let mut cached =
            super::super::cached::CachedRows::open(None, PathBuf::from("mem"), layout, 0)
                .expect("cached");
        let data = rows(layout, 6, 2.0);
        cached.append(&data).expect("append");
        let view = cached.view();
        assert!(view.resident());
        let mut out = vec![0.0; 3 * layout.stride_f32];
        view.read_rows(2, &mut out).expect("read");
        assert_eq!(
            &out[..],
            &data[2 * layout.stride_f32..5 * layout.stride_f32]
        );
        assert!(view.read_rows(4, &mut out).is_err());
        assert_eq!(
            view.read_row(1).expect("row").as_deref(),
            Some(&data[layout.stride_f32..2 * layout.stride_f32])
        );
        assert_eq!(view.read_row(6).expect("past the end"), None);
    }
}
