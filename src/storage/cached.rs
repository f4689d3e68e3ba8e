//! Rows cached in memory and written through to a [`ByteFile`]. Reads never touch the file, so
//! this works wherever `std::fs` does (WASI included) and runs at memory speed. With no file it
//! is the in-memory backend.

use super::{ByteFile, RowStore, RowView};
use crate::chunked::ChunkedVec;
use crate::error::{Error, Result};
use crate::format::RowLayout;
use std::path::PathBuf;
use std::sync::Arc;

/// Bytes per in-memory chunk: large enough that search blocks rarely straddle chunks, small
/// enough that the copy-on-write of a chunk a reader holds is cheap.
const CHUNK_BYTES: usize = 4 << 20;

/// Rows in memory, optionally mirrored to a file.
#[derive(Debug)]
pub struct CachedRows {
    file: Option<Arc<dyn ByteFile>>,
    path: PathBuf,
    layout: RowLayout,
    data: ChunkedVec<f32>,
}

impl CachedRows {
    /// Loads `rows` rows from `file` (which holds a checked header and exactly those rows), or
    /// starts empty with no file.
    pub fn open(
        file: Option<Arc<dyn ByteFile>>,
        path: PathBuf,
        layout: RowLayout,
        rows: u64,
    ) -> Result<Self> {
        let rows_per_chunk = (CHUNK_BYTES / layout.stride_bytes()).max(1);
        let mut data = ChunkedVec::new(rows_per_chunk * layout.stride_f32);
        if let Some(file) = &file {
            let mut buf = vec![0u8; rows_per_chunk * layout.stride_bytes()];
            let mut row = 0u64;
            while row < rows {
                let n = (rows - row).min(rows_per_chunk as u64) as usize;
                let bytes = &mut buf[..n * layout.stride_bytes()];
                file.read_at(layout.row_offset(row), bytes)
                    .map_err(Error::io_ctx(format!("reading rows of {}", path.display())))?;
                let floats: Vec<f32> = bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                data.extend_from_slice(&floats);
                row += n as u64;
            }
        }
        Ok(CachedRows {
            file,
            path,
            layout,
            data,
        })
    }

    /// Rows kept in memory only, handed over from a store that held them (see
    /// [`CachedRows::take_rows`]).
    pub(crate) fn from_rows(path: PathBuf, layout: RowLayout, data: ChunkedVec<f32>) -> Self {
        CachedRows {
            file: None,
            path,
            layout,
            data,
        }
    }

    /// Moves the rows out (the store is left empty): an in-memory location keeps them when
    /// their store closes, as a file would.
    pub(crate) fn take_rows(&mut self) -> ChunkedVec<f32> {
        let empty = ChunkedVec::new(self.data.chunk_len());
        std::mem::replace(&mut self.data, empty)
    }

    fn row_count(&self) -> u64 {
        (self.data.len() / self.layout.stride_f32) as u64
    }

    /// The file must still hold every row written so far (reads come from memory, so nothing
    /// else would notice a cut). One `fstat` per slab or commit.
    fn check_not_truncated(&self, file: &dyn ByteFile, when: &str) -> Result<()> {
        let want = self.layout.row_offset(self.row_count());
        super::check_not_truncated(file, &self.path, want, when)
    }
}

impl RowStore for CachedRows {
    fn layout(&self) -> RowLayout {
        self.layout
    }

    fn rows(&self) -> u64 {
        self.row_count()
    }

    fn append(&mut self, rows: &[f32]) -> Result<()> {
        if let Some(file) = &self.file {
            self.check_not_truncated(file.as_ref(), "an append")?;
            let offset = self.layout.row_offset(self.row_count());
            file.write_at(offset, bytemuck::cast_slice(rows))
                .map_err(Error::io_ctx(format!(
                    "appending rows to {}",
                    self.path.display()
                )))?;
        }
        self.data.extend_from_slice(rows);
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        match &self.file {
            Some(file) => {
                file.sync_data()
                    .map_err(Error::io_ctx(format!("syncing {}", self.path.display())))?;
                // After the sync: a commit must not record rows the file no longer holds.
                self.check_not_truncated(file.as_ref(), "a commit")
            }
            None => Ok(()),
        }
    }

    fn view(&self) -> Arc<dyn RowView> {
        Arc::new(CachedView {
            layout: self.layout,
            data: self.data.clone(),
        })
    }
}

/// A snapshot of the cached rows: shares the chunks, never sees later appends.
#[derive(Debug)]
struct CachedView {
    layout: RowLayout,
    data: ChunkedVec<f32>,
}

impl RowView for CachedView {
    fn layout(&self) -> RowLayout {
        self.layout
    }

    fn rows(&self) -> u64 {
        (self.data.len() / self.layout.stride_f32) as u64
    }

    fn segment_count(&self) -> usize {
        self.data.chunk_count()
    }

    fn segment(&self, i: usize) -> (u64, &[f32]) {
        let rows_per_chunk = self.data.chunk_len() / self.layout.stride_f32;
        ((i * rows_per_chunk) as u64, self.data.chunk(i))
    }

    fn row(&self, row: u64) -> Option<&[f32]> {
        let stride = self.layout.stride_f32;
        let start = usize::try_from(row).ok()?.checked_mul(stride)?;
        self.data.slice(start, stride)
    }
}
