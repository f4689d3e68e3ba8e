//! The location of an in-memory database ([`crate::Database::in_memory`]): the rows live in
//! their row cache, and every other file (the metadata store) in a byte buffer. Nothing is
//! durable and nothing fails, so none of the crash simulation's bookkeeping is needed (that is
//! `sim`, behind the `testing` feature).

use super::cached::CachedRows;
use super::{ByteFile, Location, RowStore, RowView};
use crate::chunked::ChunkedVec;
use crate::error::{Error, Result};
use crate::format::{Header, RowLayout};
use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

/// What a name of the directory holds.
#[derive(Debug)]
enum Contents {
    /// A file of bytes (the metadata store).
    Bytes(Arc<MemoryFile>),
    /// A rows file: its header, and where its rows go when their store closes.
    Rows(Header, Slot),
}

/// The rows of one rows file (an inode: renames move it, the store that holds the rows keeps
/// it). Empty while a store holds them.
type Slot = Arc<Mutex<Option<ChunkedVec<f32>>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A file in memory (also a read-only handle's private, writable copy of `metadata.db`, which
/// redb may recover there without touching the file).
#[derive(Debug, Default)]
pub(crate) struct MemoryFile {
    bytes: Mutex<Vec<u8>>,
}

impl MemoryFile {
    /// A file holding `bytes`.
    pub(crate) fn with_bytes(bytes: Vec<u8>) -> Self {
        Self {
            bytes: Mutex::new(bytes),
        }
    }
}

fn too_large(n: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::OutOfMemory,
        format!("{n} bytes do not fit in this platform's memory"),
    )
}

/// Fills `buf` from `bytes` at `offset`, as [`ByteFile::read_at`] does: reading past the end
/// is an `UnexpectedEof` error. For files held in memory.
pub(crate) fn read_bytes_at(bytes: &[u8], offset: u64, buf: &mut [u8]) -> io::Result<()> {
    let start = usize::try_from(offset).map_err(|_| too_large(offset))?;
    let src = start
        .checked_add(buf.len())
        .and_then(|end| bytes.get(start..end))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "read of {} bytes at {offset} past the end ({} bytes)",
                    buf.len(),
                    bytes.len()
                ),
            )
        })?;
    buf.copy_from_slice(src);
    Ok(())
}

impl ByteFile for MemoryFile {
    fn len(&self) -> io::Result<u64> {
        Ok(lock(&self.bytes).len() as u64)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        read_bytes_at(&lock(&self.bytes), offset, buf)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut bytes = lock(&self.bytes);
        let start = usize::try_from(offset).map_err(|_| too_large(offset))?;
        let end = start
            .checked_add(data.len())
            .ok_or_else(|| too_large(u64::MAX))?;
        if bytes.len() < end {
            bytes.resize(end, 0);
        }
        bytes[start..end].copy_from_slice(data);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| too_large(len))?;
        lock(&self.bytes).resize(len, 0);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }
}

/// An in-memory directory. Rows are not copied into a file: a closing store hands its rows to
/// the directory, and reopening the name hands them back (compaction reopens the rows it wrote).
#[derive(Debug, Default)]
pub struct MemoryLocation {
    files: Mutex<BTreeMap<String, Contents>>,
}

impl MemoryLocation {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Location for MemoryLocation {
    fn path_of(&self, name: &str) -> PathBuf {
        PathBuf::from("<memory>").join(name)
    }

    fn exists(&self, name: &str) -> Result<bool> {
        Ok(lock(&self.files).contains_key(name))
    }

    fn open(&self, name: &str) -> Result<Option<Arc<dyn ByteFile>>> {
        match lock(&self.files).get(name) {
            None => Ok(None),
            Some(Contents::Bytes(file)) => Ok(Some(file.clone())),
            Some(Contents::Rows(..)) => Err(Error::invalid(format!(
                "{} holds in-memory rows, not bytes: open it with open_rows",
                self.path_of(name).display()
            ))),
        }
    }

    fn create(&self, name: &str) -> Result<Arc<dyn ByteFile>> {
        let file = Arc::new(MemoryFile::default());
        lock(&self.files).insert(name.to_owned(), Contents::Bytes(file.clone()));
        Ok(file)
    }

    /// The rows of an in-memory database have no bytes: they are handed back from the store
    /// that last held them (there is nothing to check or cut, and nothing to make durable).
    fn open_rows(
        &self,
        name: &str,
        committed_rows: u64,
    ) -> Result<Option<(Header, Box<dyn RowStore>)>> {
        let path = self.path_of(name);
        let files = lock(&self.files);
        let Some(Contents::Rows(header, rows)) = files.get(name) else {
            return Ok(None);
        };
        let (header, slot) = (*header, rows.clone());
        drop(files);
        let Some(data) = lock(&slot).take() else {
            return Err(Error::invalid(format!(
                "{} is already open: an in-memory rows file has one store at a time",
                path.display()
            )));
        };
        let store = CachedRows::from_rows(path.clone(), header.layout, data);
        if store.rows() != committed_rows {
            return Err(Error::corrupt(
                path,
                format!(
                    "holds {} rows but metadata committed {committed_rows}",
                    store.rows()
                ),
            ));
        }
        Ok(Some((header, Box::new(MemoryRows { rows: store, slot }))))
    }

    /// Rows kept in memory only, not copied into bytes (see [`MemoryLocation::open_rows`]).
    fn create_rows(&self, name: &str, header: &Header) -> Result<Box<dyn RowStore>> {
        let store = CachedRows::open(None, self.path_of(name), header.layout, 0)?;
        let slot = Slot::default();
        lock(&self.files).insert(name.to_owned(), Contents::Rows(*header, slot.clone()));
        Ok(Box::new(MemoryRows { rows: store, slot }))
    }

    fn rename_unsynced(&self, from: &str, to: &str) -> Result<()> {
        let mut files = lock(&self.files);
        let Some(contents) = files.remove(from) else {
            return Err(Error::io(
                format!("renaming {} to {to}", self.path_of(from).display()),
                io::Error::new(io::ErrorKind::NotFound, "no such file"),
            ));
        };
        files.insert(to.to_owned(), contents);
        Ok(())
    }

    fn remove_unsynced(&self, name: &str) -> Result<bool> {
        Ok(lock(&self.files).remove(name).is_some())
    }

    fn sync_dir(&self) -> Result<()> {
        Ok(())
    }
}

/// A rows store of a [`MemoryLocation`]: cached rows that go back to their file's slot when
/// the store closes.
#[derive(Debug)]
struct MemoryRows {
    rows: CachedRows,
    slot: Slot,
}

impl RowStore for MemoryRows {
    fn layout(&self) -> RowLayout {
        self.rows.layout()
    }

    fn rows(&self) -> u64 {
        self.rows.rows()
    }

    fn append(&mut self, rows: &[f32]) -> Result<()> {
        self.rows.append(rows)
    }

    fn sync(&mut self) -> Result<()> {
        Ok(())
    }

    fn view(&self) -> Arc<dyn RowView> {
        self.rows.view()
    }
}

impl Drop for MemoryRows {
    fn drop(&mut self) {
        // If no name holds the slot any more, the rows go with it, as a removed file's would.
        *lock(&self.slot) = Some(self.rows.take_rows());
    }
}
