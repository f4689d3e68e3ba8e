//! A [`Location`] whose syncs are deferred: for bulk loads into a fresh directory that the
//! caller makes durable as a whole once the database is closed.
//!
//! Why: a database makes every step durable as it goes (its files are created durably, every
//! commit fsyncs the rows and redb's store, and redb syncs again when it grows the file and
//! when it closes). A small database written once and closed pays about twenty `fdatasync` /
//! `fsync` calls for that, which buy nothing when nothing reads the database before the load
//! as a whole is declared done: `srvdb.distributed.ingest` writes one database per shard and
//! makes them visible only through the manifest it writes last, and a crash before that makes
//! the next run remove the shards and start again. There one sync pass over each closed
//! shard ([`sync_files`], or [`super::fs::sync_directory`] for a directory) before the
//! manifest gives the same guarantee.
//!
//! What changes: through [`DeferredSyncLocation`], every [`ByteFile::sync_data`] of a file it
//! hands out, every [`Location::sync_dir`], and the directory sync that follows a rename or a
//! remove is skipped (the rows stores' syncs go through their file's `sync_data`; the native
//! mmap rows, which hold the real file, are told to skip theirs, see
//! `super::fs::FsLocation::rows_over`; their background early flush after every 1 MiB of
//! appends still runs, as it only starts the write-back that the sync pass would otherwise do
//! all at the end). Writes, renames, removes and every check (the rows
//! file's length before a commit, redb's checksums) are as usual, so the database reads the
//! same while it is open and after it is closed. What does not hold until the sync pass: a
//! power loss (or an OS crash) may leave the database missing commits, or unreadable, or
//! missing altogether. A process that is killed loses nothing it committed: the page cache
//! keeps it.
//!
//! Only for a database that nothing else depends on until the caller's sync pass has run over
//! it, closed.

use super::{ByteFile, Location, RowStore};
use crate::error::{Error, Result};
use crate::format::RowLayout;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// `inner` with its syncs deferred (see the module documentation).
pub struct DeferredSyncLocation {
    inner: Arc<dyn Location>,
}

impl DeferredSyncLocation {
    /// Wraps `inner`: files, names and rows as in `inner`, no syncs.
    pub fn new(inner: Arc<dyn Location>) -> Self {
        DeferredSyncLocation { inner }
    }
}

/// A file of a [`DeferredSyncLocation`]: `inner` with `sync_data` a no-op.
#[derive(Debug)]
pub struct DeferredFile {
    inner: Arc<dyn ByteFile>,
}

/// The file `file` stands for and whether its syncs are deferred: a [`DeferredFile`]'s inner
/// file and `true`, else `file` itself and `false`. For a location's rows backend that needs
/// its own concrete file (the native mmap rows).
pub fn unwrap_file(file: Arc<dyn ByteFile>) -> (Arc<dyn ByteFile>, bool) {
    let any: Arc<dyn std::any::Any + Send + Sync> = file.clone();
    match any.downcast::<DeferredFile>() {
        Ok(deferred) => (deferred.inner.clone(), true),
        Err(_) => (file, false),
    }
}

impl ByteFile for DeferredFile {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_at(offset, buf)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.inner.write_at(offset, data)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }

    /// Deferred: the caller's sync pass makes the file durable.
    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }
}

fn deferred(file: Arc<dyn ByteFile>) -> Arc<dyn ByteFile> {
    Arc::new(DeferredFile { inner: file })
}

impl Location for DeferredSyncLocation {
    fn path_of(&self, name: &str) -> PathBuf {
        self.inner.path_of(name)
    }

    fn exists(&self, name: &str) -> Result<bool> {
        self.inner.exists(name)
    }

    fn open(&self, name: &str) -> Result<Option<Arc<dyn ByteFile>>> {
        Ok(self.inner.open(name)?.map(deferred))
    }

    fn create(&self, name: &str) -> Result<Arc<dyn ByteFile>> {
        self.inner.create(name).map(deferred)
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.inner.rename_unsynced(from, to)
    }

    fn rename_unsynced(&self, from: &str, to: &str) -> Result<()> {
        self.inner.rename_unsynced(from, to)
    }

    fn remove(&self, name: &str) -> Result<()> {
        self.inner.remove_unsynced(name).map(|_| ())
    }

    fn remove_unsynced(&self, name: &str) -> Result<bool> {
        self.inner.remove_unsynced(name)
    }

    /// Deferred: the caller's sync pass syncs the directory.
    fn sync_dir(&self) -> Result<()> {
        Ok(())
    }

    /// `inner`'s rows over the deferred file, whose syncs are no-ops; rows files are opened
    /// and created by the default protocols ([`super::open_rows`], [`super::create_rows`])
    /// through this location, so they get deferred files too.
    fn rows_over(
        &self,
        file: Arc<dyn ByteFile>,
        path: PathBuf,
        layout: RowLayout,
        rows: u64,
    ) -> Result<Box<dyn RowStore>> {
        self.inner.rows_over(file, path, layout, rows)
    }

    /// Nothing to sync beside redb's commit.
    fn syncs_in_parallel(&self) -> bool {
        false
    }
}

/// Makes the files `names` of `loc` and its directory durable: `sync_data` of each file that
/// exists (a missing name is skipped), then [`Location::sync_dir`]. The sync pass after a load
/// through a [`DeferredSyncLocation`], run on the location underneath once the database is
/// closed; [`super::fs::sync_directory`] runs it over every file of a directory.
pub fn sync_files<L: Location + ?Sized>(loc: &L, names: &[String]) -> Result<()> {
    for name in names {
        if let Some(file) = loc.open(name)? {
            file.sync_data().map_err(Error::io_ctx(format!(
                "syncing {}",
                loc.path_of(name).display()
            )))?;
        }
    }
    loc.sync_dir()
}
