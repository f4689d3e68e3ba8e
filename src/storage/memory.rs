//! The location of an in-memory database ([`crate::Database::in_memory`]): the rows live only
//! in their row cache and the metadata store in redb's in-memory backend. Nothing is durable
//! and nothing fails, so none of the crash simulation's bookkeeping is needed (that is
//! [`super::sim`], behind the `testing` feature).

use super::cached::CachedRows;
use super::{names, Location, RowStore};
use crate::error::{Error, Result};
use crate::format::Header;
use std::collections::BTreeSet;
use std::io;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

/// An in-memory directory: only the names it holds, since each file's contents live in the
/// store that wrote them.
#[derive(Debug, Default)]
pub struct MemoryLocation {
    names: Mutex<BTreeSet<String>>,
}

impl MemoryLocation {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    fn names(&self) -> MutexGuard<'_, BTreeSet<String>> {
        self.names.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Location for MemoryLocation {
    fn path_of(&self, name: &str) -> PathBuf {
        PathBuf::from("<memory>").join(name)
    }

    fn exists(&self, name: &str) -> Result<bool> {
        Ok(self.names().contains(name))
    }

    /// Rows are kept only by the store that wrote them, so there is never a file to reopen.
    fn open_rows(
        &self,
        _name: &str,
        _committed_rows: u64,
    ) -> Result<Option<(Header, Box<dyn RowStore>)>> {
        Ok(None)
    }

    fn create_rows(&self, name: &str, header: &Header) -> Result<Box<dyn RowStore>> {
        let path = self.path_of(name);
        Ok(Box::new(CachedRows::open(None, path, header.layout, 0)?))
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        let mut names = self.names();
        if !names.remove(from) {
            return Err(Error::io(
                format!("renaming {} to {to}", self.path_of(from).display()),
                io::Error::new(io::ErrorKind::NotFound, "no such file"),
            ));
        }
        names.insert(to.to_owned());
        Ok(())
    }

    fn remove(&self, name: &str) -> Result<()> {
        self.names().remove(name);
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
        self.names().insert(names::METADATA.to_owned());
        Ok(db)
    }
}
