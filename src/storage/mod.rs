//! Where the rows live. The search code sees only [`RowView`]; the write path sees only
//! [`RowStore`]; opening, creating and replacing files goes through a [`Location`].
//!
//! Backends:
//! - [`mmap`]: native, memory-mapped `vectors.bin`, zero-copy reads (cfg not wasm32);
//! - [`cached`]: rows cached in memory and written through to any [`ByteFile`]: with a
//!   `std::fs` file it is the portable backend the WASI component uses; with no file it holds
//!   the rows of an in-memory database;
//! - [`on_demand`]: rows written through to any [`ByteFile`] and read back from it when a
//!   reader asks, none kept in memory (`StorageKind::OnDemand`: a database larger than memory,
//!   in the component above all);
//! - [`memory`]: the location of an in-memory database (rows in the cache, redb in memory);
//! - `sim` (feature `testing`): an in-memory "directory" of simulated files that can inject
//!   faults into any mutating operation (directory operations and directory syncs included)
//!   and produce the image a power cut, a killed process or a torn write-back would leave (the
//!   crash tests' backend).
//!
//! "Durably" below means surviving power loss: the data is fsynced before anything that
//! depends on it, and the directory is fsynced after a file is created, renamed or removed
//! (a name is not on disk until then). The simulated location fails and loses each of these
//! steps separately, so the crash tests hold every backend to this contract.

pub mod cached;
pub mod deferred_sync;
pub mod fs;
pub mod memory;
#[cfg(not(target_arch = "wasm32"))]
pub mod mmap;
pub mod on_demand;
#[cfg(feature = "testing")]
pub mod sim;

use crate::error::Result;
use crate::format::{Header, RowLayout};
use cached::CachedRows;
use std::borrow::Cow;
use std::fmt::Debug;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// An immutable view of the first [`RowView::rows`] rows. Cheap to share; what it shows never
/// changes, whatever the writer does afterwards.
///
/// A *resident* view (memory or a mapping) hands out its rows as slices: [`RowView::segment`]
/// and [`RowView::row`]. A view that is not resident ([`on_demand`]) holds no rows: it has no
/// segments, `row` is `None`, and its rows are read into the caller's buffer with
/// [`RowView::read_rows`], which works on every view. Readers that may meet either kind use
/// `read_rows` (or [`RowView::read_row`]) when [`RowView::resident`] is false.
pub trait RowView: Send + Sync {
    /// Shape of each row.
    fn layout(&self) -> RowLayout;
    /// Number of rows in the view.
    fn rows(&self) -> u64;
    /// Number of contiguous segments covering rows `0..rows()` (0 for a view that is not
    /// resident).
    fn segment_count(&self) -> usize;
    /// Segment `i`: its first row and its rows' data (`n * stride_f32` floats), in row order.
    fn segment(&self, i: usize) -> (u64, &[f32]);
    /// Row `row` (its `dim` components followed by the norm and padding), if in the view and
    /// the view is resident.
    fn row(&self, row: u64) -> Option<&[f32]>;
    /// True when the rows are in memory or mapped, so `segment` and `row` hand them out.
    fn resident(&self) -> bool {
        true
    }
    /// Copies rows `first..first + n` into `out`, which is `n` whole rows (`n * stride_f32`
    /// floats); an error for rows past the view or a failed read. The read path of every
    /// view: resident views copy from their rows.
    fn read_rows(&self, first: u64, out: &mut [f32]) -> Result<()> {
        let stride = self.layout().stride_f32;
        on_demand::check_read(self.layout(), self.rows(), first, out.len())?;
        for (i, dst) in out.chunks_exact_mut(stride).enumerate() {
            let row = first + i as u64;
            let src = self.row(row).ok_or_else(|| {
                crate::error::Error::invalid(format!("row {row} is not readable from this view"))
            })?;
            dst.copy_from_slice(src);
        }
        Ok(())
    }
    /// Row `row`, borrowed from a resident view or read from a view that is not; `None` past
    /// the view. For readers of a few rows (`get`, records, compaction).
    fn read_row(&self, row: u64) -> Result<Option<Cow<'_, [f32]>>> {
        if row >= self.rows() {
            return Ok(None);
        }
        if self.resident() {
            return Ok(self.row(row).map(Cow::Borrowed));
        }
        let mut out = vec![0.0; self.layout().stride_f32];
        self.read_rows(row, &mut out)?;
        Ok(Some(Cow::Owned(out)))
    }
    /// [`crate::Error::Corrupt`] if the storage under the view no longer holds its rows (a
    /// mapped file truncated by another process, where a read would raise SIGBUS), or the
    /// error of a read that failed earlier (a view read on demand remembers it: a scan that
    /// cannot return an error stops at the failed read). Readers call it before a scan or a
    /// `get`, and after a scan of a view that is not resident; views that read from memory
    /// have nothing to check.
    fn check_backed(&self) -> Result<()> {
        Ok(())
    }
}

/// Calls `f(first_row, rows)` over rows `from..to` of `view` in order, a run of whole rows at a
/// time: slices of a resident view's segments as they are, or, for a view that is not
/// resident, reads of at most `max_bytes` (at least one row) into one buffer. For readers of
/// every row (encoding an index's codes, copying rows) that must work on either kind of view.
/// An error if the rows are not all in the view, or from `f`.
pub fn for_each_rows(
    view: &dyn RowView,
    from: u64,
    to: u64,
    max_bytes: usize,
    mut f: impl FnMut(u64, &[f32]) -> Result<()>,
) -> Result<()> {
    let layout = view.layout();
    let stride = layout.stride_f32;
    if from >= to {
        return Ok(());
    }
    if to > view.rows() {
        return Err(crate::error::Error::invalid(format!(
            "rows {from}..{to} are past the view's {} rows",
            view.rows()
        )));
    }
    if view.resident() {
        let mut next = from;
        for i in 0..view.segment_count() {
            let (first, data) = view.segment(i);
            let end = (first + (data.len() / stride) as u64).min(to);
            if end <= next {
                continue;
            }
            let lo = (next - first) as usize;
            f(next, &data[lo * stride..(end - first) as usize * stride])?;
            next = end;
            if next >= to {
                return Ok(());
            }
        }
        return Err(crate::error::Error::invalid(format!(
            "rows {next}..{to} are not in the view's segments"
        )));
    }
    let per_read = (max_bytes / layout.stride_bytes()).max(1) as u64;
    let mut buf = vec![0.0f32; per_read.min(to - from) as usize * stride];
    let mut next = from;
    while next < to {
        let n = per_read.min(to - next) as usize;
        let rows = &mut buf[..n * stride];
        view.read_rows(next, rows)?;
        f(next, rows)?;
        next += n as u64;
    }
    Ok(())
}

/// The writer's handle on the rows: append, make durable, hand out views.
pub trait RowStore: Send {
    /// Shape of each row.
    fn layout(&self) -> RowLayout;
    /// Rows appended so far (durable or not).
    fn rows(&self) -> u64;
    /// Appends whole rows (`rows.len()` a multiple of `stride_f32`). They are visible to views
    /// taken afterwards but not durable until [`RowStore::sync`].
    fn append(&mut self, rows: &[f32]) -> Result<()>;
    /// Makes every appended row durable (`fdatasync`).
    fn sync(&mut self) -> Result<()>;
    /// A view of all rows appended so far.
    fn view(&self) -> Arc<dyn RowView>;
}

/// A file addressed by byte offsets, after redb's `StorageBackend`: small enough that a real
/// file, an in-memory buffer and a fault-injecting file can stand in for each other (the
/// metadata store runs redb over one too, see `crate::meta`). `Any`, so that a location can take
/// back the concrete file it handed out (the mmap backend needs the real `File`).
#[allow(clippy::len_without_is_empty)] // an empty file is not a case callers branch on
pub trait ByteFile: std::any::Any + Send + Sync + Debug {
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Fills `buf` from `offset`; reading past the end is an error.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes all of `data` at `offset`, growing the file (zero-filled) if needed.
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Sets the length; new bytes are zero.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes written data durable.
    fn sync_data(&self) -> io::Result<()>;
}

/// The names of the files of a database directory.
pub mod names {
    /// The rows.
    pub const VECTORS: &str = "vectors.bin";
    /// The redb metadata store.
    pub const METADATA: &str = "metadata.db";
    /// The rows being written by a compaction.
    pub const VECTORS_COMPACT: &str = "vectors.bin.compact";
    /// The rows a compaction replaced, moved aside before the new file takes their name and
    /// removed right after. Windows refuses to replace or remove a file that readers of an
    /// older snapshot still map, but lets it be renamed; there the file stays under this name
    /// until no reader maps it (the next compaction or open removes it).
    pub const VECTORS_REPLACED: &str = "vectors.bin.old";
    /// The metadata store while redb initialises it, before it is renamed into place.
    pub const METADATA_NEW: &str = "metadata.db.new";
    /// The lock file held by the writing process.
    pub const LOCK: &str = "LOCK";
}

/// A place that holds a database's files, by name: a directory, or memory. It knows names and
/// bytes, nothing of what the files hold; the protocols that make files durable are written
/// once, below ([`create_durably`], [`create_rows`], [`open_rows`]), on top of these methods.
pub trait Location: Send + Sync {
    /// The path shown in errors for file `name`.
    fn path_of(&self, name: &str) -> PathBuf;
    /// True when file `name` exists.
    fn exists(&self, name: &str) -> Result<bool>;
    /// Opens file `name` for reading and writing; `Ok(None)` if it does not exist.
    fn open(&self, name: &str) -> Result<Option<Arc<dyn ByteFile>>>;
    /// Creates file `name`, or cuts an existing one to zero bytes. A new name is durable only
    /// after [`Location::sync_dir`].
    fn create(&self, name: &str) -> Result<Arc<dyn ByteFile>>;
    /// Atomically renames `from` to `to` (replacing it), then syncs the directory so the
    /// rename survives a power cut. An error may come after the rename took effect (from the
    /// directory sync): the caller must then treat either name as possible.
    fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.rename_unsynced(from, to)?;
        self.sync_dir()
    }
    /// The first step of [`Location::rename`]: the rename alone, durable only after
    /// [`Location::sync_dir`].
    fn rename_unsynced(&self, from: &str, to: &str) -> Result<()>;
    /// Removes file `name` if it exists, then syncs the directory.
    fn remove(&self, name: &str) -> Result<()> {
        if self.remove_unsynced(name)? {
            self.sync_dir()?;
        }
        Ok(())
    }
    /// The first step of [`Location::remove`]: removes file `name` if it exists (`Ok(true)`),
    /// durable only after [`Location::sync_dir`]; `Ok(false)` if there was no such file.
    fn remove_unsynced(&self, name: &str) -> Result<bool>;
    /// Syncs the directory: every create, rename and remove made in it so far survives a power
    /// cut. Recovery needs it on its own when it relies on a rename that a crash may have left
    /// in the page cache only (a process killed between `rename(2)` and the directory sync).
    fn sync_dir(&self) -> Result<()>;
    /// The rows store over `file` (named `path` in errors), a rows file of this location whose
    /// header is checked and which holds exactly `rows` rows of `layout`. By default the rows
    /// are cached in memory and written through to `file`.
    fn rows_over(
        &self,
        file: Arc<dyn ByteFile>,
        path: PathBuf,
        layout: RowLayout,
        rows: u64,
    ) -> Result<Box<dyn RowStore>> {
        Ok(Box::new(CachedRows::open(Some(file), path, layout, rows)?))
    }
    /// Opens the rows file `name` (see [`open_rows`], which every location but the in-memory
    /// one, whose rows have no bytes, uses as it is).
    fn open_rows(
        &self,
        name: &str,
        committed_rows: u64,
    ) -> Result<Option<(Header, Box<dyn RowStore>)>> {
        open_rows(self, name, committed_rows)
    }
    /// Creates the rows file `name` (see [`create_rows`], which every location but the
    /// in-memory one uses as it is).
    fn create_rows(&self, name: &str, header: &Header) -> Result<Box<dyn RowStore>> {
        create_rows(self, name, header)
    }
    /// True when a commit may fsync the rows on another thread while redb stages its
    /// transaction (real files, natively). Simulated files keep one deterministic order of
    /// writes, which the fault-injection sweep numbers.
    fn syncs_in_parallel(&self) -> bool {
        false
    }
}

/// Creates file `name` atomically: `init` fills a fresh file under the name `temp`, which is
/// then synced and renamed to `name`, and the directory synced. A crash at any point leaves
/// `name` absent or complete, never partly written; a `temp` left behind is the caller's to
/// remove (its contents are meaningless).
pub fn create_durably<L: Location + ?Sized>(
    loc: &L,
    name: &str,
    temp: &str,
    init: impl FnOnce(&Arc<dyn ByteFile>) -> Result<()>,
) -> Result<()> {
    use crate::error::Error;
    let file = loc.create(temp)?;
    init(&file)?;
    file.sync_data().map_err(Error::io_ctx(format!(
        "syncing {}",
        loc.path_of(temp).display()
    )))?;
    drop(file);
    loc.rename(temp, name)
}

/// Creates (or truncates) the rows file `name` with `header` and no rows, durably: the header
/// is synced, then the directory, so the file's name survives a power cut.
pub fn create_rows<L: Location + ?Sized>(
    loc: &L,
    name: &str,
    header: &Header,
) -> Result<Box<dyn RowStore>> {
    let path = loc.path_of(name);
    let file = loc.create(name)?;
    write_header(file.as_ref(), &path, header)?;
    loc.sync_dir()?;
    loc.rows_over(file, path, header.layout, 0)
}

/// Opens the rows file `name`, checks its header, and cuts everything past `committed_rows` (a
/// torn tail), durably. `Ok(None)` if the file does not exist.
pub fn open_rows<L: Location + ?Sized>(
    loc: &L,
    name: &str,
    committed_rows: u64,
) -> Result<Option<(Header, Box<dyn RowStore>)>> {
    let Some(file) = loc.open(name)? else {
        return Ok(None);
    };
    let path = loc.path_of(name);
    let header = check_and_cut(file.as_ref(), &path, committed_rows)?;
    let store = loc.rows_over(file, path, header.layout, committed_rows)?;
    Ok(Some((header, store)))
}

/// Writes `header` at the start of a new rows file and makes it durable (the file's name is
/// the caller's: it syncs the directory).
fn write_header(file: &dyn ByteFile, path: &std::path::Path, header: &Header) -> Result<()> {
    use crate::error::Error;
    file.write_at(0, &header.encode())
        .and_then(|()| file.sync_data())
        .map_err(Error::io_ctx(format!(
            "writing the header of {}",
            path.display()
        )))
}

/// [`crate::Error::Corrupt`] unless `file` still holds `want` bytes: another process may have
/// cut it, and writing past a cut would leave a zero-filled hole that the next commit makes
/// durable. `when` names the operation about to run. One `fstat`.
pub(crate) fn check_not_truncated(
    file: &dyn ByteFile,
    path: &std::path::Path,
    want: u64,
    when: &str,
) -> Result<()> {
    use crate::error::Error;
    let len = file.len().map_err(Error::io_ctx(format!(
        "reading the length of {}",
        path.display()
    )))?;
    if len < want {
        return Err(Error::corrupt(
            path,
            format!(
                "truncated by someone else ({len} bytes, {want} expected, found before {when})"
            ),
        ));
    }
    Ok(())
}

/// Reads and validates the header of `file`, then cuts it to `committed_rows` rows.
fn check_and_cut(
    file: &dyn ByteFile,
    path: &std::path::Path,
    committed_rows: u64,
) -> Result<Header> {
    use crate::error::Error;
    use crate::format::HEADER_BYTES;
    let len = file.len().map_err(Error::io_ctx(format!(
        "reading the length of {}",
        path.display()
    )))?;
    if len < HEADER_BYTES as u64 {
        return Err(Error::corrupt(
            path,
            "shorter than the 64-byte header (truncated or not a SrvDB file)",
        ));
    }
    let mut bytes = [0u8; HEADER_BYTES];
    file.read_at(0, &mut bytes).map_err(Error::io_ctx(format!(
        "reading the header of {}",
        path.display()
    )))?;
    let header = Header::decode(&bytes, path)?;
    let want = header.layout.file_len(committed_rows);
    if len < want {
        return Err(Error::corrupt(
            path,
            format!(
                "holds {} whole rows but metadata.db committed {committed_rows} (rows were lost after their commit)",
                (len - HEADER_BYTES as u64) / header.layout.stride_bytes() as u64
            ),
        ));
    }
    if len > want {
        match file.set_len(want) {
            // A read-only handle reads only the committed rows and leaves the tail (rows a
            // writer appended but never committed) for the next writer to cut.
            Err(e) if crate::error::ReadOnlyRefusal::is(&e) => return Ok(header),
            cut => cut.map_err(Error::io_ctx(format!(
                "cutting the torn tail of {}",
                path.display()
            )))?,
        }
        file.sync_data()
            .map_err(Error::io_ctx(format!("syncing {}", path.display())))?;
    }
    Ok(header)
}
