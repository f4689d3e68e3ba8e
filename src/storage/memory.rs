//! The location of an in-memory database ([`crate::Database::in_memory`]): the rows live in
//! their row cache and the metadata store in redb's in-memory backend. Nothing is durable and
//! nothing fails, so none of the crash simulation's bookkeeping is needed (that is `sim`,
//! behind the `testing` feature).

use super::cached::CachedRows;
use super::{names, Location, RowStore, RowView};
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
    /// The metadata store (its bytes are redb's).
    Metadata,
    /// A rows file: its header, and where its rows go when their store closes.
    Rows(Header, Slot),
}

/// The rows of one rows file (an inode: renames move it, the store that holds the rows keeps
/// it). Empty while a store holds them.
type Slot = Arc<Mutex<Option<ChunkedVec<f32>>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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

    fn create_rows(&self, name: &str, header: &Header) -> Result<Box<dyn RowStore>> {
        let store = CachedRows::open(None, self.path_of(name), header.layout, 0)?;
        let slot = Slot::default();
        lock(&self.files).insert(name.to_owned(), Contents::Rows(*header, slot.clone()));
        Ok(Box::new(MemoryRows { rows: store, slot }))
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
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

    fn remove(&self, name: &str) -> Result<()> {
        lock(&self.files).remove(name);
        Ok(())
    }

    fn sync_dir(&self) -> Result<()> {
        Ok(())
    }

    fn open_metadata(&self) -> Result<redb::Database> {
        let path = self.path_of(names::METADATA);
        let db = redb::Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|e| crate::meta::map_db_error(e, &path, &PathBuf::from("<memory>")))?;
        lock(&self.files).insert(names::METADATA.to_owned(), Contents::Metadata);
        Ok(db)
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
