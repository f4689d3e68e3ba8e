//! Simulated files in memory: the fault injector of the crash tests (feature `testing`).
//!
//! What it models is what a POSIX file system promises across a power cut (after LazyFS and
//! ALICE), not only across a killed process:
//!
//! - **File data.** Each [`SimFile`] keeps the bytes a reader sees (`live`, the page cache) apart
//!   from the bytes on the "disk" (`durable`), and logs every write and length change made since
//!   its last `sync_data`. Only `sync_data` moves `live` to `durable`; a length set by `set_len`
//!   or grown by a write is unsynced like data.
//! - **The directory.** Names point at files (inodes). Creating, renaming and removing a name
//!   changes the live namespace at once and the durable one only at the next directory sync.
//!   Every directory operation of [`SimLocation`] is followed by its own, separately fallible
//!   directory sync, in the order [`super::fs::FsLocation`] does them (`rename(2)`, then
//!   `fsync` of the directory), so a fault can fall between the two.
//! - **Only files and names.** [`SimLocation`] knows nothing of what its files hold: the rows
//!   and the redb metadata store are written through the same [`SimFile`]s, by the protocols of
//!   [`super`] and `crate::meta`, so every write and sync of either can be made to fail.
//! - **Faults.** A [`FaultPlan`] shared by the files and the directory counts every mutating
//!   operation (write, `set_len`, `sync_data`, create, rename, remove, directory sync) down and,
//!   at zero, fails that one and every later one, as a machine that lost power would. The write
//!   that fails lands short: its first half reaches the page cache.
//! - **Crash images.** [`SimLocation::image_after`] builds the directory a reboot would find,
//!   with a fresh fault plan: [`Crash::PowerLoss`] (synced bytes under synced names),
//!   [`Crash::ProcessKill`] (everything written survives in the page cache, but what was not
//!   synced is still not durable: an image of this image after a power cut loses it), or
//!   [`Crash::Torn`]: power lost during write-back, so a seeded random part of what was not
//!   synced reached the disk anyway (per page a prefix of its writes, or any subset of whole
//!   writes; a prefix of the file's length changes; a prefix of the directory operations).
//!
//! The crash tests (`tests/faults.rs`, `tests/model.rs`) use this to prove that a commit
//! survives power loss, after redb's `crash_consistency` tests. [`Defects`] makes the disk lie
//! on purpose, so those tests can show that they catch a missing fsync.
//!
//! Not modelled: a fault that heals (every fault is a power cut: later operations fail too);
//! Linux's behaviour after a failed `fsync` (pages marked clean and lost while a later `fsync`
//! succeeds); directory operations reaching the disk out of order (journaling file systems
//! keep their order); and the rows of the native `mmap` backend, which live in a real file and
//! are not exercised here at all (only the `cached` rows on top of these files are).

use super::cached::CachedRows;
use super::{ByteFile, Location, RowStore};
use crate::error::{Error, Result};
use crate::format::RowLayout;
use crate::testing::Rng;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// When to fail: after `countdown` more mutating operations (writes, length changes, syncs,
/// directory operations and directory syncs).
#[derive(Debug)]
pub struct FaultPlan {
    countdown: AtomicI64,
    failed: AtomicBool,
    ops: AtomicI64,
    /// File and directory syncs seen so far (counted in `ops` too).
    syncs: AtomicI64,
    failed_op: Mutex<Option<&'static str>>,
    failed_file: Mutex<Option<String>>,
}

/// What a tick of the [`FaultPlan`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tick {
    /// The operation goes ahead.
    Proceed,
    /// This operation is the one that fails (power is lost while it runs).
    Fires,
    /// A fault already fired: the device is gone.
    Gone,
}

impl FaultPlan {
    /// Never fails.
    pub fn never() -> Self {
        FaultPlan {
            countdown: AtomicI64::new(-1),
            failed: AtomicBool::new(false),
            ops: AtomicI64::new(0),
            syncs: AtomicI64::new(0),
            failed_op: Mutex::new(None),
            failed_file: Mutex::new(None),
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

    /// File syncs (`sync_data`) and directory syncs seen so far, failed ones included.
    pub fn syncs(&self) -> i64 {
        self.syncs.load(Ordering::SeqCst)
    }

    /// The kind of operation the fault fired on ("write", "sync", "rename", "dir sync", ...).
    pub fn failed_op(&self) -> Option<&'static str> {
        *self.failed_op.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The file the fault fired on, by the name it was created under (`metadata.db.new` for
    /// redb's store), if it fired on a file operation (write, `set_len`, sync).
    pub fn failed_file(&self) -> Option<String> {
        self.failed_file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Counts operation `what` (on the file created as `file`, if a file operation).
    fn decide(&self, what: &'static str, file: Option<&str>) -> Tick {
        self.ops.fetch_add(1, Ordering::SeqCst);
        if what == "sync" || what == "dir sync" {
            self.syncs.fetch_add(1, Ordering::SeqCst);
        }
        if self.failed.load(Ordering::SeqCst) {
            return Tick::Gone;
        }
        let left = self.countdown.load(Ordering::SeqCst);
        if left > 0 {
            let now = self.countdown.fetch_sub(1, Ordering::SeqCst) - 1;
            if now == 0 {
                self.failed.store(true, Ordering::SeqCst);
                *self.failed_op.lock().unwrap_or_else(|p| p.into_inner()) = Some(what);
                *self.failed_file.lock().unwrap_or_else(|p| p.into_inner()) =
                    file.map(str::to_owned);
                return Tick::Fires;
            }
        }
        Tick::Proceed
    }

    fn tick_file(&self, what: &'static str, file: &str) -> io::Result<()> {
        match self.decide(what, Some(file)) {
            Tick::Proceed => Ok(()),
            tick => Err(fault_error(tick)),
        }
    }

    fn tick(&self, what: &'static str) -> io::Result<()> {
        match self.decide(what, None) {
            Tick::Proceed => Ok(()),
            Tick::Fires => Err(fault_error(Tick::Fires)),
            Tick::Gone => Err(fault_error(Tick::Gone)),
        }
    }
}

fn fault_error(tick: Tick) -> io::Error {
    if tick == Tick::Fires {
        io::Error::other("simulated power loss (injected fault)")
    } else {
        io::Error::other("simulated power loss: the device is gone")
    }
}

/// Which part of the unsynced data a [`Crash::Torn`] image keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TornUnit {
    /// Write-back of whole pages of this many bytes, as a page cache does: each page holds its
    /// durable bytes plus a random prefix of the unsynced writes that touched it.
    Pages(usize),
    /// Each unsynced write reached the disk whole or not at all, independently of the others
    /// (writes reordered, as ALICE explores).
    Writes,
}

/// What the directory looks like after a crash (see [`SimLocation::image_after`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crash {
    /// Power lost with nothing unsynced reaching the disk: only synced bytes, under names that
    /// a directory sync made durable.
    PowerLoss,
    /// The process was killed: the kernel keeps everything written, names included, as it
    /// was: what was not synced is still not durable, and a later power cut (an image of this
    /// image) loses it.
    ProcessKill,
    /// Power lost during write-back: a random part of the unsynced state reached the disk,
    /// drawn from `seed` (see [`TornUnit`]). File lengths: the length as of a random prefix of
    /// the file's unsynced writes and length changes (bytes past it are cut, bytes below it
    /// that were never written are zero). Names: a random prefix of the unsynced directory
    /// operations, applied to the durable namespace.
    Torn {
        /// Seeds the choices.
        seed: u64,
        /// What tears.
        unit: TornUnit,
    },
}

/// Deliberate defects of the simulated disk: the crash tests turn one on to show that they
/// catch the bug it stands for (a test that cannot fail proves nothing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Defects {
    /// A directory sync reports success but makes nothing durable (as a `sync_dir` that
    /// swallows its error does).
    pub dir_sync_ignored: bool,
    /// The directory sync that follows a rename reports success but makes nothing durable
    /// (the next honoured directory sync makes the rename durable).
    pub rename_sync_ignored: bool,
    /// `sync_data` of a rows file, once its header is synced (from when a rows store is made
    /// over it), reports success but makes nothing durable: the rows of a commit are not on disk when
    /// redb commits.
    pub rows_sync_ignored: bool,
}

/// A write or length change not yet synced.
#[derive(Debug, Clone)]
enum Unsynced {
    Write { offset: usize, data: Vec<u8> },
    SetLen(usize),
}

#[derive(Debug, Default, Clone)]
struct SimBytes {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// Writes and length changes since the last sync, in order (tracked files only).
    unsynced: Vec<Unsynced>,
}

/// One simulated file.
#[derive(Debug)]
pub struct SimFile {
    /// The name the file was created under (what [`FaultPlan::failed_file`] reports).
    origin: String,
    bytes: Mutex<SimBytes>,
    faults: Arc<FaultPlan>,
    /// `sync_data` is a no-op (see [`Defects::rows_sync_ignored`]).
    sync_ignored: AtomicBool,
}

impl SimFile {
    fn new(origin: &str, faults: Arc<FaultPlan>, bytes: Vec<u8>) -> Self {
        SimFile {
            origin: origin.to_owned(),
            bytes: Mutex::new(SimBytes {
                live: bytes.clone(),
                durable: bytes,
                unsynced: Vec::new(),
            }),
            faults,
            sync_ignored: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SimBytes> {
        self.bytes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `data` at `start` into the live bytes (and the unsynced log).
    fn apply_write(&self, start: usize, data: &[u8]) {
        let mut b = self.lock();
        let end = start + data.len();
        if b.live.len() < end {
            b.live.resize(end, 0);
        }
        b.live[start..end].copy_from_slice(data);
        b.unsynced.push(Unsynced::Write {
            offset: start,
            data: data.to_vec(),
        });
    }

    fn apply_set_len(&self, len: usize) {
        let mut b = self.lock();
        b.live.resize(len, 0);
        b.unsynced.push(Unsynced::SetLen(len));
    }

    /// The bytes a [`Crash::Torn`] image keeps of this file.
    fn torn_bytes(&self, rng: &mut Rng, unit: TornUnit) -> Vec<u8> {
        let b = self.lock();
        if b.unsynced.is_empty() {
            return b.durable.clone();
        }
        // The length the disk holds: as of a random prefix of the operations.
        let mut lens = Vec::with_capacity(b.unsynced.len() + 1);
        let mut len = b.durable.len();
        lens.push(len);
        for op in &b.unsynced {
            len = match op {
                Unsynced::Write { offset, data } => len.max(offset + data.len()),
                Unsynced::SetLen(l) => *l,
            };
            lens.push(len);
        }
        let size_ops = below(rng, b.unsynced.len() + 1);
        let final_len = lens[size_ops];

        // Which (parts of) writes landed.
        let mut page_cut: BTreeMap<usize, usize> = BTreeMap::new();
        if let TornUnit::Pages(page) = unit {
            let page = page.max(1);
            let mut writes_per_page: BTreeMap<usize, usize> = BTreeMap::new();
            for op in &b.unsynced {
                if let Unsynced::Write { offset, data } = op {
                    for p in pages_of(*offset, data.len(), page) {
                        *writes_per_page.entry(p).or_default() += 1;
                    }
                }
            }
            for (p, n) in writes_per_page {
                page_cut.insert(p, below(rng, n + 1));
            }
        }
        let mut seen_per_page: HashMap<usize, usize> = HashMap::new();
        let mut image = b.durable.clone();
        for (i, op) in b.unsynced.iter().enumerate() {
            match op {
                Unsynced::SetLen(l) => {
                    if i < size_ops {
                        image.resize(*l, 0);
                    }
                }
                Unsynced::Write { offset, data } => match unit {
                    TornUnit::Writes => {
                        if below(rng, 2) == 1 {
                            put(&mut image, *offset, data);
                        }
                    }
                    TornUnit::Pages(page) => {
                        let page = page.max(1);
                        for p in pages_of(*offset, data.len(), page) {
                            let seen = seen_per_page.entry(p).or_default();
                            let landed = *seen < page_cut.get(&p).copied().unwrap_or(0);
                            *seen += 1;
                            if landed {
                                let from = (p * page).max(*offset);
                                let to = ((p + 1) * page).min(offset + data.len());
                                put(&mut image, from, &data[from - offset..to - offset]);
                            }
                        }
                    }
                },
            }
        }
        image.resize(final_len, 0);
        image
    }
}

/// Indexes of the pages of `page` bytes that bytes `offset..offset + len` touch.
fn pages_of(offset: usize, len: usize, page: usize) -> std::ops::Range<usize> {
    if len == 0 {
        return 0..0;
    }
    offset / page..(offset + len - 1) / page + 1
}

/// Writes `data` at `offset` into `image`, growing it with zeros if needed.
fn put(image: &mut Vec<u8>, offset: usize, data: &[u8]) {
    let end = offset + data.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    image[offset..end].copy_from_slice(data);
}

fn to_usize(n: u64) -> io::Result<usize> {
    usize::try_from(n).map_err(io::Error::other)
}

impl ByteFile for SimFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.lock().live.len() as u64)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let b = self.lock();
        let start = to_usize(offset)?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| b.live.get(start..end))
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"))?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let start = to_usize(offset)?;
        start
            .checked_add(data.len())
            .ok_or_else(|| io::Error::other("write past the addressable end"))?;
        match self.faults.decide("write", Some(&self.origin)) {
            Tick::Proceed => {
                self.apply_write(start, data);
                Ok(())
            }
            Tick::Fires => {
                // Power is lost mid-write: the first half reached the page cache.
                self.apply_write(start, &data[..data.len() / 2]);
                Err(fault_error(Tick::Fires))
            }
            Tick::Gone => Err(fault_error(Tick::Gone)),
        }
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let len = to_usize(len)?;
        self.faults.tick_file("set_len", &self.origin)?;
        self.apply_set_len(len);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.faults.tick_file("sync", &self.origin)?;
        if !self.sync_ignored.load(Ordering::SeqCst) {
            let mut b = self.lock();
            b.durable = b.live.clone();
            b.unsynced.clear();
        }
        Ok(())
    }
}

/// A directory operation not yet made durable by a directory sync.
#[derive(Debug, Clone)]
enum DirOp {
    Create(String, Arc<SimFile>),
    Rename(String, String),
    Remove(String),
}

type Names = BTreeMap<String, Arc<SimFile>>;

fn apply_dir_op(names: &mut Names, op: &DirOp) {
    match op {
        DirOp::Create(name, file) => {
            names.insert(name.clone(), file.clone());
        }
        DirOp::Rename(from, to) => {
            if let Some(file) = names.remove(from) {
                names.insert(to.clone(), file);
            }
        }
        DirOp::Remove(name) => {
            names.remove(name);
        }
    }
}

/// The names of the directory: what `readdir` shows now, and what a reboot would find.
#[derive(Debug, Default)]
struct Namespace {
    live: Names,
    durable: Names,
    /// Directory operations since the last directory sync, in order (tracked locations only).
    unsynced: Vec<DirOp>,
}

/// An in-memory directory of [`SimFile`]s.
#[derive(Debug)]
pub struct SimLocation {
    names: Mutex<Namespace>,
    faults: Arc<FaultPlan>,
    defects: Defects,
}

impl SimLocation {
    /// An empty directory that tracks durable bytes and names, and obeys `faults`.
    pub fn with_faults(faults: Arc<FaultPlan>) -> Self {
        Self::with_defects(faults, Defects::default())
    }

    /// Like [`SimLocation::with_faults`], on a disk with the given deliberate `defects`.
    pub fn with_defects(faults: Arc<FaultPlan>, defects: Defects) -> Self {
        SimLocation {
            names: Mutex::default(),
            faults,
            defects,
        }
    }

    /// The fault plan.
    pub fn faults(&self) -> &Arc<FaultPlan> {
        &self.faults
    }

    fn ns(&self) -> MutexGuard<'_, Namespace> {
        self.names.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn file(&self, name: &str) -> Option<Arc<SimFile>> {
        self.ns().live.get(name).cloned()
    }

    /// Names in the directory now (the live namespace), in order.
    pub fn file_names(&self) -> Vec<String> {
        self.ns().live.keys().cloned().collect()
    }

    /// Directory operations not yet made durable by a directory sync.
    pub fn unsynced_dir_ops(&self) -> usize {
        self.ns().unsynced.len()
    }

    /// `open(name, O_CREAT | O_TRUNC)`: an existing file is cut to zero (an unsynced length
    /// change), a new one is an unsynced directory entry.
    fn create_file(&self, name: &str) -> io::Result<Arc<SimFile>> {
        self.faults.tick("create")?;
        let mut ns = self.ns();
        if let Some(file) = ns.live.get(name) {
            let file = file.clone();
            drop(ns);
            file.apply_set_len(0);
            return Ok(file);
        }
        let file = Arc::new(SimFile::new(name, self.faults.clone(), Vec::new()));
        ns.live.insert(name.to_owned(), file.clone());
        ns.unsynced
            .push(DirOp::Create(name.to_owned(), file.clone()));
        Ok(file)
    }

    /// `fsync` of the directory: every directory operation so far becomes durable (unless
    /// `lies`, a deliberate defect).
    fn fsync_dir(&self, lies: bool) -> Result<()> {
        self.faults
            .tick("dir sync")
            .map_err(Error::io_ctx("syncing directory <memory>"))?;
        if !lies && !self.defects.dir_sync_ignored {
            let mut ns = self.ns();
            ns.durable = ns.live.clone();
            ns.unsynced.clear();
        }
        Ok(())
    }

    /// What a reboot after power loss would find: every file with only its synced bytes, and a
    /// fresh fault plan. With `keep_unsynced`, the image a killed process leaves instead (the
    /// page cache survives, still unsynced). Shorthand for [`SimLocation::image_after`].
    pub fn crash_image(&self, keep_unsynced: bool) -> SimLocation {
        self.image_after(if keep_unsynced {
            Crash::ProcessKill
        } else {
            Crash::PowerLoss
        })
    }

    /// The directory the next open finds after `crash` (a reboot, or a restarted process),
    /// with a fresh fault plan and no defects.
    /// Deterministic for a given history and `crash`.
    pub fn image_after(&self, crash: Crash) -> SimLocation {
        if crash == Crash::ProcessKill {
            return self.after_kill();
        }
        let faults = Arc::new(FaultPlan::never());
        let ns = self.ns();
        let mut rng = Rng::new(match crash {
            Crash::Torn { seed, .. } => seed,
            _ => 0,
        });
        let names: Names = match crash {
            Crash::ProcessKill | Crash::PowerLoss => ns.durable.clone(),
            Crash::Torn { .. } => {
                let mut names = ns.durable.clone();
                let landed = below(&mut rng, ns.unsynced.len() + 1);
                for op in &ns.unsynced[..landed] {
                    apply_dir_op(&mut names, op);
                }
                names
            }
        };
        drop(ns);
        // One image per file (inode), whatever names it has.
        let mut copies: HashMap<*const SimFile, Arc<SimFile>> = HashMap::new();
        let mut files = Names::new();
        for (name, file) in names {
            let copy = copies
                .entry(Arc::as_ptr(&file))
                .or_insert_with(|| {
                    let bytes = match crash {
                        Crash::ProcessKill | Crash::PowerLoss => file.lock().durable.clone(),
                        Crash::Torn { unit, .. } => file.torn_bytes(&mut rng, unit),
                    };
                    Arc::new(SimFile::new(&file.origin, faults.clone(), bytes))
                })
                .clone();
            files.insert(name, copy);
        }
        SimLocation {
            names: Mutex::new(Namespace {
                live: files.clone(),
                durable: files,
                unsynced: Vec::new(),
            }),
            faults,
            defects: Defects::default(),
        }
    }

    /// The directory after the process was killed: the kernel keeps what was written (data and
    /// names) but makes nothing more durable, so a later power cut still loses what was not
    /// synced before the kill.
    fn after_kill(&self) -> SimLocation {
        let faults = Arc::new(FaultPlan::never());
        let ns = self.ns();
        let mut copies: HashMap<*const SimFile, Arc<SimFile>> = HashMap::new();
        let mut copy = |file: &Arc<SimFile>| {
            copies
                .entry(Arc::as_ptr(file))
                .or_insert_with(|| {
                    let copy = SimFile::new(&file.origin, faults.clone(), Vec::new());
                    *copy.lock() = file.lock().clone();
                    Arc::new(copy)
                })
                .clone()
        };
        let mut remap =
            |names: &Names| -> Names { names.iter().map(|(n, f)| (n.clone(), copy(f))).collect() };
        let live = remap(&ns.live);
        let durable = remap(&ns.durable);
        let unsynced = ns
            .unsynced
            .iter()
            .map(|op| match op {
                DirOp::Create(name, file) => DirOp::Create(name.clone(), copy(file)),
                other => other.clone(),
            })
            .collect();
        SimLocation {
            names: Mutex::new(Namespace {
                live,
                durable,
                unsynced,
            }),
            faults,
            defects: Defects::default(),
        }
    }

    /// Applies `edit` to the bytes of file `name`, durably (corruption tests).
    pub fn edit_file(&self, name: &str, edit: impl FnOnce(&mut Vec<u8>)) -> bool {
        match self.file(name) {
            Some(f) => {
                let mut b = f.lock();
                edit(&mut b.live);
                b.durable = b.live.clone();
                b.unsynced.clear();
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
        Ok(self.ns().live.contains_key(name))
    }

    fn open(&self, name: &str) -> Result<Option<Arc<dyn ByteFile>>> {
        Ok(self.file(name).map(|f| f as Arc<dyn ByteFile>))
    }

    /// As `FsLocation::create`: `open(O_CREAT | O_TRUNC)`, which can fail.
    fn create(&self, name: &str) -> Result<Arc<dyn ByteFile>> {
        let file = self.create_file(name).map_err(Error::io_ctx(format!(
            "creating {}",
            self.path_of(name).display()
        )))?;
        Ok(file)
    }

    /// The default cached rows; with [`Defects::rows_sync_ignored`], the file's syncs from now
    /// on (its header is synced by then) make nothing durable.
    fn rows_over(
        &self,
        file: Arc<dyn ByteFile>,
        path: PathBuf,
        layout: RowLayout,
        rows: u64,
    ) -> Result<Box<dyn RowStore>> {
        if self.defects.rows_sync_ignored {
            let any: Arc<dyn std::any::Any + Send + Sync> = file.clone();
            if let Ok(sim) = any.downcast::<SimFile>() {
                sim.sync_ignored.store(true, Ordering::SeqCst);
            }
        }
        Ok(Box::new(CachedRows::open(Some(file), path, layout, rows)?))
    }

    /// As `FsLocation::rename`: `rename(2)`, then a directory sync, as two fallible steps
    /// (the sync honours [`Defects::rename_sync_ignored`]).
    fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.rename_unsynced(from, to)?;
        self.fsync_dir(self.defects.rename_sync_ignored)
    }

    /// `rename(2)`: the live namespace changes, the durable one at the next directory sync.
    fn rename_unsynced(&self, from: &str, to: &str) -> Result<()> {
        let ctx = || format!("renaming {} to {}", self.path_of(from).display(), to);
        self.faults.tick("rename").map_err(Error::io_ctx(ctx()))?;
        {
            let mut ns = self.ns();
            if !ns.live.contains_key(from) {
                return Err(Error::io(
                    ctx(),
                    io::Error::new(io::ErrorKind::NotFound, "no such file"),
                ));
            }
            let op = DirOp::Rename(from.to_owned(), to.to_owned());
            apply_dir_op(&mut ns.live, &op);
            ns.unsynced.push(op);
        }
        Ok(())
    }

    /// As `FsLocation::remove_unsynced`: nothing to do for a missing file; else `unlink(2)`
    /// ([`Location::remove`] then syncs the directory).
    fn remove_unsynced(&self, name: &str) -> Result<bool> {
        if !self.ns().live.contains_key(name) {
            return Ok(false);
        }
        self.faults.tick("remove").map_err(Error::io_ctx(format!(
            "removing {}",
            self.path_of(name).display()
        )))?;
        {
            let mut ns = self.ns();
            let op = DirOp::Remove(name.to_owned());
            apply_dir_op(&mut ns.live, &op);
            ns.unsynced.push(op);
        }
        Ok(true)
    }

    fn sync_dir(&self) -> Result<()> {
        self.fsync_dir(false)
    }
}

/// Uniform in `0..n` (0 when `n` is 0): the seeded choices of torn images.
fn below(rng: &mut Rng, n: usize) -> usize {
    usize::try_from(rng.below(n as u64)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracked() -> (Arc<FaultPlan>, SimLocation) {
        let faults = Arc::new(FaultPlan::never());
        (faults.clone(), SimLocation::with_faults(faults))
    }

    #[test]
    fn unsynced_rename_is_lost_at_power_loss_but_kept_by_a_killed_process() {
        let (faults, loc) = tracked();
        let f = loc.create_file("a").expect("create");
        f.write_at(0, b"hello").expect("write");
        f.sync_data().expect("sync");
        loc.fsync_dir(false).expect("dir sync");
        // The rename happens, its directory sync fails.
        faults.fail_after(2);
        let r = loc.rename("a", "b");
        assert!(r.is_err(), "the directory sync must fail");
        assert_eq!(faults.failed_op(), Some("dir sync"));
        assert_eq!(loc.file_names(), vec!["b".to_string()]);
        assert_eq!(loc.image_after(Crash::PowerLoss).file_names(), vec!["a"]);
        let killed = loc.image_after(Crash::ProcessKill);
        assert_eq!(killed.file_names(), vec!["b"]);
        // The kernel outlived the process, not the power: the rename is still not durable.
        assert_eq!(killed.image_after(Crash::PowerLoss).file_names(), vec!["a"]);
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..16 {
            let unit = TornUnit::Writes;
            seen.insert(loc.image_after(Crash::Torn { seed, unit }).file_names());
        }
        assert_eq!(
            seen.len(),
            2,
            "torn images keep or drop the rename: {seen:?}"
        );
        // The file itself was synced: its bytes survive under whichever name.
        let image = loc.image_after(Crash::PowerLoss);
        let a = image.file("a").expect("a");
        assert_eq!(a.lock().live, b"hello");
    }

    #[test]
    fn torn_images_mix_unsynced_writes_and_lengths() {
        let (_, loc) = tracked();
        let f = loc.create_file("f").expect("create");
        f.write_at(0, &[1; 8]).expect("write");
        f.sync_data().expect("sync");
        loc.fsync_dir(false).expect("dir sync");
        f.write_at(0, &[2; 4]).expect("write");
        f.write_at(8, &[3; 8]).expect("write");
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..64 {
            for unit in [TornUnit::Pages(4), TornUnit::Writes] {
                let image = loc.image_after(Crash::Torn { seed, unit });
                let bytes = image.file("f").expect("f").lock().live.clone();
                // Every byte is its durable value or one a write put there.
                assert!(bytes.len() == 8 || bytes.len() == 16, "{bytes:?}");
                assert!(bytes[..4].iter().all(|&b| b == 1) || bytes[..4].iter().all(|&b| b == 2));
                assert!(bytes[4..8].iter().all(|&b| b == 1));
                if bytes.len() == 16 {
                    // Pages of 4 bytes tear apart; within a page a write lands whole.
                    for page in bytes[8..].chunks(4) {
                        assert!(page.iter().all(|&b| b == 0) || page.iter().all(|&b| b == 3));
                    }
                }
                seen.insert(bytes);
            }
        }
        // Old or new head x short, zero-filled, half-written or written tail.
        assert!(seen.len() >= 6, "{seen:?}");
        assert!(seen.contains(&[vec![2; 4], vec![1; 4], vec![0; 4], vec![3; 4]].concat()));
        assert_eq!(
            loc.image_after(Crash::PowerLoss)
                .file("f")
                .expect("f")
                .lock()
                .live,
            vec![1; 8]
        );
    }

    #[test]
    fn a_failing_write_lands_short_and_every_later_operation_fails() {
        let (faults, loc) = tracked();
        let f = loc.create_file("f").expect("create");
        faults.fail_after(1);
        assert!(f.write_at(0, &[7; 10]).is_err());
        assert_eq!(f.lock().live, vec![7; 5]);
        assert!(f.sync_data().is_err());
        assert!(loc.rename("f", "g").is_err());
        assert!(loc.remove("f").is_err());
        assert_eq!(faults.failed_op(), Some("write"));
        assert_eq!(loc.file_names(), vec!["f"]);
        // Created but never synced into the directory: gone after power loss.
        assert!(loc.image_after(Crash::PowerLoss).file_names().is_empty());
    }
}
