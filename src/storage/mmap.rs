//! Native rows backend: `vectors.bin` memory-mapped read-only, appended with positioned writes.
//!
//! The file is grown in large steps and remapped; each view holds the mapping it was made from
//! (an `Arc`), so old views stay valid while the file grows. The file never shrinks while this
//! process maps it: torn tails are cut in `check_and_cut` before the first mapping, and
//! compaction writes a new file and renames it over the old one (old mappings keep the old inode).
//!
//! **Truncation by someone else.** Reading a mapped page that lies past the end of the file
//! raises SIGBUS, which kills the process; a file lock cannot stop another process from
//! truncating `vectors.bin`. So the writer checks the file's length (one `fstat`) wherever it
//! maps, appends, syncs or closes: after mapping (open, and every remap as the file grows),
//! before each append, before each `sync` (so a commit never records rows that are gone), and
//! at close, where it only ever shrinks the file (never re-extends a truncated one with zeros).
//! A SrvDB writer beside a read-only handle (in another process) is not such a case: it only
//! grows the file, or cuts it back to its own committed rows, which include the reader's.
//! A shorter file is [`Error::Corrupt`], which poisons the handle; reopening reports the lost
//! committed rows. Readers check too: `search`, `search_batch` and `get` call
//! [`RowView::check_backed`] (one `fstat`) before they read a view. **The limit:** a truncation
//! while such a read runs, or between the check and the read, still raises SIGBUS. Keep other
//! processes from writing a database's files.

use super::fs::StdFile;
use super::{ByteFile, RowStore, RowView};
use crate::error::{Error, Result};
use crate::format::{RowLayout, HEADER_BYTES};
use memmap2::{Mmap, MmapOptions};
use std::path::PathBuf;
use std::sync::Arc;

/// Smallest growth step of the file, in bytes.
const MIN_GROWTH_BYTES: u64 = 64 << 20;
/// After this many appended bytes, a background `fdatasync` starts flushing them (see
/// `MmapRows::early_flush`).
const EARLY_FLUSH_BYTES: u64 = 1 << 20;

/// The writer's side of a mapped `vectors.bin`.
#[derive(Debug)]
pub struct MmapRows {
    /// Shared with the views, which check its length before a read (`RowView::check_backed`).
    file: Arc<StdFile>,
    path: PathBuf,
    layout: RowLayout,
    rows: u64,
    /// Bytes of the file that are allocated (and mapped): header + capacity rows.
    capacity_bytes: u64,
    map: Option<Arc<Mmap>>,
    /// Bytes appended since the last flush started.
    unflushed_bytes: u64,
    /// The background flush in flight, if any.
    early_flush: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    /// The file belongs to a deferred-sync location (`super::deferred_sync`): `sync` checks
    /// the file's length but does not fsync. The early flush still runs: it only starts the
    /// write-back sooner, so the caller's sync pass has less left to write (a 2-shard load of
    /// 200,000 x 384 rows took 0.84-1.13 s with it against 0.99-1.09 s without, best of 3 in
    /// three interleaved rounds on the shared 2-core machine; no difference at 20,000 rows).
    defer_syncs: bool,
}

impl MmapRows {
    /// Maps `file`, which holds a checked header and exactly `rows` rows. A file that is
    /// shorter than that once mapped is [`Error::Corrupt`]. With `defer_syncs`, a commit's
    /// `sync` does not fsync (the file belongs to a
    /// [`super::deferred_sync::DeferredSyncLocation`]); only the early flush does.
    pub fn open(
        file: Arc<StdFile>,
        path: PathBuf,
        layout: RowLayout,
        rows: u64,
        defer_syncs: bool,
    ) -> Result<Self> {
        let len = layout.file_len(rows);
        let mut store = MmapRows {
            file,
            path,
            layout,
            rows,
            capacity_bytes: len,
            map: None,
            unflushed_bytes: 0,
            early_flush: None,
            defer_syncs,
        };
        store.remap(len)?;
        Ok(store)
    }

    /// The file's length now (one `fstat`).
    fn file_len(&self) -> Result<u64> {
        self.file.len().map_err(Error::io_ctx(format!(
            "reading the length of {}",
            self.path.display()
        )))
    }

    /// [`Error::Corrupt`] unless the file still holds its first `need` bytes: another process
    /// truncated it, and reading the lost part through the mapping would raise SIGBUS.
    fn check_len(&self, need: u64, doing: &str) -> Result<()> {
        let len = self.file_len()?;
        if len >= need {
            return Ok(());
        }
        Err(Error::corrupt(
            &self.path,
            format!(
                "truncated by another process while open ({len} bytes, {need} expected, found {doing}): \
                 this handle can no longer read its rows; reopen the database, and keep other \
                 programs from writing its files"
            ),
        ))
    }

    /// Maps `capacity_bytes` of the file, then checks that the file holds the first `need`
    /// of them (the rows views will read).
    fn remap(&mut self, need: u64) -> Result<()> {
        if self.capacity_bytes <= HEADER_BYTES as u64 {
            self.map = None;
            return Ok(());
        }
        let len = usize::try_from(self.capacity_bytes)
            .map_err(|_| Error::invalid("vectors.bin is larger than this platform can map"))?;
        // SAFETY: the mapping is read-only and covers bytes this process only appends past:
        // rows below `self.rows` are never rewritten (append-only), this process never
        // truncates the file while it is mapped (see module docs), and a SrvDB writer in
        // another process (beside a read-only handle, which holds no lock once open) only
        // appends past its committed rows and cuts only past them, never below this handle's
        // committed rows; a compaction renames a new file in. A foreign process writing or truncating the file is
        // outside what any mmap can defend against: `check_len` below catches a truncation
        // that happened before it runs; one after it is the documented limit (module docs).
        let map = self
            .file
            .with_file(|f| unsafe { MmapOptions::new().len(len).map(f) });
        let map = map.map_err(Error::io_ctx(format!("mapping {}", self.path.display())))?;
        // Mapping past the end of a file succeeds; reading there raises SIGBUS. Checked after
        // mapping, so a truncation before this point is caught.
        self.check_len(need, "after mapping it")?;
        self.map = Some(Arc::new(map));
        Ok(())
    }
}

impl MmapRows {
    /// Starts an `fdatasync` on a second thread once `EARLY_FLUSH_BYTES` were appended and
    /// none is in flight, so a large ingest writes to disk while it encodes the next rows
    /// instead of leaving every byte to the commit's fsync. Durability still comes only from
    /// `sync`, which first waits for this flush and reports its error: Linux reports a
    /// writeback error once per open file, so an error swallowed here could let the commit's
    /// own fsync succeed over lost pages.
    fn early_flush(&mut self) -> Result<()> {
        if self.unflushed_bytes < EARLY_FLUSH_BYTES {
            return Ok(());
        }
        if self.early_flush.as_ref().is_some_and(|h| !h.is_finished()) {
            return Ok(());
        }
        self.wait_for_early_flush()?;
        let file = self
            .file
            .with_file(|f| f.try_clone())
            .map_err(Error::io_ctx(format!("flushing {}", self.path.display())))?;
        self.unflushed_bytes = 0;
        self.early_flush = Some(std::thread::spawn(move || file.sync_data()));
        Ok(())
    }

    fn wait_for_early_flush(&mut self) -> Result<()> {
        let Some(handle) = self.early_flush.take() else {
            return Ok(());
        };
        let ctx = || format!("syncing {}", self.path.display());
        match handle.join() {
            Ok(result) => result.map_err(Error::io_ctx(ctx())),
            Err(_) => Err(Error::io(
                ctx(),
                std::io::Error::other("the background flush thread panicked"),
            )),
        }
    }
}

impl RowStore for MmapRows {
    fn layout(&self) -> RowLayout {
        self.layout
    }

    fn rows(&self) -> u64 {
        self.rows
    }

    fn append(&mut self, rows: &[f32]) -> Result<()> {
        let stride = self.layout.stride_f32;
        let n = (rows.len() / stride) as u64;
        let offset = self.layout.row_offset(self.rows);
        let end = self.layout.row_offset(self.rows + n);
        // A write past a truncation would re-extend the file with zeros where rows were.
        self.check_len(offset, "before an append")?;
        let grow = end > self.capacity_bytes;
        if grow {
            let step = (self.capacity_bytes / 2).max(MIN_GROWTH_BYTES);
            let target = end.max(self.capacity_bytes + step);
            // Round to whole rows so the mapping ends on a row boundary.
            let target_rows =
                (target - HEADER_BYTES as u64).div_ceil(self.layout.stride_bytes() as u64);
            let new_capacity = self.layout.file_len(target_rows);
            self.file
                .set_len(new_capacity)
                .map_err(Error::io_ctx(format!("growing {}", self.path.display())))?;
            self.capacity_bytes = new_capacity;
        }
        self.file
            .write_at(offset, bytemuck::cast_slice(rows))
            .map_err(Error::io_ctx(format!(
                "appending rows to {}",
                self.path.display()
            )))?;
        if grow {
            self.remap(end)?;
        }
        self.rows += n;
        self.unflushed_bytes += std::mem::size_of_val(rows) as u64;
        self.early_flush()?;
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        // A commit must not record rows the file no longer holds.
        self.check_len(self.layout.file_len(self.rows), "before a commit")?;
        self.wait_for_early_flush()?;
        self.unflushed_bytes = 0;
        if self.defer_syncs {
            return Ok(());
        }
        self.file
            .sync_data()
            .map_err(Error::io_ctx(format!("syncing {}", self.path.display())))
    }

    fn view(&self) -> Arc<dyn RowView> {
        Arc::new(MmapView {
            map: self.map.clone(),
            file: self.file.clone(),
            path: self.path.clone(),
            layout: self.layout,
            rows: self.rows,
        })
    }
}

/// A mapped snapshot of the first `rows` rows.
#[derive(Debug)]
struct MmapView {
    map: Option<Arc<Mmap>>,
    file: Arc<StdFile>,
    path: PathBuf,
    layout: RowLayout,
    rows: u64,
}

impl MmapView {
    fn data(&self) -> &[f32] {
        let Some(map) = &self.map else { return &[] };
        let end = HEADER_BYTES + self.rows as usize * self.layout.stride_bytes();
        // The mapping starts page-aligned and the header is 64 bytes, so the rows are f32-aligned;
        // `try_cast_slice` checks it instead of trusting it.
        map.get(HEADER_BYTES..end)
            .and_then(|bytes| bytemuck::try_cast_slice(bytes).ok())
            .unwrap_or(&[])
    }
}

impl RowView for MmapView {
    fn layout(&self) -> RowLayout {
        self.layout
    }

    fn check_backed(&self) -> Result<()> {
        let need = self.layout.file_len(self.rows);
        let len = self.file.len().map_err(Error::io_ctx(format!(
            "reading the length of {}",
            self.path.display()
        )))?;
        if len >= need {
            return Ok(());
        }
        Err(Error::corrupt(
            &self.path,
            format!(
                "truncated by another process while open ({len} bytes, {need} expected, found \
                 before a read): this handle can no longer read its rows; reopen the database, \
                 and keep other programs from writing its files"
            ),
        ))
    }

    fn rows(&self) -> u64 {
        self.rows
    }

    fn segment_count(&self) -> usize {
        usize::from(self.rows > 0)
    }

    fn segment(&self, _i: usize) -> (u64, &[f32]) {
        (0, self.data())
    }

    fn row(&self, row: u64) -> Option<&[f32]> {
        if row >= self.rows {
            return None;
        }
        let stride = self.layout.stride_f32;
        let start = row as usize * stride;
        self.data().get(start..start + stride)
    }
}

impl Drop for MmapRows {
    /// Gives back the preallocated tail, so a closed database's file holds exactly its rows.
    /// Only when no view still maps the file: shrinking under a live mapping would SIGBUS it.
    /// Only ever shrinks: a file that someone else cut below its rows is left short, so the next
    /// open reports the lost rows instead of reading zeros.
    fn drop(&mut self) {
        // Best effort, like the rest of drop: `sync` is where flush errors are reported.
        let _ = self.wait_for_early_flush();
        let unshared = self.map.as_ref().is_none_or(|m| Arc::strong_count(m) == 1);
        let want = self.layout.file_len(self.rows);
        let longer = self.file_len().is_ok_and(|len| len > want);
        if unshared && longer {
            self.map = None;
            // Best effort: a longer file is still correct (the tail is cut on open).
            let _ = self.file.set_len(want);
        }
    }
}
