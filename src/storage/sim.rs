//! Simulated files in memory: the ephemeral backend, and the fault injector of the crash tests.
//!
//! Each [`SimFile`] keeps the bytes a reader would see (`live`) apart from the bytes that have
//! reached the "disk" (`durable`, updated by `sync_data`). A [`FaultPlan`] shared by all files
//! of a [`SimLocation`] counts writes and syncs down and, at zero, fails that operation and every
//! later one, as a machine that lost power would. [`SimLocation::crash_image`] then builds the
//! directory a reboot would find: only durable bytes. This is how the tests prove that a commit
//! survives power loss, not just a killed process (after redb's `crash_consistency` tests).

use super::cached::CachedRows;
use super::{check_and_cut, ByteFile, Location, RowStore};
use crate::error::{Error, Result};
use crate::format::Header;
use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// When to fail: after `countdown` more mutating operations (writes, length changes, syncs).
#[derive(Debug)]
pub struct FaultPlan {
    countdown: AtomicI64,
    failed: AtomicBool,
    ops: AtomicI64,
}

impl FaultPlan {
    /// Never fails.
    pub fn never() -> Self {
        FaultPlan {
            countdown: AtomicI64::new(-1),
            failed: AtomicBool::new(false),
            ops: AtomicI64::new(0),
        }
    }

    /// Fails the `n`-th mutating operation from now (1 = the next one) and all after it.
    pub fn fail_after(&self, n: i64) {
        self.countdown.store(n, Ordering::SeqCst);
    }

    /// True once a fault has fired.
    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// Mutating operations seen so far (to size a sweep).
    pub fn ops(&self) -> i64 {
        self.ops.load(Ordering::SeqCst)
    }

    fn tick(&self) -> io::Result<()> {
        self.ops.fetch_add(1, Ordering::SeqCst);
        if self.failed.load(Ordering::SeqCst) {
            return Err(io::Error::other("simulated power loss: the device is gone"));
        }
        let left = self.countdown.load(Ordering::SeqCst);
        if left > 0 {
            let now = self.countdown.fetch_sub(1, Ordering::SeqCst) - 1;
            if now == 0 {
                self.failed.store(true, Ordering::SeqCst);
                return Err(io::Error::other("simulated power loss (injected fault)"));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Default, Clone)]
struct SimBytes {
    live: Vec<u8>,
    durable: Vec<u8>,
}

/// One simulated file.
#[derive(Debug)]
pub struct SimFile {
    bytes: Mutex<SimBytes>,
    faults: Arc<FaultPlan>,
    track_durable: bool,
}

impl SimFile {
    fn lock(&self) -> MutexGuard<'_, SimBytes> {
        self.bytes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ByteFile for SimFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.lock().live.len() as u64)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let b = self.lock();
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let src = b
            .live
            .get(start..start + buf.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"))?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.faults.tick()?;
        let mut b = self.lock();
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        if b.live.len() < start + data.len() {
            b.live.resize(start + data.len(), 0);
        }
        b.live[start..start + data.len()].copy_from_slice(data);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.faults.tick()?;
        let len = usize::try_from(len).map_err(io::Error::other)?;
        self.lock().live.resize(len, 0);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.faults.tick()?;
        if self.track_durable {
            let mut b = self.lock();
            b.durable = b.live.clone();
        }
        Ok(())
    }
}

/// redb's view of a [`SimFile`].
#[derive(Debug)]
struct SimRedbBackend(Arc<SimFile>);

impl redb::StorageBackend for SimRedbBackend {
    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.0.read_at(offset, out)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.0.write_at(offset, data)
    }
}

/// An in-memory directory of [`SimFile`]s.
#[derive(Debug)]
pub struct SimLocation {
    files: Mutex<HashMap<String, Arc<SimFile>>>,
    faults: Arc<FaultPlan>,
    track_durable: bool,
}

impl SimLocation {
    /// An empty directory for an ephemeral database (no durability tracking, no faults).
    pub fn ephemeral() -> Self {
        SimLocation {
            files: Mutex::default(),
            faults: Arc::new(FaultPlan::never()),
            track_durable: false,
        }
    }

    /// An empty directory that tracks durable bytes and obeys `faults`.
    pub fn with_faults(faults: Arc<FaultPlan>) -> Self {
        SimLocation {
            files: Mutex::default(),
            faults,
            track_durable: true,
        }
    }

    /// The fault plan.
    pub fn faults(&self) -> &Arc<FaultPlan> {
        &self.faults
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<SimFile>>> {
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn file(&self, name: &str, create: bool) -> Option<Arc<SimFile>> {
        let mut files = self.lock();
        if create {
            let f = Arc::new(SimFile {
                bytes: Mutex::default(),
                faults: self.faults.clone(),
                track_durable: self.track_durable,
            });
            files.insert(name.to_owned(), f.clone());
            return Some(f);
        }
        files.get(name).cloned()
    }

    /// What a reboot after power loss would find: every file with only its synced bytes, and a
    /// fresh fault plan. With `keep_unsynced`, the image a killed process leaves instead (the
    /// page cache survives).
    pub fn crash_image(&self, keep_unsynced: bool) -> SimLocation {
        let faults = Arc::new(FaultPlan::never());
        let files = self
            .lock()
            .iter()
            .map(|(name, f)| {
                let b = f.lock();
                let bytes = if keep_unsynced {
                    b.live.clone()
                } else {
                    b.durable.clone()
                };
                let file = SimFile {
                    bytes: Mutex::new(SimBytes {
                        live: bytes.clone(),
                        durable: bytes,
                    }),
                    faults: faults.clone(),
                    track_durable: true,
                };
                (name.clone(), Arc::new(file))
            })
            .collect();
        SimLocation {
            files: Mutex::new(files),
            faults,
            track_durable: true,
        }
    }

    /// Applies `edit` to the live bytes of file `name` (corruption tests).
    pub fn edit_file(&self, name: &str, edit: impl FnOnce(&mut Vec<u8>)) -> bool {
        match self.file(name, false) {
            Some(f) => {
                let mut b = f.lock();
                edit(&mut b.live);
                b.durable = b.live.clone();
                true
            }
            None => false,
        }
    }
}

impl Location for SimLocation {
    fn path_of(&self, name: &str) -> PathBuf {
        PathBuf::from("<memory>").join(name)
    }

    fn exists(&self, name: &str) -> Result<bool> {
        Ok(self.lock().contains_key(name))
    }

    fn open_rows(
        &self,
        name: &str,
        committed_rows: u64,
    ) -> Result<Option<(Header, Box<dyn RowStore>)>> {
        let Some(file) = self.file(name, false) else {
            return Ok(None);
        };
        let path = self.path_of(name);
        let header = check_and_cut(file.as_ref(), &path, committed_rows)?;
        let store = CachedRows::open(Some(file), path, header.layout, committed_rows)?;
        Ok(Some((header, Box::new(store))))
    }

    fn create_rows(&self, name: &str, header: &Header) -> Result<Box<dyn RowStore>> {
        let path = self.path_of(name);
        let store: Box<dyn RowStore> = if self.track_durable {
            let file = self
                .file(name, true)
                .ok_or_else(|| Error::invalid("cannot create file"))?;
            file.write_at(0, &header.encode())
                .and_then(|()| file.sync_data())
                .map_err(Error::io_ctx(format!(
                    "writing the header of {}",
                    path.display()
                )))?;
            Box::new(CachedRows::open(Some(file), path, header.layout, 0)?)
        } else {
            // Ephemeral: keep the rows only in the cache.
            Box::new(CachedRows::open(None, path, header.layout, 0)?)
        };
        Ok(store)
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.faults
            .tick()
            .map_err(Error::io_ctx(format!("renaming {from} to {to}")))?;
        let mut files = self.lock();
        if let Some(f) = files.remove(from) {
            files.insert(to.to_owned(), f);
        }
        Ok(())
    }

    fn remove(&self, name: &str) -> Result<()> {
        self.lock().remove(name);
        Ok(())
    }

    fn open_metadata(&self) -> Result<redb::Database> {
        use super::names::{METADATA, METADATA_NEW};
        let path = self.path_of(METADATA);
        let map = |e| crate::meta::map_db_error(e, &path, &PathBuf::from("<memory>"));
        let create =
            |f: Arc<SimFile>| redb::Database::builder().create_with_backend(SimRedbBackend(f));
        self.remove(METADATA_NEW)?;
        if let Some(f) = self.file(METADATA, false) {
            super::check_metadata_not_blank(f.as_ref(), &path)?;
        } else {
            let fresh = self
                .file(METADATA_NEW, true)
                .ok_or_else(|| Error::invalid("cannot create file"))?;
            drop(create(fresh).map_err(map)?);
            self.rename(METADATA_NEW, METADATA)?;
        }
        let file = self
            .file(METADATA, false)
            .ok_or_else(|| Error::invalid("metadata store vanished"))?;
        create(file).map_err(map)
    }
}
