//! The metadata store: ids, metadata, tombstones, the configuration and the committed row
//! count, in redb. A redb commit is the database's commit point: rows past the committed count
//! in `vectors.bin` do not exist.

mod field_index;

pub use self::field_index::{keys_at, metadata_object, IndexKey, IndexValues, LoadedIndex};

use crate::error::{Error, Result};
use crate::hnsw::graph::Graph;
use crate::hnsw::Entry;
use crate::quant::{Codebook, HnswParams, IndexKind, IndexSpec, Quantization};
use crate::storage::{create_durably, names, ByteFile, Location};
use crate::types::{EmbedderSpec, Metadata, Metric, MAX_DIMENSION};
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::io;
use std::path::Path;
use std::sync::Arc;

// Range reads for filters and `records` (issue 15).
mod ranges;

/// id -> row.
const ID_TO_ROW: TableDefinition<&str, u64> = TableDefinition::new("id_to_row");
/// row -> id (kept for tombstoned rows too, until compaction).
const ROW_TO_ID: TableDefinition<u64, &str> = TableDefinition::new("row_to_id");
/// row -> tagged metadata bytes (see `Metadata::encode`).
const ROW_META: TableDefinition<u64, &[u8]> = TableDefinition::new("row_meta");
/// row -> the text the row's vector was embedded from (documents stay out of `vectors.bin`,
/// whose rows are fixed-size). Kept in step with `row_meta` by commit, delete and compaction.
const ROW_DOC: TableDefinition<u64, &str> = TableDefinition::new("row_doc");
/// Deleted rows.
const TOMBSTONES: TableDefinition<u64, ()> = TableDefinition::new("tombstones");
/// Configuration and counters, by name.
const CONFIG: TableDefinition<&str, u64> = TableDefinition::new("config");
/// Text-valued configuration, by name: `embedder` (the model's name). A separate table because
/// `config` holds integers and changing its value type would make older files unreadable.
const CONFIG_TEXT: TableDefinition<&str, &str> = TableDefinition::new("config_text");

/// The quantized vector index: [`INDEX_RECORD`] (while one exists) and [`INDEX_LAST_GENERATION`]
/// (kept after a drop, so a generation is never issued twice).
const VECTOR_INDEX: TableDefinition<&str, &[u8]> = TableDefinition::new("vector_index");
const INDEX_RECORD: &str = "record";
const INDEX_LAST_GENERATION: &str = "last_generation";
/// An index asked for before the database had a dimension: the quantization's code (1 int8,
/// 2 binary), until the first rows are committed and the index is built.
const INDEX_PENDING: &str = "pending";
/// node (u32) -> its links on every layer ([`Graph::links_bytes`]), for an HNSW index. Written
/// in the same transaction as the rows whose insertion changed them, with the record's node
/// count and entry, so the committed graph is always the committed rows' graph.
const HNSW_LINKS: TableDefinition<u32, &[u8]> = TableDefinition::new("hnsw_links");

const KEY_FORMAT: &str = "format_version";
const KEY_DIMENSION: &str = "dimension";
const KEY_METRIC: &str = "metric";
const KEY_COMMITTED_ROWS: &str = "committed_rows";
/// The recorded text embedder: its name in `config_text`, its dimension in `config`.
const KEY_EMBEDDER: &str = "embedder";
const KEY_EMBEDDER_DIMENSION: &str = "embedder_dimension";
/// Set while a compaction's new rows live in `vectors.bin.compact` (see `Database::compact`).
const KEY_COMPACTION_PENDING: &str = "compaction_pending";

/// Version of the table layout.
const META_FORMAT: u64 = 1;

/// A file of a [`Location`] as redb's storage: every byte redb reads or writes goes through
/// the location, so the simulated one of the crash tests can fail and lose redb's writes and
/// syncs as it does the rows'. (redb's own `FileBackend` would make the same positioned calls,
/// plus a file lock that the directory's lock makes unnecessary.)
#[derive(Debug)]
struct RedbFile {
    file: Arc<dyn ByteFile>,
    /// False only while redb initialises `metadata.db.new`: its syncs (eight on a new store)
    /// buy nothing there, since the file is synced once before it is renamed into place and
    /// is removed if a crash comes first ([`create_durably`]).
    syncs: bool,
}

impl RedbFile {
    fn new(file: Arc<dyn ByteFile>) -> Self {
        RedbFile { file, syncs: true }
    }
}

impl redb::StorageBackend for RedbFile {
    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.file.read_at(offset, out)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        if self.syncs {
            self.file.sync_data()
        } else {
            Ok(())
        }
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_at(offset, data)
    }
}

/// Opens the redb store `metadata.db` of `loc`, creating it atomically if it does not exist:
/// redb initialises it under `metadata.db.new`, which is then synced and renamed into place
/// ([`create_durably`]), so a crash never leaves a half-made `metadata.db`. A leftover
/// `metadata.db.new` is removed. A `metadata.db` that is empty or all zeros where redb's header
/// goes is [`Error::Corrupt`] (it cannot be a store this protocol made), and so is one redb
/// cannot read (see [`open_guarded`]).
pub fn open_redb(loc: &dyn Location) -> Result<redb::Database> {
    open_redb_with_cache(loc, WRITER_CACHE_BYTES)
}

/// [`open_redb`] with a page cache of `cache_bytes`.
fn open_redb_with_cache(loc: &dyn Location, cache_bytes: usize) -> Result<redb::Database> {
    let path = loc.path_of(names::METADATA);
    let dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
    let create = |backend: RedbFile| {
        redb::Database::builder()
            .set_cache_size(cache_bytes)
            .create_with_backend(backend)
    };
    loc.remove(names::METADATA_NEW)?;
    let file = match loc.open(names::METADATA)? {
        Some(file) => {
            check_not_blank(file.as_ref(), &path)?;
            file
        }
        None => {
            create_durably(loc, names::METADATA, names::METADATA_NEW, |file| {
                let unsynced = RedbFile {
                    file: file.clone(),
                    syncs: false,
                };
                let db = create(unsynced)
                    .map_err(|e| map_db_error(e, &loc.path_of(names::METADATA_NEW), &dir))?;
                drop(db);
                Ok(())
            })?;
            loc.open(names::METADATA)?.ok_or_else(|| {
                Error::io(
                    format!("opening {}", path.display()),
                    io::Error::new(io::ErrorKind::NotFound, "gone right after it was created"),
                )
            })?
        }
    };
    // redb 4.6 can panic on a damaged file (an unreachable page type): that is `Corrupt`.
    open_guarded(&path, &dir, || create(RedbFile::new(file)))
}

/// A `metadata.db` that is empty or all zeros where redb's header goes is damage: the store is
/// created under a temporary name and renamed into place only once redb has initialised it, so
/// a crash during creation never leaves a blank `metadata.db`.
fn check_not_blank(file: &dyn ByteFile, path: &Path) -> Result<()> {
    let len = file.len().map_err(Error::io_ctx(format!(
        "reading the length of {}",
        path.display()
    )))?;
    let mut head = vec![0u8; len.min(4096) as usize];
    file.read_at(0, &mut head)
        .map_err(Error::io_ctx(format!("reading {}", path.display())))?;
    if head.iter().all(|&b| b == 0) {
        return Err(Error::corrupt(
            path,
            "blank file (truncated or never written metadata store)",
        ));
    }
    Ok(())
}

/// redb's page cache for the writable handle. redb's default (1 GiB) keeps every page read
/// for the life of the handle, so the pages read once at open, the HNSW graph's links
/// (170 MB at 1M rows, of which the engine keeps its own copy), stayed resident twice.
/// 64 MiB holds the trees' inner pages and a 32 MiB write buffer (half the cache: redb
/// writes a larger transaction's pages out to free space before its commit).
const WRITER_CACHE_BYTES: usize = 64 << 20;

/// redb's page cache while a writable handle loads the store at open ([`MetaStore::open`]).
/// Open reads every id and the HNSW links once; a handle keeps the pages it read, up to its
/// cache size, and there is no call to drop them: with the writer's cache, a 1M-row database
/// kept 64 MiB of pages it would not read again (the engine holds what it loaded).
const LOAD_CACHE_BYTES: usize = 4 << 20;

/// redb's page cache for a read-only handle, whose store is a copy in memory.
const READER_CACHE_BYTES: usize = 4 << 20;

/// A reader's private copy of `metadata.db`, read whole while the reader holds the directory's
/// shared lock. A reader keeps no lock once open (so a writer may come, commit and go while
/// it serves), and redb's writer rewrites freed pages in place: reading the live file later
/// could mix two commits. The copy stays the commit the reader opened until `refresh`.
#[derive(Debug)]
struct FrozenFile {
    bytes: Vec<u8>,
}

impl FrozenFile {
    /// Reads all of `file` (`path` for errors).
    fn read_whole(file: &dyn ByteFile, path: &Path) -> Result<Self> {
        let ctx = || Error::io_ctx(format!("reading {}", path.display()));
        let len = file.len().map_err(ctx())?;
        let len = usize::try_from(len).map_err(|_| {
            Error::corrupt(
                path,
                format!("{len} bytes: larger than this platform can hold"),
            )
        })?;
        let mut bytes = vec![0u8; len];
        file.read_at(0, &mut bytes).map_err(ctx())?;
        Ok(FrozenFile { bytes })
    }

    fn refused() -> io::Error {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            "a read-only handle's copy of metadata.db is never written",
        )
    }
}

impl ByteFile for FrozenFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.bytes.len() as u64)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        crate::storage::memory::read_bytes_at(&self.bytes, offset, buf)
    }
    fn write_at(&self, _offset: u64, _data: &[u8]) -> io::Result<()> {
        Err(Self::refused())
    }
    fn set_len(&self, _len: u64) -> io::Result<()> {
        Err(Self::refused())
    }
    fn sync_data(&self) -> io::Result<()> {
        Err(Self::refused())
    }
}

/// Opens a copy of the existing `metadata.db` of `loc` made now, in memory, with redb's
/// writable open, which recovers the copy if the file is marked as needing it (its writer is
/// open, or did not close cleanly): the last durable commit, as the writer's own open would
/// find it. Nothing on disk changes. For a caller that holds the writer itself and knows its
/// last commit is complete (`OpenOptions::recover_copy`).
pub fn open_redb_recovered_copy(loc: &dyn Location) -> Result<redb::Database> {
    let path = loc.path_of(names::METADATA);
    let dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
    let Some(file) = loc.open(names::METADATA)? else {
        return Err(Error::ReadOnly {
            reason: format!(
                "there is no database at {} ({} is missing; a read-only open creates nothing)",
                dir.display(),
                names::METADATA
            ),
        });
    };
    let frozen = FrozenFile::read_whole(file.as_ref(), &path)?;
    drop(file);
    check_not_blank(&frozen, &path)?;
    // A writable copy in memory: redb may recover it there, and nothing reaches the file.
    let copy: Arc<dyn ByteFile> =
        Arc::new(crate::storage::memory::MemoryFile::with_bytes(frozen.bytes));
    let mut backend = RedbFile::new(copy);
    backend.syncs = false;
    open_guarded(&path, &dir, || {
        redb::Database::builder()
            .set_cache_size(READER_CACHE_BYTES)
            .create_with_backend(backend)
    })
}

/// Opens the existing `metadata.db` of `loc` with redb's read-only open, which writes nothing
/// and refuses a store that needs repair (its last writer did not close cleanly): that is
/// [`Error::ReadOnly`], saying to open the database once for writing. Missing is the same.
///
/// redb reads a private copy of the file made now ([`FrozenFile`]): the caller holds the
/// directory's shared lock while this runs, and none once the handle is open.
pub fn open_redb_read_only(loc: &dyn Location) -> Result<redb::ReadOnlyDatabase> {
    let path = loc.path_of(names::METADATA);
    let dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
    let Some(file) = loc.open(names::METADATA)? else {
        return Err(Error::ReadOnly {
            reason: format!(
                "there is no database at {} ({} is missing; a read-only open creates nothing): \
                 open it for writing once to create it",
                dir.display(),
                names::METADATA
            ),
        });
    };
    // Read once: the blank check and redb both read the copy.
    let frozen: Arc<dyn ByteFile> = Arc::new(FrozenFile::read_whole(file.as_ref(), &path)?);
    drop(file);
    check_not_blank(frozen.as_ref(), &path)?;
    // The copy is in memory already: redb's page cache (1 GiB by default) would only copy
    // the pages read a second time.
    let open = || {
        redb::Database::builder()
            .set_cache_size(READER_CACHE_BYTES)
            .open_read_only_with_backend(RedbFile::new(frozen))
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(open)) {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(redb::DatabaseError::RepairAborted)) => Err(Error::ReadOnly {
            reason: format!(
                "{} needs recovery (its last writer did not close cleanly), which a read-only \
                 open does not do: open the database once for writing (and close it), then \
                 open the readers",
                path.display()
            ),
        }),
        Ok(Err(e)) => Err(map_db_error(e, &path, &dir)),
        Err(panic) => Err(Error::corrupt(&path, redb_panicked(&*panic))),
    }
}

/// Maps redb's open errors onto ours: a second writer is `Locked`, anything about the bytes
/// is `Corrupt`.
pub(crate) fn map_db_error(e: redb::DatabaseError, path: &Path, dir: &Path) -> Error {
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => Error::Locked {
            path: dir.to_path_buf(),
            holder: crate::error::LockHolder::Writer,
        },
        redb::DatabaseError::Storage(redb::StorageError::Io(io))
            if io.kind() != std::io::ErrorKind::InvalidData =>
        {
            Error::io(format!("opening {}", path.display()), io)
        }
        other => Error::corrupt(path, format!("not a readable metadata store ({other})")),
    }
}

/// Runs `open` (redb's `Database::create` or `open` on `path`, in database directory `dir`),
/// reporting a panic inside redb as [`Error::Corrupt`]. redb 4.6 panics on some damaged files
/// instead of returning an error: `fuzz/` found `unreachable!()` in `BtreeMut::get_helper` for
/// a page whose type byte is neither leaf nor branch, reached from `Database::create`. A damaged
/// file is input the engine must answer with a typed error. The panic message is still printed
/// by the panic hook, and a build with `panic = "abort"` still aborts.
pub fn open_guarded(
    path: &Path,
    dir: &Path,
    open: impl FnOnce() -> std::result::Result<redb::Database, redb::DatabaseError>,
) -> Result<redb::Database> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(open)) {
        Ok(opened) => opened.map_err(|e| map_db_error(e, path, dir)),
        Err(panic) => Err(Error::corrupt(path, redb_panicked(&*panic))),
    }
}

/// The `Corrupt` reason for a panic caught inside redb.
fn redb_panicked(panic: &(dyn std::any::Any + Send)) -> String {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("no message");
    format!("not a readable metadata store (redb panicked reading it: {message})")
}

impl MetaStore {
    /// Runs one redb transaction, reporting a panic inside redb on damaged pages as
    /// [`Error::Corrupt`] (see [`open_guarded`]): pages are read lazily, so a damaged page a
    /// load did not touch can still be met by a later read or write.
    fn guarded<T>(
        &self,
        ctx: &str,
        run: impl FnOnce() -> std::result::Result<T, redb::Error>,
    ) -> Result<T> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
            Ok(ran) => ran.map_err(meta_err(ctx)),
            Err(panic) => Err(Error::corrupt(&self.path, redb_panicked(&*panic))),
        }
    }
}

fn meta_err(context: &str) -> impl FnOnce(redb::Error) -> Error + '_ {
    move |e| match e {
        redb::Error::Io(io) => Error::io(context.to_owned(), io),
        redb::Error::Corrupted(msg) => Error::Metadata {
            context: context.into(),
            message: format!("corrupted: {msg}"),
        },
        other => Error::Metadata {
            context: context.into(),
            message: other.to_string(),
        },
    }
}

fn to_redb<E: Into<redb::Error>>(e: E) -> redb::Error {
    e.into()
}

/// Everything loaded from the store at open.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Dimension, if fixed.
    pub dimension: Option<u32>,
    /// Metric, if fixed.
    pub metric: Option<Metric>,
    /// Committed rows.
    pub committed_rows: u64,
    /// `row_to_id` for rows `0..committed_rows` (every row has one; checked at load).
    pub row_ids: crate::ids::RowIds,
    /// Tombstoned rows.
    pub tombstones: Vec<u64>,
    /// A compaction committed but its file rename may not have happened.
    pub compaction_pending: bool,
    /// The text embedder recorded at creation, if any.
    pub embedder: Option<EmbedderSpec>,
}

/// One commit's worth of changes.
#[derive(Debug, Default)]
pub struct CommitBatch<'a> {
    /// New rows: (row, id, metadata, document).
    pub inserts: Vec<(u64, &'a str, Option<&'a Metadata>, Option<&'a str>)>,
    /// Rows to tombstone, with the id they held.
    pub deletes: Vec<(u64, &'a str)>,
    /// Committed rows whose metadata or document changes in place.
    pub updates: Vec<RowUpdate<'a>>,
    /// The new committed row count.
    pub committed_rows: u64,
    /// Dimension and metric to record (set with the first rows).
    pub config: Option<(u32, Metric)>,
    /// The text embedder to record (set while none is recorded).
    pub embedder: Option<&'a EmbedderSpec>,
    /// A metric to record on its own: one given when the database was created, before its
    /// first rows fix the dimension (so reopening without a metric keeps it).
    pub metric: Option<Metric>,
    /// The HNSW graph's changes, when an index has one.
    pub graph: Option<GraphCommit<'a>>,
}

/// The graph's part of a commit: the links of the nodes the committed rows' insertion changed,
/// and the graph's node count and entry (into the index record).
#[derive(Debug, Clone, Copy)]
pub struct GraphCommit<'a> {
    /// The graph (every node `0..len()` committed by this batch).
    pub graph: &'a Graph,
    /// Nodes whose links changed since the last commit.
    pub dirty: &'a std::collections::BTreeSet<u32>,
}

/// An in-place change of a committed row: `None` leaves a value as it is, `Some(None)` removes
/// it.
#[derive(Debug, Clone, Copy)]
pub struct RowUpdate<'a> {
    /// The row.
    pub row: u64,
    /// Its new metadata, if it changes.
    pub metadata: Option<Option<&'a Metadata>>,
    /// Its new document, if it changes.
    pub document: Option<Option<&'a str>>,
}

/// The vector index as recorded: its codebook and generation (the number its codes file
/// must carry; see `crate::quant::codes_file`), and for an HNSW index its graph's record (the
/// links are in `hnsw_links`).
#[derive(Debug, Clone, PartialEq)]
pub struct IndexRecord {
    /// The trained codebook (its quantization is the index's); `None` for a graph that
    /// traverses the f32 rows.
    pub codebook: Option<Codebook>,
    /// The generation of the codes that match the committed rows.
    pub generation: u64,
    /// The graph, for an HNSW index.
    pub graph: Option<GraphRecord>,
}

/// What a graph is besides its links: enough to rebuild it from `hnsw_links` exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GraphRecord {
    /// Its build parameters.
    pub params: HnswParams,
    /// The seed its layers are drawn from.
    pub seed: u64,
    /// Nodes committed (rows `0..nodes`; equal to the committed rows).
    pub nodes: u64,
    /// Where a traversal enters.
    pub entry: Option<Entry>,
}

/// The format of a flat index's record (the codebook alone), written by every release that
/// has an index: still written for flat indexes, so that release reads them.
const INDEX_RECORD_FLAT: u8 = 1;
/// The format of a record with an optional codebook and an optional graph (issue 17).
const INDEX_RECORD_V2: u8 = 2;

impl IndexRecord {
    /// The record's bytes: format 1 for a flat index, format 2 otherwise.
    pub fn encode(&self) -> Vec<u8> {
        if let (Some(codebook), None) = (&self.codebook, &self.graph) {
            let mut out = vec![INDEX_RECORD_FLAT];
            out.extend_from_slice(&self.generation.to_le_bytes());
            out.extend_from_slice(&codebook.to_bytes());
            return out;
        }
        let mut out = vec![INDEX_RECORD_V2];
        out.extend_from_slice(&self.generation.to_le_bytes());
        match &self.graph {
            None => out.push(0),
            Some(g) => {
                out.push(1);
                out.extend_from_slice(&(g.params.m as u32).to_le_bytes());
                out.extend_from_slice(&(g.params.ef_construction as u32).to_le_bytes());
                out.extend_from_slice(&g.seed.to_le_bytes());
                out.extend_from_slice(&g.nodes.to_le_bytes());
                match g.entry {
                    None => out.push(0),
                    Some(e) => {
                        out.push(1);
                        out.extend_from_slice(&e.node.to_le_bytes());
                        out.push(e.level);
                    }
                }
            }
        }
        // The codebook last: its own encoding knows its length.
        match &self.codebook {
            None => out.push(0),
            Some(codebook) => {
                out.push(1);
                out.extend_from_slice(&codebook.to_bytes());
            }
        }
        out
    }

    /// A record of either format; `None` for bytes no release writes.
    pub fn decode(bytes: &[u8]) -> Option<IndexRecord> {
        let (&format, rest) = bytes.split_first()?;
        let mut r = Reader(rest);
        let generation = r.u64()?;
        match format {
            INDEX_RECORD_FLAT => Some(IndexRecord {
                generation,
                codebook: Some(Codebook::from_bytes(r.0)?),
                graph: None,
            }),
            INDEX_RECORD_V2 => {
                let graph = match r.u8()? {
                    0 => None,
                    1 => {
                        let params = HnswParams {
                            m: r.u32()? as usize,
                            ef_construction: r.u32()? as usize,
                        };
                        params.validate().ok()?;
                        let seed = r.u64()?;
                        let nodes = r.u64()?;
                        let entry = match r.u8()? {
                            0 => None,
                            1 => Some(Entry {
                                node: r.u32()?,
                                level: r.u8()?,
                            }),
                            _ => return None,
                        };
                        Some(GraphRecord {
                            params,
                            seed,
                            nodes,
                            entry,
                        })
                    }
                    _ => return None,
                };
                let codebook = match r.u8()? {
                    0 if r.0.is_empty() => None,
                    1 => Some(Codebook::from_bytes(r.0)?),
                    _ => return None,
                };
                if codebook.is_none() && graph.is_none() {
                    return None;
                }
                Some(IndexRecord {
                    codebook,
                    generation,
                    graph,
                })
            }
            _ => None,
        }
    }
}

/// Reads little-endian values off the front of a record.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
}

fn u64_value(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// Marks the index record (if any) stale inside a compaction's transaction: its codes are of
/// the old numbering, so it takes a generation no codes file carries, and open rebuilds the
/// codes unless the compaction's own rebuild records new ones first. The graph of the old
/// numbering is replaced by `graph` (built over the compacted rows) in the same transaction.
fn invalidate_index_codes(
    txn: &redb::WriteTransaction,
    graph: Option<&Graph>,
) -> std::result::Result<(), redb::Error> {
    txn.delete_table(HNSW_LINKS)?;
    let mut table = txn.open_table(VECTOR_INDEX)?;
    let record = match table.get(INDEX_RECORD)? {
        Some(v) => IndexRecord::decode(v.value()),
        None => return Ok(()),
    };
    let Some(mut record) = record else {
        return Err(redb::Error::Corrupted(
            "vector_index: undecodable index record".into(),
        ));
    };
    let last = match table.get(INDEX_LAST_GENERATION)? {
        Some(v) => u64_value(v.value()).unwrap_or(record.generation),
        None => record.generation,
    };
    record.generation = last.max(record.generation) + 1;
    if let (Some(recorded), Some(graph)) = (record.graph.as_mut(), graph) {
        write_all_links(txn, graph)?;
        recorded.nodes = graph.len();
        recorded.entry = graph.entry();
    } else if let Some(recorded) = record.graph.as_mut() {
        // No graph given: the record says it has no nodes, so open rebuilds it.
        recorded.nodes = 0;
        recorded.entry = None;
    }
    table.insert(INDEX_RECORD, record.encode().as_slice())?;
    table.insert(
        INDEX_LAST_GENERATION,
        record.generation.to_le_bytes().as_slice(),
    )?;
    Ok(())
}

/// Writes every node's links of `graph` into `hnsw_links` (emptied by the caller).
fn write_all_links(
    txn: &redb::WriteTransaction,
    graph: &Graph,
) -> std::result::Result<(), redb::Error> {
    let mut links = txn.open_table(HNSW_LINKS)?;
    for node in 0..graph.len() {
        let node = u32::try_from(node)
            .map_err(|_| redb::Error::Corrupted(format!("graph node {node} past u32")))?;
        links.insert(node, graph.links_bytes(node).as_slice())?;
    }
    Ok(())
}

/// Stages a commit's graph changes: the dirty nodes' links, and the record's node count and
/// entry.
fn stage_graph(
    txn: &redb::WriteTransaction,
    commit: &GraphCommit<'_>,
) -> std::result::Result<(), redb::Error> {
    let mut table = txn.open_table(VECTOR_INDEX)?;
    let record = table
        .get(INDEX_RECORD)?
        .and_then(|v| IndexRecord::decode(v.value()));
    let Some(mut record) = record.filter(|r| r.graph.is_some()) else {
        return Err(redb::Error::Corrupted(
            "vector_index: a graph is kept in step but no graph is recorded".into(),
        ));
    };
    if let Some(recorded) = record.graph.as_mut() {
        recorded.nodes = commit.graph.len();
        recorded.entry = commit.graph.entry();
    }
    table.insert(INDEX_RECORD, record.encode().as_slice())?;
    let mut links = txn.open_table(HNSW_LINKS)?;
    for &node in commit.dirty {
        links.insert(node, commit.graph.links_bytes(node).as_slice())?;
    }
    Ok(())
}

/// An index waiting for the first rows, as stored under [`INDEX_PENDING`]: `[1]` int8 and
/// `[2]` binary flat (the formats of the release before graphs), or `[3, q, m u32, ef u32]`
/// an HNSW graph (q: 0 none, 1 int8).
fn encode_pending(spec: &IndexSpec) -> Vec<u8> {
    match (spec.kind, spec.quantization) {
        (IndexKind::Flat, Some(Quantization::Binary)) => vec![2],
        (IndexKind::Flat, _) => vec![1],
        (IndexKind::Hnsw, q) => {
            let params = spec.hnsw.unwrap_or_default();
            let mut out = vec![3, u8::from(q.is_some())];
            out.extend_from_slice(&(params.m as u32).to_le_bytes());
            out.extend_from_slice(&(params.ef_construction as u32).to_le_bytes());
            out
        }
    }
}

fn decode_pending(bytes: &[u8]) -> Option<IndexSpec> {
    let (&tag, rest) = bytes.split_first()?;
    match (tag, rest.is_empty()) {
        (1, true) => Some(IndexSpec::flat(Quantization::Int8)),
        (2, true) => Some(IndexSpec::flat(Quantization::Binary)),
        (3, false) => {
            let mut r = Reader(rest);
            let quantization = match r.u8()? {
                0 => None,
                1 => Some(Quantization::Int8),
                _ => return None,
            };
            let params = HnswParams {
                m: r.u32()? as usize,
                ef_construction: r.u32()? as usize,
            };
            if !r.0.is_empty() || params.validate().is_err() {
                return None;
            }
            Some(IndexSpec::hnsw(quantization).with_hnsw(params))
        }
        _ => None,
    }
}

/// One surviving row of a compaction, in its new position.
#[derive(Debug)]
pub struct CompactedRow {
    /// Its id.
    pub id: String,
    /// Its metadata.
    pub metadata: Option<Metadata>,
    /// Its document.
    pub document: Option<String>,
}

/// A compaction's rewrite of the tables, staged in a redb write transaction: nothing is visible
/// until [`StagedCompaction::commit`]; dropping it abandons the rewrite.
pub struct StagedCompaction {
    txn: redb::WriteTransaction,
    ctx: String,
    path: std::path::PathBuf,
}

impl std::fmt::Debug for StagedCompaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagedCompaction").finish_non_exhaustive()
    }
}

impl StagedCompaction {
    /// Commits the rewrite durably: the compaction's commit point.
    pub fn commit(self) -> Result<()> {
        let (txn, ctx, path) = (self.txn, self.ctx, self.path);
        // A panic inside redb on damaged pages is reported as damage (see `open_guarded`).
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || txn.commit()))
            .unwrap_or_else(|panic| {
                Err(redb::CommitError::Storage(redb::StorageError::Corrupted(
                    redb_panicked(&*panic),
                )))
            })
            .map_err(|e| match redb::Error::from(e) {
                redb::Error::Corrupted(msg) => Error::corrupt(&path, msg),
                other => meta_err(&ctx)(other),
            })
    }
}

/// Why [`MetaStore::load`] failed: redb could not read the store, or a value in it is one no
/// SrvDB release writes.
enum LoadError {
    Redb(redb::Error),
    Invalid(String),
}

impl<E: Into<redb::Error>> From<E> for LoadError {
    fn from(e: E) -> Self {
        LoadError::Redb(e.into())
    }
}

/// Opens a table for reading; `None` if no commit ever created it.
fn open_or_none<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &redb::ReadTransaction,
    def: TableDefinition<K, V>,
) -> std::result::Result<Option<redb::ReadOnlyTable<K, V>>, redb::Error> {
    match txn.open_table(def) {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The configuration as stored: raw `u64`s (and the embedder's name), not yet trusted.
#[derive(Debug, Default)]
struct Config {
    /// The `config` table holds at least one key.
    any: bool,
    format: Option<u64>,
    dimension: Option<u64>,
    metric: Option<u64>,
    committed_rows: Option<u64>,
    compaction_pending: Option<u64>,
    embedder_dimension: Option<u64>,
    embedder_name: Option<String>,
}

impl Config {
    fn read(txn: &redb::ReadTransaction) -> std::result::Result<Self, redb::Error> {
        let mut c = Config::default();
        if let Some(config) = open_or_none(txn, CONFIG)? {
            let get = |key: &str| -> std::result::Result<Option<u64>, redb::Error> {
                Ok(config.get(key)?.map(|v| v.value()))
            };
            c.any = !config.is_empty()?;
            c.format = get(KEY_FORMAT)?;
            c.dimension = get(KEY_DIMENSION)?;
            c.metric = get(KEY_METRIC)?;
            c.committed_rows = get(KEY_COMMITTED_ROWS)?;
            c.compaction_pending = get(KEY_COMPACTION_PENDING)?;
            c.embedder_dimension = get(KEY_EMBEDDER_DIMENSION)?;
        }
        if let Some(text) = open_or_none(txn, CONFIG_TEXT)? {
            c.embedder_name = text.get(KEY_EMBEDDER)?.map(|v| v.value().to_owned());
        }
        Ok(c)
    }

    /// Range-checks every value against what a commit writes (`stage`, `rewrite_compacted`),
    /// with `ids_stored` the number of entries in `row_to_id`. The message names the key.
    fn check(self, ids_stored: u64) -> std::result::Result<Loaded, String> {
        let mut out = Loaded::default();
        if self.any && self.format != Some(META_FORMAT) {
            return Err(match self.format {
                Some(v) => format!(
                    "config key `{KEY_FORMAT}` is {v}, this build reads {META_FORMAT}: use a matching SrvDB release"
                ),
                None => format!("config key `{KEY_FORMAT}` is missing"),
            });
        }
        let dimension = |key: &str, d: u64| -> std::result::Result<u32, String> {
            u32::try_from(d)
                .ok()
                .filter(|d| (1..=MAX_DIMENSION).contains(d))
                .ok_or_else(|| format!("config key `{key}` is {d}, outside 1..={MAX_DIMENSION}"))
        };
        out.dimension = self
            .dimension
            .map(|d| dimension(KEY_DIMENSION, d))
            .transpose()?;
        out.metric = match self.metric {
            None => None,
            Some(code) => Some(
                u8::try_from(code)
                    .ok()
                    .and_then(Metric::from_code)
                    .ok_or_else(|| {
                        format!("config key `{KEY_METRIC}` is {code}, not a known metric code (1 cosine, 2 dot, 3 l2)")
                    })?,
            ),
        };
        // Both are recorded by the commit that stores the first rows, and never removed; a
        // metric given at creation may be recorded before them.
        if out.dimension.is_some() && out.metric.is_none() {
            return Err(format!(
                "config key `{KEY_METRIC}` is missing but `{KEY_DIMENSION}` is set"
            ));
        }
        out.committed_rows = self.committed_rows.unwrap_or(0);
        if out.committed_rows > 0 && out.dimension.is_none() {
            return Err(format!(
                "config key `{KEY_DIMENSION}` is missing but `{KEY_COMMITTED_ROWS}` is {}",
                out.committed_rows
            ));
        }
        // Every committed row has exactly one `row_to_id` entry, and no other row has one.
        if out.committed_rows != ids_stored {
            return Err(format!(
                "config key `{KEY_COMMITTED_ROWS}` is {} but table row_to_id holds {ids_stored} ids",
                out.committed_rows
            ));
        }
        out.compaction_pending = match self.compaction_pending {
            None | Some(0) => false,
            Some(1) => true,
            Some(v) => {
                return Err(format!(
                    "config key `{KEY_COMPACTION_PENDING}` is {v}, not 0 or 1"
                ))
            }
        };
        out.embedder = match (self.embedder_name, self.embedder_dimension) {
            (None, None) => None,
            (Some(name), Some(d)) => {
                let d = dimension(KEY_EMBEDDER_DIMENSION, d)?;
                if let Some(dim) = out.dimension.filter(|&dim| dim != d) {
                    return Err(format!(
                        "config key `{KEY_EMBEDDER_DIMENSION}` is {d} but `{KEY_DIMENSION}` is {dim}"
                    ));
                }
                Some(EmbedderSpec { name, dimension: d })
            }
            _ => {
                return Err(format!(
                    "config key `{KEY_EMBEDDER_DIMENSION}` and the embedder's name in config_text are not both recorded"
                ))
            }
        };
        Ok(out)
    }
}

/// redb opened for writing, or read-only (a reader's handle).
enum Redb {
    Writable(redb::Database),
    ReadOnly(redb::ReadOnlyDatabase),
}

impl std::fmt::Debug for Redb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Redb::Writable(db) => db.fmt(f),
            Redb::ReadOnly(_) => f.write_str("ReadOnlyDatabase"),
        }
    }
}

impl Redb {
    fn begin_read(&self) -> std::result::Result<redb::ReadTransaction, redb::TransactionError> {
        match self {
            Redb::Writable(db) => db.begin_read(),
            Redb::ReadOnly(db) => db.begin_read(),
        }
    }

    /// A write transaction; on a read-only store the refusal that [`Error::io`] reports as
    /// [`Error::ReadOnly`] (the engine refuses writes before they get here; this is the
    /// backstop).
    fn begin_write(&self) -> std::result::Result<redb::WriteTransaction, redb::Error> {
        match self {
            Redb::Writable(db) => db.begin_write().map_err(to_redb),
            Redb::ReadOnly(_) => Err(redb::Error::Io(crate::error::ReadOnlyRefusal::io())),
        }
    }
}

/// The redb-backed metadata store.
#[derive(Debug)]
pub struct MetaStore {
    /// Dropped by hand in `Drop`: closing runs a redb commit that can panic on damaged pages.
    db: std::mem::ManuallyDrop<Redb>,
    path: std::path::PathBuf,
    /// Opened by [`MetaStore::open`] with the loading cache (see [`LOAD_CACHE_BYTES`]).
    loading: bool,
}

impl Drop for MetaStore {
    /// Closes redb, swallowing a panic inside it (see [`open_guarded`]): redb 4.6 commits on
    /// close and panics (`assertion failed: bit < self.len` in its allocator bitmap) on some
    /// damaged files the fuzzer found, and a panic in a destructor would abort a process that
    /// only opened a corrupt database. The file is left as it was; the next open reports it.
    fn drop(&mut self) {
        // SAFETY: `db` is taken exactly once, here, and `self` is not used after `drop`; no
        // other thread can hold a reference to it while `&mut self` exists.
        let db = unsafe { std::mem::ManuallyDrop::take(&mut self.db) };
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(db)));
    }
}

impl MetaStore {
    /// Opens (or creates) the metadata store of `loc` (see [`open_redb`]) with a small page
    /// cache for loading: call [`MetaStore::ready_for_writes`] once the loading is done.
    pub fn open(loc: &dyn Location) -> Result<Self> {
        Ok(MetaStore {
            db: std::mem::ManuallyDrop::new(Redb::Writable(open_redb_with_cache(
                loc,
                LOAD_CACHE_BYTES,
            )?)),
            path: loc.path_of(names::METADATA),
            loading: true,
        })
    }

    /// The store of a writable handle reopened with the writer's page cache, empty (see
    /// [`LOAD_CACHE_BYTES`]); a store from another opener is returned as it is. The first handle closes
    /// before the second opens: redb allows one handle on a file.
    pub fn ready_for_writes(self, loc: &dyn Location) -> Result<Self> {
        if !self.loading {
            return Ok(self);
        }
        let path = self.path.clone();
        drop(self);
        Ok(MetaStore {
            db: std::mem::ManuallyDrop::new(Redb::Writable(open_redb(loc)?)),
            path,
            loading: false,
        })
    }

    /// Opens the existing metadata store of `loc` for reading only (see
    /// [`open_redb_read_only`]).
    pub fn open_read_only(loc: &dyn Location) -> Result<Self> {
        Ok(MetaStore {
            db: std::mem::ManuallyDrop::new(Redb::ReadOnly(open_redb_read_only(loc)?)),
            path: loc.path_of(names::METADATA),
            loading: false,
        })
    }

    /// Opens a recovered in-memory copy of the metadata store of `loc`, for reading (see
    /// [`open_redb_recovered_copy`]; the engine refuses writes on a read-only handle).
    pub fn open_recovered_copy(loc: &dyn Location) -> Result<Self> {
        Ok(MetaStore {
            db: std::mem::ManuallyDrop::new(Redb::Writable(open_redb_recovered_copy(loc)?)),
            path: loc.path_of(names::METADATA),
            loading: false,
        })
    }

    /// Reads everything the engine keeps in memory, range-checking every configuration value
    /// first (see [`Config::check`]): a value no SrvDB release writes is [`Error::Corrupt`]
    /// naming this file and the key, found before anything is sized from it.
    pub fn load(&self) -> Result<Loaded> {
        let ctx = format!("reading {}", self.path.display());
        let run = || -> std::result::Result<Loaded, LoadError> {
            let txn = self.db.begin_read().map_err(to_redb)?;
            let config = Config::read(&txn)?;
            let row_to_id = open_or_none(&txn, ROW_TO_ID)?;
            let tombstones = open_or_none(&txn, TOMBSTONES)?;
            let ids_stored = match &row_to_id {
                Some(t) => t.len()?,
                None => 0,
            };
            let mut out = config.check(ids_stored).map_err(LoadError::Invalid)?;
            // `committed_rows` equals the number of stored ids (checked above), and redb yields
            // them in row order: each must be the next row, or a row has none.
            let rows = out.committed_rows;
            if let Some(row_to_id) = row_to_id {
                for entry in row_to_id.iter()? {
                    let (row, id) = entry?;
                    let row = row.value();
                    let expected = out.row_ids.len() as u64;
                    if row >= rows {
                        return Err(LoadError::Invalid(format!(
                            "row_to_id: row {row} has an id but committed_rows is {rows}"
                        )));
                    }
                    if row != expected {
                        return Err(LoadError::Invalid(format!(
                            "row_to_id: row {expected} has no id"
                        )));
                    }
                    out.row_ids.push(id.value());
                }
            }
            if (out.row_ids.len() as u64) < rows {
                return Err(LoadError::Invalid(format!(
                    "row_to_id: row {} has no id",
                    out.row_ids.len()
                )));
            }
            if let Some(tombstones) = tombstones {
                for entry in tombstones.iter()? {
                    let row = entry?.0.value();
                    if row >= out.committed_rows {
                        return Err(LoadError::Invalid(format!(
                            "tombstones: tombstone for row {row} beyond the {} committed_rows",
                            out.committed_rows
                        )));
                    }
                    out.tombstones.push(row);
                }
            }
            Ok(out)
        };
        // A panic inside redb on damaged pages is reported as damage (see `open_guarded`).
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run))
            .unwrap_or_else(|panic| Err(LoadError::Invalid(redb_panicked(&*panic))));
        ran.map_err(|e| match e {
            LoadError::Invalid(msg) | LoadError::Redb(redb::Error::Corrupted(msg)) => {
                Error::corrupt(&self.path, msg)
            }
            LoadError::Redb(other) => meta_err(&ctx)(other),
        })
    }

    /// Metadata of a committed row.
    pub fn metadata(&self, row: u64) -> Result<Option<Metadata>> {
        let ctx = format!("reading metadata from {}", self.path.display());
        let run = || -> std::result::Result<Option<Vec<u8>>, redb::Error> {
            let txn = self.db.begin_read().map_err(to_redb)?;
            let Some(table) = open_or_none(&txn, ROW_META)? else {
                return Ok(None);
            };
            Ok(table.get(row)?.map(|v| v.value().to_vec()))
        };
        match self.guarded(&ctx, run)? {
            None => Ok(None),
            Some(bytes) => Metadata::decode(&bytes).map(Some).ok_or_else(|| {
                Error::corrupt(&self.path, format!("undecodable metadata for row {row}"))
            }),
        }
    }

    /// The documents of committed rows, in the order asked (`None` for rows without one).
    pub fn documents(&self, rows: &[u64]) -> Result<Vec<Option<String>>> {
        let ctx = format!("reading documents from {}", self.path.display());
        let run = || -> std::result::Result<Vec<Option<String>>, redb::Error> {
            let txn = self.db.begin_read().map_err(to_redb)?;
            let Some(table) = open_or_none(&txn, ROW_DOC)? else {
                return Ok(vec![None; rows.len()]);
            };
            rows.iter()
                .map(|&row| Ok(table.get(row)?.map(|v| v.value().to_owned())))
                .collect()
        };
        self.guarded(&ctx, run)
    }

    /// Applies one commit in one redb write transaction, and commits it durably, but only once
    /// `rows_durable` (the fsync of the rows this batch names) has succeeded: that order is the
    /// commit protocol. With `overlap`, `rows_durable` runs on another thread while the
    /// transaction is staged here, so the redb work hides behind the disk flush.
    pub fn commit(
        &self,
        batch: &CommitBatch<'_>,
        rows_durable: impl FnOnce() -> Result<()> + Send,
        overlap: bool,
    ) -> Result<()> {
        let ctx = format!("committing to {}", self.path.display());
        let stage = || -> std::result::Result<redb::WriteTransaction, redb::Error> {
            let txn = self.db.begin_write().map_err(to_redb)?;
            Self::stage(&txn, batch)?;
            Ok(txn)
        };
        let (durable, staged) = if overlap {
            std::thread::scope(|scope| {
                let flushing = scope.spawn(rows_durable);
                let staged = self.guarded(&ctx, stage);
                let durable = flushing.join().unwrap_or_else(|_| {
                    Err(Error::Poisoned {
                        reason: "the thread syncing vectors.bin panicked".into(),
                    })
                });
                (durable, staged)
            })
        } else {
            rows_durable()?;
            (Ok(()), self.guarded(&ctx, stage))
        };
        // A failed fsync drops the staged transaction uncommitted: the batch is not recorded.
        durable?;
        let txn = staged?;
        self.guarded(&ctx, move || txn.commit().map_err(redb::Error::from))
    }

    /// Writes one batch's records into `txn` (not committed).
    fn stage(
        txn: &redb::WriteTransaction,
        batch: &CommitBatch<'_>,
    ) -> std::result::Result<(), redb::Error> {
        let mut config = txn.open_table(CONFIG)?;
        config.insert(KEY_FORMAT, META_FORMAT)?;
        if let Some((dim, metric)) = batch.config {
            config.insert(KEY_DIMENSION, u64::from(dim))?;
            config.insert(KEY_METRIC, u64::from(metric.code()))?;
        }
        if let Some(metric) = batch.metric {
            config.insert(KEY_METRIC, u64::from(metric.code()))?;
        }
        config.insert(KEY_COMMITTED_ROWS, batch.committed_rows)?;
        if let Some(embedder) = batch.embedder {
            config.insert(KEY_EMBEDDER_DIMENSION, u64::from(embedder.dimension))?;
            let mut text = txn.open_table(CONFIG_TEXT)?;
            text.insert(KEY_EMBEDDER, embedder.name.as_str())?;
        }
        let mut id_to_row = txn.open_table(ID_TO_ROW)?;
        let mut row_to_id = txn.open_table(ROW_TO_ID)?;
        let mut row_meta = txn.open_table(ROW_META)?;
        let mut row_doc = txn.open_table(ROW_DOC)?;
        let mut tombstones = txn.open_table(TOMBSTONES)?;
        // The field indexes change with the metadata, in this same transaction.
        let mut indexes = field_index::IndexWriter::open(txn)?;
        for (row, id, meta, doc) in &batch.inserts {
            row_to_id.insert(*row, *id)?;
            if let Some(meta) = meta {
                row_meta.insert(*row, meta.encode().as_slice())?;
                indexes.add(*row, Some(meta))?;
            }
            if let Some(doc) = doc {
                row_doc.insert(*row, *doc)?;
            }
        }
        // Ids go in in key order, so redb fills its leaves left to right instead of
        // touching a random leaf per id; the sort is stable, so an id inserted twice in one
        // batch (upserted while uncommitted) keeps its later row.
        let mut by_id: Vec<(&str, u64)> = batch.inserts.iter().map(|i| (i.1, i.0)).collect();
        by_id.sort_by(|a, b| a.0.cmp(b.0));
        for (id, row) in by_id {
            id_to_row.insert(id, row)?;
        }
        for update in &batch.updates {
            let row = update.row;
            if let Some(meta) = update.metadata {
                if !indexes.is_empty() {
                    let old = Self::stored_metadata(&row_meta, row)?;
                    indexes.remove(row, old.as_ref())?;
                    indexes.add(row, meta)?;
                }
                match meta {
                    Some(meta) => row_meta.insert(row, meta.encode().as_slice())?,
                    None => row_meta.remove(row)?,
                };
            }
            match update.document {
                Some(Some(doc)) => {
                    row_doc.insert(row, doc)?;
                }
                Some(None) => {
                    row_doc.remove(row)?;
                }
                None => {}
            }
        }
        for (row, id) in &batch.deletes {
            // Only unmap the id if it still points at this row (an upsert may have
            // re-pointed it in the same batch).
            let current = id_to_row.get(*id)?.map(|v| v.value());
            if current == Some(*row) {
                id_to_row.remove(*id)?;
            }
            if !indexes.is_empty() {
                let old = Self::stored_metadata(&row_meta, *row)?;
                indexes.remove(*row, old.as_ref())?;
            }
            row_meta.remove(*row)?;
            row_doc.remove(*row)?;
            tombstones.insert(*row, ())?;
        }
        if let Some(graph) = &batch.graph {
            stage_graph(txn, graph)?;
        }
        Ok(())
    }

    /// The metadata `row_meta` holds for `row` inside a write transaction.
    fn stored_metadata(
        row_meta: &redb::Table<'_, u64, &[u8]>,
        row: u64,
    ) -> std::result::Result<Option<Metadata>, redb::Error> {
        match row_meta.get(row)? {
            None => Ok(None),
            Some(bytes) => Metadata::decode(bytes.value()).map(Some).ok_or_else(|| {
                redb::Error::Corrupted(format!("undecodable metadata for row {row}"))
            }),
        }
    }

    /// Stages (does not commit) the replacement of every table with a compacted copy: `rows`
    /// are (id, metadata, document) of the surviving rows in their new order. The commit marks
    /// the compaction pending until `finish_compaction`. The embedder record (`config_text`) is
    /// kept as it is. Staging is the long part; readers keep reading the old tables meanwhile,
    /// and the caller commits when it is ready to switch its own state with it.
    ///
    /// `graph` is the HNSW graph built over the compacted rows: its links replace the old
    /// numbering's in the same transaction.
    pub fn stage_compacted(
        &self,
        rows: &[CompactedRow],
        dim: u32,
        metric: Metric,
        graph: Option<&Graph>,
    ) -> Result<StagedCompaction> {
        let ctx = format!("rewriting {} after compaction", self.path.display());
        let run = || -> std::result::Result<redb::WriteTransaction, redb::Error> {
            let txn = self.db.begin_write().map_err(to_redb)?;
            txn.delete_table(ID_TO_ROW)?;
            txn.delete_table(ROW_TO_ID)?;
            txn.delete_table(ROW_META)?;
            txn.delete_table(ROW_DOC)?;
            txn.delete_table(TOMBSTONES)?;
            {
                let mut config = txn.open_table(CONFIG)?;
                config.insert(KEY_FORMAT, META_FORMAT)?;
                config.insert(KEY_DIMENSION, u64::from(dim))?;
                config.insert(KEY_METRIC, u64::from(metric.code()))?;
                config.insert(KEY_COMMITTED_ROWS, rows.len() as u64)?;
                config.insert(KEY_COMPACTION_PENDING, 1)?;
                let mut id_to_row = txn.open_table(ID_TO_ROW)?;
                let mut row_to_id = txn.open_table(ROW_TO_ID)?;
                let mut row_meta = txn.open_table(ROW_META)?;
                let mut row_doc = txn.open_table(ROW_DOC)?;
                let _ = txn.open_table(TOMBSTONES)?;
                for (row, survivor) in rows.iter().enumerate() {
                    let row = row as u64;
                    id_to_row.insert(survivor.id.as_str(), row)?;
                    row_to_id.insert(row, survivor.id.as_str())?;
                    if let Some(meta) = &survivor.metadata {
                        row_meta.insert(row, meta.encode().as_slice())?;
                    }
                    if let Some(doc) = &survivor.document {
                        row_doc.insert(row, doc.as_str())?;
                    }
                }
            }
            field_index::rebuild_compacted(&txn, rows)?;
            invalidate_index_codes(&txn, graph)?;
            Ok(txn)
        };
        let txn = self.guarded(&ctx, run)?;
        Ok(StagedCompaction {
            txn,
            ctx,
            path: self.path.clone(),
        })
    }

    /// Indexes metadata field `field` (see [`field_index`]) from every committed row, in one
    /// durable transaction; returns the index built (value -> sorted rows), or `None` when the
    /// field was indexed already. Deleted rows hold no metadata in `row_meta`, so only live
    /// rows are indexed.
    pub fn create_field_index(&self, field: &str) -> Result<Option<IndexValues>> {
        let ctx = format!("indexing field {field:?} in {}", self.path.display());
        let run = || -> std::result::Result<Option<IndexValues>, redb::Error> {
            let txn = self.db.begin_write().map_err(to_redb)?;
            let mut rows = Vec::new();
            {
                let row_meta = txn.open_table(ROW_META)?;
                for entry in row_meta.iter()? {
                    let (row, bytes) = entry?;
                    let row = row.value();
                    let meta = Metadata::decode(bytes.value()).ok_or_else(|| {
                        redb::Error::Corrupted(format!("undecodable metadata for row {row}"))
                    })?;
                    rows.push((row, meta));
                }
            }
            let built = field_index::create(&txn, field, rows.iter().map(|(r, m)| (*r, m)))?;
            if built.is_some() {
                txn.commit()?;
            }
            Ok(built)
        };
        self.guarded(&ctx, run)
    }

    /// Stops indexing `field`, durably; false if it was not indexed.
    pub fn drop_field_index(&self, field: &str) -> Result<bool> {
        let ctx = format!("dropping the index of {field:?} in {}", self.path.display());
        let run = || -> std::result::Result<bool, redb::Error> {
            let txn = self.db.begin_write().map_err(to_redb)?;
            let existed = field_index::drop(&txn, field)?;
            txn.commit()?;
            Ok(existed)
        };
        self.guarded(&ctx, run)
    }

    /// Every field index, value -> rows; a row at or past `committed_rows` (or a value this
    /// code never writes) is [`Error::Corrupt`].
    pub fn load_field_indexes(&self, committed_rows: u64) -> Result<Vec<LoadedIndex>> {
        let ctx = format!("reading the field indexes of {}", self.path.display());
        let run = || match &*self.db {
            Redb::Writable(db) => field_index::load(db, committed_rows),
            Redb::ReadOnly(db) => field_index::load(db, committed_rows),
        };
        // A panic inside redb on damaged pages is reported as damage (see `open_guarded`).
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
            Ok(Ok(Ok(loaded))) => Ok(loaded),
            Ok(Ok(Err(damage))) => Err(Error::corrupt(&self.path, damage)),
            Ok(Err(redb::Error::Corrupted(msg))) => Err(Error::corrupt(&self.path, msg)),
            Ok(Err(e)) => Err(meta_err(&ctx)(e)),
            Err(panic) => Err(Error::corrupt(&self.path, redb_panicked(&*panic))),
        }
    }

    /// Clears the compaction-pending mark once `vectors.bin` is the compacted file.
    pub fn finish_compaction(&self) -> Result<()> {
        let ctx = format!("finishing compaction in {}", self.path.display());
        let run = || -> std::result::Result<(), redb::Error> {
            let txn = self.db.begin_write().map_err(to_redb)?;
            {
                let mut config = txn.open_table(CONFIG)?;
                config.remove(KEY_COMPACTION_PENDING)?;
            }
            txn.commit()?;
            Ok(())
        };
        self.guarded(&ctx, run)
    }

    /// The quantized index's record, if one exists; a record this build cannot read is
    /// [`Error::Corrupt`].
    pub fn vector_index(&self) -> Result<Option<IndexRecord>> {
        let ctx = format!("reading the vector index record of {}", self.path.display());
        let run = || -> std::result::Result<Option<Vec<u8>>, redb::Error> {
            let txn = self.db.begin_read().map_err(to_redb)?;
            let Some(table) = open_or_none(&txn, VECTOR_INDEX)? else {
                return Ok(None);
            };
            Ok(table.get(INDEX_RECORD)?.map(|v| v.value().to_vec()))
        };
        match self.guarded(&ctx, run)? {
            None => Ok(None),
            Some(bytes) => IndexRecord::decode(&bytes).map(Some).ok_or_else(|| {
                Error::corrupt(
                    &self.path,
                    "vector_index: the index record is not one this build writes: drop_index() and create it again",
                )
            }),
        }
    }

    /// A generation no index record or codes file has carried: one past the last issued.
    pub fn next_index_generation(&self) -> Result<u64> {
        let ctx = format!("reading the vector index record of {}", self.path.display());
        let run = || -> std::result::Result<u64, redb::Error> {
            let txn = self.db.begin_read().map_err(to_redb)?;
            let Some(table) = open_or_none(&txn, VECTOR_INDEX)? else {
                return Ok(1);
            };
            let last = table
                .get(INDEX_LAST_GENERATION)?
                .and_then(|v| u64_value(v.value()))
                .unwrap_or(0);
            let current = table
                .get(INDEX_RECORD)?
                .and_then(|v| IndexRecord::decode(v.value()))
                .map_or(0, |r| r.generation);
            Ok(last.max(current) + 1)
        };
        self.guarded(&ctx, run)
    }

    /// The index waiting for the first rows (see [`MetaStore::set_pending_vector_index`]).
    pub fn pending_vector_index(&self) -> Result<Option<IndexSpec>> {
        let ctx = format!("reading the vector index record of {}", self.path.display());
        let run = || -> std::result::Result<Option<Vec<u8>>, redb::Error> {
            let txn = self.db.begin_read().map_err(to_redb)?;
            let Some(table) = open_or_none(&txn, VECTOR_INDEX)? else {
                return Ok(None);
            };
            Ok(table.get(INDEX_PENDING)?.map(|v| v.value().to_vec()))
        };
        match self.guarded(&ctx, run)? {
            None => Ok(None),
            Some(bytes) => decode_pending(&bytes).map(Some).ok_or_else(|| {
                Error::corrupt(
                    &self.path,
                    "vector_index: the pending index is not one this build writes: drop_index() and create it again",
                )
            }),
        }
    }

    /// Records, durably, that the index `spec` is to be built once the first rows are
    /// committed (the database has no dimension yet, so no codebook or graph can exist).
    pub fn set_pending_vector_index(&self, spec: &IndexSpec) -> Result<()> {
        let ctx = format!("recording the vector index in {}", self.path.display());
        let value = encode_pending(spec);
        let run = || -> std::result::Result<(), redb::Error> {
            let txn = self.db.begin_write().map_err(to_redb)?;
            {
                let mut table = txn.open_table(VECTOR_INDEX)?;
                table.insert(INDEX_PENDING, value.as_slice())?;
            }
            txn.commit()?;
            Ok(())
        };
        self.guarded(&ctx, run)
    }

    /// Records `record` as the index (replacing any), or removes the index with `None`, in one
    /// durable transaction. With `links`, `hnsw_links` is replaced by every node's links of
    /// that graph (the record's graph must be that graph's); a drop removes them.
    pub fn set_vector_index(
        &self,
        record: Option<&IndexRecord>,
        links: Option<&Graph>,
    ) -> Result<()> {
        let ctx = format!("recording the vector index in {}", self.path.display());
        let run = || -> std::result::Result<(), redb::Error> {
            let txn = self.db.begin_write().map_err(to_redb)?;
            if record.is_none() || record.is_some_and(|r| r.graph.is_none()) || links.is_some() {
                txn.delete_table(HNSW_LINKS)?;
            }
            if let Some(graph) = links {
                write_all_links(&txn, graph)?;
            }
            {
                let mut table = txn.open_table(VECTOR_INDEX)?;
                match record {
                    Some(record) => {
                        let last = table
                            .get(INDEX_LAST_GENERATION)?
                            .and_then(|v| u64_value(v.value()))
                            .unwrap_or(0)
                            .max(record.generation);
                        table.insert(INDEX_RECORD, record.encode().as_slice())?;
                        table.insert(INDEX_LAST_GENERATION, last.to_le_bytes().as_slice())?;
                    }
                    None => {
                        table.remove(INDEX_RECORD)?;
                    }
                }
                // A recorded index supersedes one waiting for rows; a drop removes both.
                table.remove(INDEX_PENDING)?;
            }
            txn.commit()?;
            Ok(())
        };
        self.guarded(&ctx, run)
    }

    /// Runs `load` over every stored node's links (`hnsw_links`, in node order), read in one
    /// transaction; a redb failure mid-way reaches `load` as an error item.
    pub fn with_hnsw_links<T>(
        &self,
        load: impl FnOnce(&mut dyn Iterator<Item = Result<(u32, Vec<u8>)>>) -> Result<T>,
    ) -> Result<T> {
        let ctx = format!("reading the graph's links from {}", self.path.display());
        let run = || -> Result<T> {
            let txn = self
                .db
                .begin_read()
                .map_err(|e| meta_err(&ctx)(to_redb(e)))?;
            let table = open_or_none(&txn, HNSW_LINKS).map_err(meta_err(&ctx))?;
            let Some(table) = table else {
                return load(&mut std::iter::empty());
            };
            let iter = table.iter().map_err(|e| meta_err(&ctx)(to_redb(e)))?;
            let mut items = iter.map(|entry| {
                entry
                    .map(|(node, links)| (node.value(), links.value().to_vec()))
                    .map_err(|e| meta_err(&ctx)(to_redb(e)))
            });
            load(&mut items)
        };
        // A panic inside redb on damaged pages is reported as damage (see `open_guarded`).
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(run))
            .unwrap_or_else(|panic| Err(Error::corrupt(&self.path, redb_panicked(&*panic))))
    }

    /// Documents of all committed rows (compaction).
    pub fn all_documents(&self) -> Result<std::collections::HashMap<u64, String>> {
        let ctx = format!("reading documents from {}", self.path.display());
        let run = || -> std::result::Result<std::collections::HashMap<u64, String>, redb::Error> {
            let txn = self.db.begin_read().map_err(to_redb)?;
            let Some(table) = open_or_none(&txn, ROW_DOC)? else {
                return Ok(Default::default());
            };
            let mut out = std::collections::HashMap::new();
            for entry in table.iter()? {
                let (k, v) = entry?;
                out.insert(k.value(), v.value().to_owned());
            }
            Ok(out)
        };
        self.guarded(&ctx, run)
    }

    /// Metadata of many committed rows (compaction).
    pub fn all_metadata(&self) -> Result<std::collections::HashMap<u64, Metadata>> {
        let ctx = format!("reading metadata from {}", self.path.display());
        let run = || -> std::result::Result<Vec<(u64, Vec<u8>)>, redb::Error> {
            let txn = self.db.begin_read().map_err(to_redb)?;
            let Some(table) = open_or_none(&txn, ROW_META)? else {
                return Ok(Vec::new());
            };
            let mut out = Vec::new();
            for entry in table.iter()? {
                let (k, v) = entry?;
                out.push((k.value(), v.value().to_vec()));
            }
            Ok(out)
        };
        let raw = self.guarded(&ctx, run)?;
        raw.into_iter()
            .map(|(row, bytes)| {
                Metadata::decode(&bytes).map(|m| (row, m)).ok_or_else(|| {
                    Error::corrupt(&self.path, format!("undecodable metadata for row {row}"))
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &std::path::Path) -> MetaStore {
        let loc = crate::storage::fs::FsLocation::new(dir, crate::types::StorageKind::File)
            .expect("location");
        MetaStore::open(&loc).expect("create")
    }

    fn codebook() -> Codebook {
        let rows = [[1.0f32, -2.0, 0.5, 3.0], [0.0, 1.0, -1.0, 2.0]];
        Codebook::train(
            Quantization::Int8,
            Metric::Dot,
            4,
            rows.iter().map(|r| (&r[..], 1.0)),
        )
    }

    /// A record as the release before graphs wrote it (format 1: the byte 1, the generation,
    /// the codebook) still decodes, and a flat record is still written that way.
    #[test]
    fn a_flat_record_of_the_previous_release_decodes_and_is_written_the_same() {
        let mut old = vec![1u8];
        old.extend_from_slice(&7u64.to_le_bytes());
        old.extend_from_slice(&codebook().to_bytes());
        let record = IndexRecord::decode(&old).expect("format 1 decodes");
        assert_eq!(record.generation, 7);
        assert_eq!(record.codebook.as_ref(), Some(&codebook()));
        assert_eq!(record.graph, None);
        assert_eq!(record.encode(), old);
    }

    /// A graph's record round-trips with and without codes and an entry; cut or padded bytes
    /// and impossible parameters do not decode.
    #[test]
    fn a_graph_record_round_trips_and_damage_does_not_decode() {
        let graph = GraphRecord {
            params: HnswParams {
                m: 12,
                ef_construction: 150,
            },
            seed: 0x0123_4567_89ab_cdef,
            nodes: 1_000_001,
            entry: Some(Entry {
                node: 77_000,
                level: 5,
            }),
        };
        for codebook in [None, Some(codebook())] {
            for entry in [None, graph.entry] {
                let record = IndexRecord {
                    codebook: codebook.clone(),
                    generation: 3,
                    graph: Some(GraphRecord { entry, ..graph }),
                };
                let bytes = record.encode();
                assert_eq!(bytes[0], 2);
                assert_eq!(IndexRecord::decode(&bytes).as_ref(), Some(&record));
                for cut in 1..bytes.len() {
                    assert_eq!(IndexRecord::decode(&bytes[..cut]), None, "cut at {cut}");
                }
                let mut padded = bytes.clone();
                padded.push(0);
                if codebook.is_none() {
                    assert_eq!(IndexRecord::decode(&padded), None);
                }
            }
        }
        let bad = IndexRecord {
            codebook: None,
            generation: 1,
            graph: Some(GraphRecord {
                params: HnswParams {
                    m: 1,
                    ef_construction: 10,
                },
                ..graph
            }),
        };
        assert_eq!(IndexRecord::decode(&bad.encode()), None, "m = 1 is invalid");
        assert_eq!(IndexRecord::decode(&[9, 0, 0, 0, 0, 0, 0, 0, 0]), None);
    }

    /// A pending index round-trips; the previous release's one-byte values still decode.
    #[test]
    fn a_pending_index_round_trips_and_the_old_values_decode() {
        assert_eq!(
            decode_pending(&[1]),
            Some(IndexSpec::flat(Quantization::Int8))
        );
        assert_eq!(
            decode_pending(&[2]),
            Some(IndexSpec::flat(Quantization::Binary))
        );
        let params = HnswParams {
            m: 24,
            ef_construction: 300,
        };
        for spec in [
            IndexSpec::flat(Quantization::Int8),
            IndexSpec::flat(Quantization::Binary),
            IndexSpec::hnsw(None).with_hnsw(params),
            IndexSpec::hnsw(Some(Quantization::Int8)).with_hnsw(params),
        ] {
            assert_eq!(decode_pending(&encode_pending(&spec)), Some(spec));
        }
        assert_eq!(decode_pending(&[3, 0]), None);
        assert_eq!(decode_pending(&[4]), None);
    }

    /// A field index naming a row the store never committed is damage, found at load.
    #[test]
    fn an_index_entry_beyond_the_committed_rows_is_corrupt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let meta = store(dir.path());
        let json = Metadata::from_text(r#"{"k": "x"}"#);
        let batch = CommitBatch {
            inserts: vec![(0, "a", Some(&json), None)],
            committed_rows: 1,
            config: Some((4, Metric::Dot)),
            ..CommitBatch::default()
        };
        meta.commit(&batch, || Ok(()), false).expect("commit");
        let built = meta.create_field_index("k").expect("index").expect("new");
        assert_eq!(built, vec![(IndexKey::String("x".into()), vec![0])]);
        assert_eq!(meta.load_field_indexes(1).expect("load").len(), 1);
        let txn = meta.db.begin_write().expect("txn");
        {
            let name = "field_index/k";
            let mut t = txn
                .open_multimap_table(redb::MultimapTableDefinition::<&[u8], u64>::new(name))
                .expect("table");
            t.insert(IndexKey::String("y".into()).encode().as_slice(), 7)
                .expect("insert");
        }
        txn.commit().expect("commit");
        let e = meta.load_field_indexes(1).expect_err("row 7 of 1");
        assert!(
            matches!(&e, Error::Corrupt { reason, .. } if reason.contains("row 7")),
            "{e:?}"
        );
    }

    /// Ids are written in key order; an id inserted twice in one batch (upserted before its
    /// commit, its first row deleted) must map to its later row, not be removed.
    #[test]
    fn an_id_inserted_twice_in_one_batch_maps_to_its_later_row() {
        let dir = tempfile::tempdir().expect("tempdir");
        let meta = store(dir.path());
        let batch = CommitBatch {
            inserts: vec![
                (0, "b", None, None),
                (1, "c", None, None),
                (2, "a", None, None),
                (3, "b", None, None),
            ],
            deletes: vec![(0, "b")],
            committed_rows: 4,
            config: Some((4, Metric::Dot)),
            ..CommitBatch::default()
        };
        meta.commit(&batch, || Ok(()), false).expect("commit");
        let txn = meta.db.begin_read().expect("txn");
        let table = txn.open_table(ID_TO_ROW).expect("table");
        let mapped: Vec<(String, u64)> = table
            .iter()
            .expect("iter")
            .map(|entry| {
                let (id, row) = entry.expect("entry");
                (id.value().to_owned(), row.value())
            })
            .collect();
        let want = [("a", 2), ("b", 3), ("c", 1)].map(|(id, row)| (id.to_owned(), row));
        assert_eq!(mapped, want);
    }

    /// The commit protocol, with and without the overlapped fsync: a batch is recorded only if
    /// the rows it names were made durable first.
    #[test]
    fn a_batch_is_recorded_only_after_its_rows_are_durable() {
        for overlap in [false, true] {
            let dir = tempfile::tempdir().expect("tempdir");
            let meta = store(dir.path());
            let batch = |rows: u64| CommitBatch {
                inserts: vec![(rows - 1, "x", None, None)],
                deletes: Vec::new(),
                updates: Vec::new(),
                committed_rows: rows,
                config: Some((4, Metric::Dot)),
                embedder: None,
                metric: None,
                graph: None,
            };
            let synced = std::sync::atomic::AtomicBool::new(false);
            meta.commit(
                &batch(1),
                || {
                    synced.store(true, std::sync::atomic::Ordering::SeqCst);
                    Ok(())
                },
                overlap,
            )
            .expect("commit");
            assert!(synced.load(std::sync::atomic::Ordering::SeqCst));
            assert_eq!(meta.load().expect("load").committed_rows, 1);

            let failed = meta.commit(
                &batch(2),
                || {
                    Err(Error::io(
                        "syncing vectors.bin",
                        std::io::Error::other("disk gone"),
                    ))
                },
                overlap,
            );
            assert!(matches!(failed, Err(Error::Io { .. })), "overlap={overlap}");
            assert_eq!(
                meta.load().expect("load").committed_rows,
                1,
                "overlap={overlap}: a batch was recorded although its rows were not durable"
            );
        }
    }
}
