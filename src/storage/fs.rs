//! A database directory on a real file system (natively, or the one preopened directory a WASI
//! guest sees): positioned `std::fs` I/O, directory fsyncs, and the writer's lock file.

use super::{cached::CachedRows, ByteFile, Location, RowStore};
#[cfg(not(target_arch = "wasm32"))]
use crate::error::LockHolder;
use crate::error::{Error, ReadOnlyRefusal, Result};
use crate::format::RowLayout;
use crate::types::StorageKind;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A `std::fs::File` as a [`ByteFile`]: positioned reads and writes, and `sync_data`
/// (`fdatasync`; `F_FULLFSYNC` on Apple platforms, as std does). The rows and, through
/// `crate::meta`, redb's metadata store both go through it; redb's own `FileBackend` does the
/// same calls (`pread`/`pwrite`, `File::sync_data`) plus a lock on the file, which the
/// directory's [`DirLock`] makes unnecessary.
#[derive(Debug)]
pub struct StdFile {
    #[cfg(unix)]
    file: File,
    // WASI's positioned-I/O extension trait is unstable; seek + read under a lock instead.
    #[cfg(not(unix))]
    file: std::sync::Mutex<File>,
    /// Opened by a read-only location: writes, resizes and syncs are refused (see
    /// [`ReadOnlyRefusal`]) before they reach the OS.
    read_only: bool,
}

impl StdFile {
    /// Wraps an open file.
    pub fn new(file: File) -> Self {
        Self::wrap(file, false)
    }

    fn wrap(file: File, read_only: bool) -> Self {
        #[cfg(unix)]
        {
            StdFile { file, read_only }
        }
        #[cfg(not(unix))]
        {
            StdFile {
                file: std::sync::Mutex::new(file),
                read_only,
            }
        }
    }

    fn refuse_if_read_only(&self) -> io::Result<()> {
        if self.read_only {
            return Err(ReadOnlyRefusal::io());
        }
        Ok(())
    }

    /// Runs `f` on the underlying file.
    pub fn with_file<R>(&self, f: impl FnOnce(&File) -> R) -> R {
        #[cfg(unix)]
        {
            f(&self.file)
        }
        #[cfg(not(unix))]
        {
            let guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
            f(&guard)
        }
    }
}

impl ByteFile for StdFile {
    fn len(&self) -> io::Result<u64> {
        self.with_file(|f| f.metadata().map(|m| m.len()))
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        #[cfg(unix)]
        {
            std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, offset)
        }
        #[cfg(not(unix))]
        {
            use std::io::{Read, Seek, SeekFrom};
            let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
            f.seek(SeekFrom::Start(offset))?;
            f.read_exact(buf)
        }
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.refuse_if_read_only()?;
        #[cfg(unix)]
        {
            std::os::unix::fs::FileExt::write_all_at(&self.file, data, offset)
        }
        #[cfg(not(unix))]
        {
            use std::io::{Seek, SeekFrom, Write};
            let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
            f.seek(SeekFrom::Start(offset))?;
            f.write_all(data)
        }
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.refuse_if_read_only()?;
        self.with_file(|f| f.set_len(len))
    }

    fn sync_data(&self) -> io::Result<()> {
        self.refuse_if_read_only()?;
        self.with_file(|f| f.sync_data())
    }
}

/// Makes creations and renames inside `dir` durable.
///
/// Inside the WASI component (wasm32) this asks the runtime to sync the directory: wasmtime
/// implements `descriptor.sync` on a directory by opening it and fsyncing it on the host, so a
/// compaction's rename is durable before the commit that depends on it, as natively, and a
/// failure is an error, as natively. A runtime that cannot open or sync a directory for its
/// guest says so with `Unsupported` (or refuses to open a directory as a file): the guest
/// cannot do better there, so it goes on, and `srvdb-host` fsyncs the preopened directory
/// itself after every call that may create, rename or remove files. On such a runtime a power
/// loss in the middle of a call can still lose a rename that a commit in the same call relied
/// on; wasmtime is not such a runtime.
///
/// On Windows this does nothing. There is no directory fsync there: `File::open` cannot open a
/// directory (that needs `FILE_FLAG_BACKUP_SEMANTICS`), and `FlushFileBuffers` on a directory
/// handle needs write access and is not documented to make a create or rename durable. NTFS
/// journals namespace changes on its own schedule; RocksDB and PostgreSQL skip the directory
/// sync on Windows the same way. docs/platforms.md states the gap this leaves.
pub fn sync_dir(dir: &Path) -> Result<()> {
    if cfg!(windows) {
        return Ok(());
    }
    let result = File::open(dir).and_then(|d| d.sync_all());
    match result {
        Ok(()) => Ok(()),
        #[cfg(target_arch = "wasm32")]
        Err(e) if runtime_cannot_sync_directories(&e) => Ok(()),
        Err(e) => Err(Error::io(format!("syncing directory {}", dir.display()), e)),
    }
}

/// Makes the closed database in directory `dir` durable: `sync_data` of every regular file in
/// it, then the directory ([`sync_dir`], so on Windows the directory itself is not synced),
/// then its parent (so the directory's own name survives too). The sync pass after a load
/// opened with [`crate::Database::open_deferring_syncs`]. Takes the directory's writer lock
/// while it runs, so a database that is still open is refused with [`Error::Locked`].
pub fn sync_directory(dir: &Path) -> Result<()> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(Error::invalid(format!(
                "{} is not a directory: a database is a directory",
                dir.display()
            )))
        }
        Err(e) => return Err(Error::io(format!("inspecting {}", dir.display()), e)),
    }
    let _lock = DirLock::acquire(dir)?;
    let mut names = Vec::new();
    let entries =
        std::fs::read_dir(dir).map_err(Error::io_ctx(format!("listing {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(Error::io_ctx(format!("listing {}", dir.display())))?;
        // Regular files only, links not followed (SrvDB makes neither links nor directories).
        let kind = entry.file_type().map_err(Error::io_ctx(format!(
            "inspecting {}",
            entry.path().display()
        )))?;
        if kind.is_file() {
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
    }
    names.sort();
    let loc = FsLocation {
        dir: dir.to_path_buf(),
        storage: StorageKind::File,
        read_only: false,
    };
    super::deferred_sync::sync_files(&loc, &names)?;
    match dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

/// Whether `e` says the WASI runtime cannot give the guest a syncable directory handle (as
/// opposed to a sync that was tried and failed, which is an error).
#[cfg(target_arch = "wasm32")]
fn runtime_cannot_sync_directories(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::Unsupported | io::ErrorKind::IsADirectory
    )
}

/// True when `e`, from removing or replacing a file, means only that the file is still mapped
/// (a reader of an older snapshot maps it): Windows refuses to delete a mapped file
/// (`ERROR_ACCESS_DENIED`, or `ERROR_USER_MAPPED_FILE`); Unix removes a mapped file's name, so
/// there no error means that.
pub fn still_mapped(e: &io::Error) -> bool {
    /// `ERROR_USER_MAPPED_FILE` of the Windows API.
    const ERROR_USER_MAPPED_FILE: i32 = 1224;
    cfg!(windows)
        && (e.kind() == io::ErrorKind::PermissionDenied
            || e.raw_os_error() == Some(ERROR_USER_MAPPED_FILE))
}

/// The directory's lock: exclusive for a writer, which keeps every other handle out, or shared
/// among read-only handles while they open, which keeps writers out meanwhile. Held on the `LOCK` file with `flock`-style
/// locks (std's `File::try_lock` / `try_lock_shared`), which belong to one open file, so two
/// handles in one process exclude each other as two processes do. Released when dropped. On
/// wasm32 there are no file locks: the host locks the directory before it preopens it to the
/// guest.
///
/// The `LOCK` file is opened without following a symbolic link: a link planted in the
/// database directory would otherwise make the host create or lock a file outside it (and the
/// sandboxed host runs with more rights than its guest). Such a link is reported as
/// [`Error::Corrupt`] naming it.
///
/// A child made by `fork` (Python's `multiprocessing` and `os.fork`, servers that fork
/// workers) would share the lock through its copy of the descriptor, and keep it held after
/// this process closes the database; the child's copy is replaced by `/dev/null` right after
/// the fork ([`fork_guard`]), so the lock stays this process's alone.
#[derive(Debug)]
pub struct DirLock {
    // Dropped first: a descriptor is unlisted before it is closed, so a fork in between never
    // redirects a number the parent has reused for another file.
    #[cfg(unix)]
    _fork_guard: Option<fork_guard::Registered>,
    _file: Option<File>,
}

/// Keeps `fork` children from holding this process's directory locks: each held `LOCK`
/// descriptor is listed in a fixed table of atomics, and a `pthread_atfork` child handler
/// points every listed descriptor of the child at `/dev/null` (`dup2`, which drops the child's
/// reference to the locked file and leaves the number valid for the child's later `close`).
/// Only async-signal-safe calls run in the child, and no lock is taken there. More than
/// [`SLOTS`](fork_guard) locks held at once leave the rest unguarded (each still works).
#[cfg(unix)]
mod fork_guard {
    use std::os::fd::RawFd;
    use std::sync::atomic::{AtomicI32, Ordering};
    use std::sync::Once;

    const SLOTS: usize = 256;
    const FREE: RawFd = -1;
    static HELD: [AtomicI32; SLOTS] = [const { AtomicI32::new(FREE) }; SLOTS];
    static INSTALL: Once = Once::new();

    extern "C" fn in_child() {
        // SAFETY: runs in the child right after fork, on its only thread; `open`, `dup2` and
        // `close` are async-signal-safe, the path is a NUL-terminated literal, and each listed
        // descriptor was open in the parent at the fork, so it is open in the child too.
        unsafe {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            for slot in &HELD {
                let fd = slot.load(Ordering::Relaxed);
                if fd != FREE {
                    if null >= 0 {
                        libc::dup2(null, fd);
                    }
                    slot.store(FREE, Ordering::Relaxed);
                }
            }
            if null >= 0 {
                libc::close(null);
            }
        }
    }

    /// A descriptor listed until this is dropped (before the descriptor is closed).
    #[derive(Debug)]
    pub(super) struct Registered(usize);

    impl Drop for Registered {
        fn drop(&mut self) {
            HELD[self.0].store(FREE, Ordering::Release);
        }
    }

    /// Lists `fd`; `None` when the table is full.
    pub(super) fn register(fd: RawFd) -> Option<Registered> {
        INSTALL.call_once(|| {
            // SAFETY: registers a plain function with no captured state; it runs only in
            // children (see `in_child`). A failure leaves children unguarded, as before.
            unsafe {
                libc::pthread_atfork(None, None, Some(in_child));
            }
        });
        (0..SLOTS).find_map(|i| {
            HELD[i]
                .compare_exchange(FREE, fd, Ordering::AcqRel, Ordering::Relaxed)
                .ok()
                .map(|_| Registered(i))
        })
    }
}

impl DirLock {
    /// Takes the writer's (exclusive) lock on `dir`, creating `LOCK` if needed, or reports
    /// [`Error::Locked`] saying whether a writer or readers hold it.
    pub fn acquire(dir: &Path) -> Result<Self> {
        Self::take(dir, true)
    }

    /// Takes a reader's (shared) lock on `dir`, or reports [`Error::Locked`] while a writer
    /// holds it. Creates nothing: a directory without `LOCK` was never opened for writing,
    /// so it holds no database, and that is [`Error::ReadOnly`].
    pub fn acquire_shared(dir: &Path) -> Result<Self> {
        Self::take(dir, false)
    }

    /// The writer's lock (`writer`) or a reader's.
    fn take(dir: &Path, writer: bool) -> Result<Self> {
        #[cfg(not(target_arch = "wasm32"))]
        {
            let path = dir.join(super::names::LOCK);
            let file = open_lock_file(&path, writer)?;
            let taken = if writer {
                file.try_lock()
            } else {
                file.try_lock_shared()
            };
            match taken {
                Ok(()) => Ok(DirLock {
                    #[cfg(unix)]
                    _fork_guard: fork_guard::register(std::os::fd::AsRawFd::as_raw_fd(&file)),
                    _file: Some(file),
                }),
                Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked {
                    path: dir.to_path_buf(),
                    // A reader is refused only by a writer.
                    holder: if writer {
                        holder_of(&path)
                    } else {
                        LockHolder::Writer
                    },
                }),
                Err(std::fs::TryLockError::Error(e)) => {
                    Err(Error::io(format!("locking {}", path.display()), e))
                }
            }
        }
        #[cfg(target_arch = "wasm32")]
        {
            let _ = (dir, writer);
            Ok(DirLock {
                _file: None,
                #[cfg(unix)]
                _fork_guard: None,
            })
        }
    }
}

impl Drop for DirLock {
    /// Unlocks before the descriptor is closed. The lock belongs to the open file, which a
    /// child process also holds from its `fork` or `posix_spawn` until its `exec` (std's
    /// `Command` spawns that way, and the fork guard does not run for `posix_spawn`): closing
    /// alone would leave the directory locked while a thread of this process spawns one, and
    /// a reopen in that moment would fail with `Locked`.
    fn drop(&mut self) {
        if let Some(file) = &self._file {
            // An error leaves the lock to the close that follows, as before.
            let _ = file.unlock();
        }
    }
}

/// Opens `LOCK` at `path` without following a link: for a writer created if missing and
/// writable; for a reader read-only and required.
#[cfg(not(target_arch = "wasm32"))]
fn open_lock_file(path: &Path, writer: bool) -> Result<File> {
    let mut options = OpenOptions::new();
    if writer {
        options.create(true).truncate(false).write(true);
    } else {
        options.read(true);
    }
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NOFOLLOW);
    match options.open(path) {
        Ok(file) => Ok(file),
        // O_NOFOLLOW fails with ELOOP on a link (some BSDs say EMLINK).
        Err(_) if is_symlink(path) => Err(Error::Corrupt {
            file: path.to_path_buf(),
            reason: "is a symbolic link, which SrvDB never creates and will not follow (it \
                     could point outside the database directory): remove it and open again"
                .into(),
        }),
        Err(e) if !writer && e.kind() == io::ErrorKind::NotFound => Err(Error::ReadOnly {
            reason: format!(
                "{} has no database ({} is missing: it was never opened for writing): open \
                 it for writing once to create it",
                path.parent().unwrap_or(path).display(),
                super::names::LOCK
            ),
        }),
        Err(e) => Err(Error::io(
            format!("opening lock file {}", path.display()),
            e,
        )),
    }
}

/// Who holds the lock a writer was refused: readers if a shared lock can be taken beside
/// them (it is released at once), else a writer. A guess at one instant, for the message.
#[cfg(not(target_arch = "wasm32"))]
fn holder_of(path: &Path) -> LockHolder {
    // Opened as a reader opens it: read-only, never through a link.
    let probe = open_lock_file(path, false).map(|f| f.try_lock_shared());
    match probe {
        Ok(Ok(())) => LockHolder::Readers,
        _ => LockHolder::Writer,
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// Refuses a path that names no directory. An empty path would otherwise resolve to the
/// working directory for every file while failing the directory's own sync, leaving a
/// database there that the caller never asked for.
pub fn check_dir_path(dir: &Path) -> Result<()> {
    if dir.as_os_str().is_empty() {
        return Err(Error::invalid(
            "the database path is empty: give the directory to open or create, e.g. \"./my-db\"",
        ));
    }
    Ok(())
}

/// A database directory on disk.
#[derive(Debug)]
pub struct FsLocation {
    dir: PathBuf,
    storage: StorageKind,
    /// Files are opened read-only, and creating, renaming or removing one is refused with
    /// [`Error::ReadOnly`] (removing a file that is not there is nothing to refuse).
    read_only: bool,
}

impl FsLocation {
    /// A location for `dir` (created if missing) whose rows use `storage`.
    pub fn new(dir: &Path, storage: StorageKind) -> Result<Self> {
        check_dir_path(dir)?;
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::invalid(format!(
                    "{} exists and is not a directory: a database is a directory",
                    dir.display()
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir).map_err(Error::io_ctx(format!(
                    "creating directory {}",
                    dir.display()
                )))?;
                if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                    sync_dir(parent)?;
                }
            }
            Err(e) => return Err(Error::io(format!("inspecting {}", dir.display()), e)),
        }
        Ok(FsLocation {
            dir: dir.to_path_buf(),
            storage,
            read_only: false,
        })
    }

    /// A read-only location for the existing directory `dir`: nothing is created, and every
    /// change is refused (see [`ReadOnlyRefusal`]).
    pub fn read_only(dir: &Path, storage: StorageKind) -> Result<Self> {
        check_dir_path(dir)?;
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => Ok(FsLocation {
                dir: dir.to_path_buf(),
                storage,
                read_only: true,
            }),
            Ok(_) => Err(Error::invalid(format!(
                "{} exists and is not a directory: a database is a directory",
                dir.display()
            ))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::ReadOnly {
                reason: format!(
                    "there is no database at {} (a read-only open creates nothing): open it \
                     for writing once to create it",
                    dir.display()
                ),
            }),
            Err(e) => Err(Error::io(format!("inspecting {}", dir.display()), e)),
        }
    }

    fn refuse_if_read_only(&self, doing: impl FnOnce() -> String) -> Result<()> {
        if self.read_only {
            return Err(Error::io(doing(), ReadOnlyRefusal::io()));
        }
        Ok(())
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn open_file(&self, name: &str, create: bool) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(!self.read_only)
            .create(create)
            .truncate(create)
            .open(self.dir.join(name))
    }
}

impl Location for FsLocation {
    fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn syncs_in_parallel(&self) -> bool {
        cfg!(not(target_arch = "wasm32"))
    }

    fn exists(&self, name: &str) -> Result<bool> {
        let path = self.dir.join(name);
        path.try_exists()
            .map_err(Error::io_ctx(format!("inspecting {}", path.display())))
    }

    fn open(&self, name: &str) -> Result<Option<Arc<dyn ByteFile>>> {
        match self.open_file(name, false) {
            Ok(file) => Ok(Some(Arc::new(StdFile::wrap(file, self.read_only)))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(
                format!("opening {}", self.dir.join(name).display()),
                e,
            )),
        }
    }

    fn create(&self, name: &str) -> Result<Arc<dyn ByteFile>> {
        self.refuse_if_read_only(|| format!("creating {}", self.dir.join(name).display()))?;
        let file = self.open_file(name, true).map_err(Error::io_ctx(format!(
            "creating {}",
            self.dir.join(name).display()
        )))?;
        Ok(Arc::new(StdFile::new(file)))
    }

    /// Memory-mapped rows (natively, with [`StorageKind::Mmap`]) need the real file this
    /// location handed out (directly, or inside a [`super::deferred_sync::DeferredFile`]); [`StorageKind::OnDemand`] reads rows from the file when asked;
    /// otherwise the default cached rows.
    fn rows_over(
        &self,
        file: Arc<dyn ByteFile>,
        path: PathBuf,
        layout: RowLayout,
        rows: u64,
    ) -> Result<Box<dyn RowStore>> {
        match self.storage {
            #[cfg(not(target_arch = "wasm32"))]
            StorageKind::Mmap => {
                // The mapping needs the real file; a deferred-sync location's file is unwrapped,
                // and the rows told to skip their syncs as its file would.
                let (file, defer_syncs) = super::deferred_sync::unwrap_file(file);
                let any: Arc<dyn std::any::Any + Send + Sync> = file;
                let file = any.downcast::<StdFile>().map_err(|_| {
                    Error::invalid(format!(
                        "{} is not a file of this directory: the mmap backend maps only files its FsLocation opened",
                        path.display()
                    ))
                })?;
                Ok(Box::new(super::mmap::MmapRows::open(
                    file,
                    path,
                    layout,
                    rows,
                    defer_syncs,
                )?))
            }
            #[cfg(target_arch = "wasm32")]
            StorageKind::Mmap => Err(Error::invalid(
                "the mmap backend is not available on wasm32: use StorageKind::File",
            )),
            StorageKind::File => Ok(Box::new(CachedRows::open(Some(file), path, layout, rows)?)),
            StorageKind::OnDemand => Ok(Box::new(super::on_demand::OnDemandRows::open(
                file, path, layout, rows,
            ))),
        }
    }

    /// `rename(2)`; [`Location::rename`] then syncs the directory.
    fn rename_unsynced(&self, from: &str, to: &str) -> Result<()> {
        let (a, b) = (self.dir.join(from), self.dir.join(to));
        self.refuse_if_read_only(|| format!("renaming {} to {}", a.display(), b.display()))?;
        std::fs::rename(&a, &b).map_err(Error::io_ctx(format!(
            "renaming {} to {}",
            a.display(),
            b.display()
        )))
    }

    /// `unlink(2)`; [`Location::remove`] then syncs the directory if a file was removed.
    fn remove_unsynced(&self, name: &str) -> Result<bool> {
        let path = self.dir.join(name);
        if self.read_only {
            return match self.exists(name)? {
                true => self
                    .refuse_if_read_only(|| format!("removing {}", path.display()))
                    .map(|()| false),
                false => Ok(false),
            };
        }
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(format!("removing {}", path.display()), e)),
        }
    }

    /// Nothing to make durable for a read-only location: it changed nothing.
    fn sync_dir(&self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        sync_dir(&self.dir)
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// A copy of the `LOCK` descriptor, as a spawned child holds until it execs, must not keep
    /// the directory locked once the lock is dropped.
    #[test]
    fn a_dropped_lock_is_released_while_a_copy_of_its_descriptor_lives() {
        let dir = tempfile::tempdir().expect("temp dir");
        for writer in [true, false] {
            let lock = DirLock::take(dir.path(), true).expect("first lock");
            let fd = std::os::fd::AsRawFd::as_raw_fd(lock._file.as_ref().expect("lock file"));
            // SAFETY: `fd` is open (the lock holds it); the copy is closed below.
            let copy = unsafe { libc::dup(fd) };
            assert!(copy >= 0, "dup failed");
            drop(lock);
            let again = DirLock::take(dir.path(), writer);
            // SAFETY: `copy` is the descriptor made above, closed once.
            unsafe { libc::close(copy) };
            assert!(again.is_ok(), "writer {writer}: {:?}", again.err());
        }
    }
}
