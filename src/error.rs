//! One error type for the engine. Every message states what was wrong and what to do next,
//! because an embedded database's errors surface in the user's program, not in a server log.

use std::path::PathBuf;

/// Result alias used throughout the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the engine can report. `#[non_exhaustive]` so cases can be added; the WIT
/// `error` variant and the Python exception tree mirror these cases and fall back to their
/// parent for new ones.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A vector (or query) has the wrong number of components.
    #[error("dimension mismatch{}: expected {expected}, got {got}; every vector of a database has its dimension (re-embed with the database's model or open another database)", at_index(*.index))]
    DimensionMismatch {
        /// The database's dimension.
        expected: u32,
        /// The length that was passed.
        got: usize,
        /// Position of the offending vector in the batch, if it came from one.
        index: Option<usize>,
    },
    /// `add` was given an id that already exists (in the database or earlier in the batch).
    #[error("duplicate id {id:?}{}: each id may appear once in a batch, and add refuses one the database holds (upsert replaces it)", at_index(*.index))]
    DuplicateId {
        /// The repeated id.
        id: String,
        /// Position in the batch.
        index: Option<usize>,
    },
    /// The id is not in the database.
    #[error("id {id:?} not found")]
    NotFound {
        /// The id that was asked for.
        id: String,
    },
    /// Input the engine cannot store or answer: NaN, empty id, lengths that disagree, ...
    #[error("invalid input{}: {reason}", at_index(*.index))]
    InvalidInput {
        /// What was wrong and how to fix it.
        reason: String,
        /// Position in the batch, if any.
        index: Option<usize>,
    },
    /// A `where` / `where_document` filter that is not valid in the dialect (unknown operator,
    /// wrong operand type, too deep or too long). Also invalid input.
    #[error("invalid filter at {part}: {reason}")]
    InvalidFilter {
        /// The offending part, as a path into the filter (e.g. `where.$and[1].year.$gt`).
        part: String,
        /// What was wrong and how to fix it.
        reason: String,
    },
    /// A file is not a SrvDB file, is from a newer format, or is damaged.
    #[error("corrupt database file {}: {reason}; restore it from a backup or open another directory", file.display())]
    Corrupt {
        /// The file at fault.
        file: PathBuf,
        /// What was found.
        reason: String,
    },
    /// Another process (or another handle in this process) holds the database's lock: a
    /// writer, which keeps everyone else out, or a reader that is opening it, which keeps
    /// writers out for that moment.
    #[error("{}", locked_message(path, *.holder))]
    Locked {
        /// The database directory.
        path: PathBuf,
        /// Who holds the lock, as far as the refused open can tell.
        holder: LockHolder,
    },
    /// A write on a handle opened read-only, or a read-only open of a database that would
    /// have to be changed first (missing, or left by a writer that did not close cleanly).
    #[error("read-only: {reason}")]
    ReadOnly {
        /// What was refused and what to do instead.
        reason: String,
    },
    /// An operating-system I/O error.
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What the engine was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An error from the metadata store (redb) that is not corruption.
    #[error("metadata store error while {context}: {message}")]
    Metadata {
        /// What the engine was doing.
        context: String,
        /// redb's message.
        message: String,
    },
    /// A database created for one text embedder was opened with another (or holds vectors of
    /// an unrecorded model): their vectors are not comparable.
    #[error("embedder mismatch: the database holds vectors of {stored}, but {asked} was given; open it with the same embedder, or use another directory for the new model")]
    EmbedderMismatch {
        /// What the database recorded (`"no recorded embedder"` for plain vectors).
        stored: String,
        /// What the caller asked for.
        asked: String,
    },
    /// The text embedder's model files are missing or cannot be used.
    #[error("text model at {}: {reason}", path.display())]
    Model {
        /// The model folder (or file) at fault.
        path: PathBuf,
        /// What was wrong and what to do (e.g. which command installs the model).
        reason: String,
    },
    /// A failed write left the in-memory state unknown; the handle refuses further writes.
    #[error("the database handle is poisoned by an earlier failed write ({reason}): drop it and open the database again, which recovers the last commit")]
    Poisoned {
        /// The failure that poisoned the handle.
        reason: String,
    },
    /// The sandbox the engine runs in stopped a call or could not start (only a sandboxed
    /// engine, such as `srvdb_host::SandboxedDatabase`, reports these).
    #[error("{}", sandbox_message(*.failure, .detail))]
    Sandbox {
        /// Which limit or failure.
        failure: SandboxFailure,
        /// What the runtime reported.
        detail: String,
    },
}

/// Who holds a database's lock when an open is refused with [`Error::Locked`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockHolder {
    /// A handle opened for writing (the lock is exclusive).
    Writer,
    /// One or more handles opened read-only (the lock is shared among them).
    Readers,
}

impl LockHolder {
    /// A short lowercase name (`writer`, `readers`).
    pub fn name(self) -> &'static str {
        match self {
            LockHolder::Writer => "writer",
            LockHolder::Readers => "readers",
        }
    }
}

fn locked_message(path: &std::path::Path, holder: LockHolder) -> String {
    let path = path.display();
    match holder {
        LockHolder::Writer => format!(
            "database {path} is locked by a writer (another handle or process has it open for \
             writing): close that handle first; read-only opens are refused while it is open"
        ),
        LockHolder::Readers => format!(
            "database {path} is locked by readers (a read-only handle, in this or another \
             process, is opening or refreshing it; readers hold the lock only for that): try \
             again in a moment"
        ),
    }
}

/// The [`Error::ReadOnly`] reason for a write on a read-only handle.
pub(crate) const WRITE_ON_READER: &str = "this handle was opened read-only and cannot change \
     the database: open it again without read_only to write (a writer opens beside readers)";

/// Why a sandboxed call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SandboxFailure {
    /// The guest ran out of its fuel budget or its memory cap; the instance was reset and the
    /// database reopened at its last commit.
    Limit,
    /// The guest trapped (a bug); the instance was reset and the database reopened.
    Trap,
    /// The call ran past the per-call deadline; the handle is closed.
    Deadline,
    /// The component could not be loaded or instantiated.
    Setup,
}

impl SandboxFailure {
    /// A short lowercase name (`limit`, `trap`, `deadline`, `setup`).
    pub fn name(self) -> &'static str {
        match self {
            SandboxFailure::Limit => "limit",
            SandboxFailure::Trap => "trap",
            SandboxFailure::Deadline => "deadline",
            SandboxFailure::Setup => "setup",
        }
    }
}

fn sandbox_message(failure: SandboxFailure, detail: &str) -> String {
    match failure {
        SandboxFailure::Limit => format!("sandbox limit reached: {detail}; the instance was reset and the database reopened at its last commit"),
        SandboxFailure::Trap => format!("the sandboxed engine trapped: {detail}; the instance was reset and the database reopened at its last commit"),
        SandboxFailure::Deadline => format!("the sandboxed call ran past its deadline ({detail}) and was stopped: drop this handle and open the database again (it reopens at its last commit), or raise the sandbox's per-call deadline"),
        SandboxFailure::Setup => format!("cannot start the sandbox: {detail}"),
    }
}

fn at_index(index: Option<usize>) -> String {
    index.map(|i| format!(" at index {i}")).unwrap_or_default()
}

/// The payload of the I/O error a read-only handle's files return for a write, a resize or a
/// sync: [`Error::io`] turns it into [`Error::ReadOnly`], so a change that slipped past the
/// checks at the API (at open: a recovery the last writer left to do) is reported as such.
#[derive(Debug)]
pub(crate) struct ReadOnlyRefusal;

impl std::fmt::Display for ReadOnlyRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "a read-only handle cannot change the database's files; at open this means the \
             last writer did not close cleanly and left recovery to do: open the database once \
             for writing (and close it), then open the readers",
        )
    }
}

impl std::error::Error for ReadOnlyRefusal {}

impl ReadOnlyRefusal {
    /// The I/O error carrying the refusal.
    pub(crate) fn io() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::ReadOnlyFilesystem, ReadOnlyRefusal)
    }

    /// True when `e` is the refusal [`ReadOnlyRefusal::io`] made.
    pub(crate) fn is(e: &std::io::Error) -> bool {
        e.get_ref()
            .is_some_and(|inner| inner.is::<ReadOnlyRefusal>())
    }
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        if ReadOnlyRefusal::is(&source) {
            return Error::ReadOnly {
                reason: format!("{}: {ReadOnlyRefusal}", context.into()),
            };
        }
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        Error::InvalidInput {
            reason: reason.into(),
            index: None,
        }
    }

    pub(crate) fn corrupt(file: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            file: file.into(),
            reason: reason.into(),
        }
    }

    /// Helper for `map_err` on an I/O result.
    pub(crate) fn io_ctx(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Error::io(context, source)
    }
}

/// `std::io::ErrorKind`s by name, for carrying an I/O error across a boundary that has no
/// `ErrorKind` (the WIT `io-error` record): the sandboxed engine's host rebuilds the kind
/// the guest saw. Kinds not listed travel as `"other"`.
const IO_KINDS: &[(std::io::ErrorKind, &str)] = {
    use std::io::ErrorKind as K;
    &[
        (K::NotFound, "not-found"),
        (K::PermissionDenied, "permission-denied"),
        (K::AlreadyExists, "already-exists"),
        (K::WouldBlock, "would-block"),
        (K::NotADirectory, "not-a-directory"),
        (K::IsADirectory, "is-a-directory"),
        (K::DirectoryNotEmpty, "directory-not-empty"),
        (K::ReadOnlyFilesystem, "read-only-filesystem"),
        (K::InvalidInput, "invalid-input"),
        (K::InvalidData, "invalid-data"),
        (K::TimedOut, "timed-out"),
        (K::WriteZero, "write-zero"),
        (K::StorageFull, "storage-full"),
        (K::NotSeekable, "not-seekable"),
        (K::QuotaExceeded, "quota-exceeded"),
        (K::FileTooLarge, "file-too-large"),
        (K::ResourceBusy, "resource-busy"),
        (K::CrossesDevices, "crosses-devices"),
        (K::TooManyLinks, "too-many-links"),
        (K::InvalidFilename, "invalid-filename"),
        (K::Interrupted, "interrupted"),
        (K::Unsupported, "unsupported"),
        (K::UnexpectedEof, "unexpected-eof"),
        (K::OutOfMemory, "out-of-memory"),
        (K::Other, "other"),
    ]
};

/// The name of `kind` in the WIT `io-error` record (`"other"` for kinds without one).
pub fn io_kind_name(kind: std::io::ErrorKind) -> &'static str {
    IO_KINDS
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or("other", |(_, name)| name)
}

/// The `ErrorKind` named `name` by [`io_kind_name`] (`Other` for an unknown name).
pub fn io_kind_from_name(name: &str) -> std::io::ErrorKind {
    IO_KINDS
        .iter()
        .find(|(_, n)| *n == name)
        .map_or(std::io::ErrorKind::Other, |(k, _)| *k)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every listed kind survives the round trip through its name, and the names are unique
    /// (a repeated name would silently turn one kind into another across the sandbox).
    #[test]
    fn io_kind_names_round_trip() {
        let mut names = std::collections::HashSet::new();
        for (kind, name) in IO_KINDS {
            assert!(names.insert(*name), "name {name} repeated");
            assert_eq!(io_kind_from_name(io_kind_name(*kind)), *kind, "{name}");
        }
        assert_eq!(io_kind_name(std::io::ErrorKind::BrokenPipe), "other");
        assert_eq!(io_kind_from_name("no-such-kind"), std::io::ErrorKind::Other);
    }
}
