"""The exceptions SrvDB raises.

Every error is a :class:`srvdb.Error`. The subclasses also derive from the built-in exception
a Python programmer would reach for, so ``except ValueError`` and ``except KeyError`` keep
working: a wrong dimension is a ``ValueError``, an unknown id a ``KeyError``, an I/O failure an
``OSError``. Details are attributes (``index``, ``id``, ``expected``, ``got``, ``path``) and
are ``None`` when they do not apply.
"""

from __future__ import annotations

from typing import Optional

__all__ = [
    "Error",
    "DimensionMismatchError",
    "DuplicateIdError",
    "NotFoundError",
    "InvalidInputError",
    "InvalidFilterError",
    "CorruptError",
    "LockedError",
    "ReadOnlyError",
    "IoError",
    "PoisonedError",
    "BackendUnavailableError",
    "SandboxError",
    "EmbedderMismatchError",
    "ModelError",
]


class Error(Exception):
    """Base class of every SrvDB error. Also raised as-is for a closed handle and for
    metadata-store failures that are neither corruption nor I/O."""

    # The message as given, also for subclasses of KeyError (whose own __str__ would quote it).
    __str__ = Exception.__str__

    #: Position of the offending item in the batch (vector, id or metadata), if any.
    index: Optional[int] = None


class DimensionMismatchError(Error, ValueError):
    """A vector or query has a different length than the database's dimension."""

    #: The database's dimension.
    expected: Optional[int] = None
    #: The length that was passed.
    got: Optional[int] = None


class DuplicateIdError(Error, ValueError):
    """``add`` got an id that exists or repeats within the batch (``upsert`` replaces)."""

    #: The repeated id.
    id: Optional[str] = None


class NotFoundError(Error, KeyError):
    """An id that is not in the database (``delete``, ``db[id]``)."""

    #: The missing id.
    id: Optional[str] = None


class InvalidInputError(Error, ValueError):
    """Input that cannot be stored or answered: NaN or infinity, an empty or over-long id,
    lengths that disagree, a non-float dtype, a negative ``k``, an unknown metric or backend,
    a metric different from the stored one."""


class InvalidFilterError(InvalidInputError):
    """A malformed ``where`` or ``where_document`` filter: not a dict, an unknown operator, an
    operand of the wrong type, nesting deeper than 32 levels, or more than 64 KiB of JSON.
    Also an ``InvalidInputError`` (so a ``ValueError``)."""

    #: Where in the filter the fault is, as a path such as ``"where.$and[1].year.$gt"`` or
    #: ``"where_document"``.
    part: Optional[str] = None
    #: What was wrong there, and what is accepted.
    reason: Optional[str] = None


class CorruptError(Error):
    """A database file is not a SrvDB file, has another format version, or is damaged."""

    #: The file at fault.
    path: Optional[str] = None


class LockedError(Error):
    """Another handle (in this process or another) holds the database's lock: a writer, which
    keeps every other handle out, or a reader (``read_only=True``) that is opening it, which
    keeps writers out for that moment."""

    #: The database directory.
    path: Optional[str] = None
    #: Who holds the lock: ``"writer"`` or ``"readers"``.
    holder: Optional[str] = None


class ReadOnlyError(Error, PermissionError):
    """A write on a handle opened with ``read_only=True``, or a read-only open of a database
    that would first have to be created or recovered: the message says what to do (close the
    readers and open for writing; or open it once for writing). A ``PermissionError``, as
    ``srvdb.distributed.ReadOnlyError`` is."""


class IoError(Error, OSError):
    """An operating-system I/O error (``errno`` is set when the OS gave one)."""


class PoisonedError(Error):
    """An earlier write failed midway; this handle refuses further writes. Close it and open
    the database again, which recovers the last commit."""


class BackendUnavailableError(Error, NotImplementedError):
    """The requested backend is not available: ``backend="wasm"`` in an extension built
    without the ``wasm`` cargo feature, or when the WASI component ``srvdb.wasm`` is missing
    (run ``make component``, or set ``SRVDB_COMPONENT``)."""


class SandboxError(Error):
    """The sandbox around the engine failed (``backend="wasm"`` only): the guest reached its
    memory cap or fuel budget, trapped, or could not be started. After a limit or a trap the
    sandbox is reset and the database reopened at its last commit, so the handle goes on
    serving. The engine's own errors are the same classes as with ``backend="native"``."""

    #: Which failure: ``"limit"`` (memory cap or fuel budget), ``"trap"``, ``"deadline"``
    #: (the call ran too long; open the database again) or ``"setup"`` (could not start).
    failure: Optional[str] = None


class EmbedderMismatchError(Error, ValueError):
    """The database was created for another text embedder (or holds vectors of an unrecorded
    model) than the one given to ``srvdb.open(..., embedder=...)``: their vectors are not
    comparable. Open it with the embedder it recorded, or use another directory."""

    #: What the database recorded.
    stored: Optional[str] = None
    #: What was given.
    asked: Optional[str] = None


class ModelError(Error, OSError):
    """The text model is missing or unusable. The message names the command that installs it
    (``pip install --no-index --find-links target/wheels srvdb-minilm``), or what is wrong with the
    folder."""

    #: The model folder (or file) at fault.
    path: Optional[str] = None


# Show the public name (``srvdb.NotFoundError``) in tracebacks and reprs.
for _cls in (
    Error,
    DimensionMismatchError,
    DuplicateIdError,
    NotFoundError,
    InvalidInputError,
    InvalidFilterError,
    CorruptError,
    LockedError,
    ReadOnlyError,
    IoError,
    PoisonedError,
    BackendUnavailableError,
    SandboxError,
    EmbedderMismatchError,
    ModelError,
):
    _cls.__module__ = "srvdb"
del _cls
