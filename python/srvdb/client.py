"""Named collections: ``srvdb.Client(path)``, as Chroma users know it.

Each collection is a :class:`srvdb.Database` in its own subdirectory ``<path>/<name>``, so a
collection can also be opened directly with ``srvdb.open(<path>/<name>)`` (when the client does
not hold it open). ``srvdb.Client(":memory:")`` keeps its collections in memory, gone when the
client is closed or collected.

The client keeps the collections it handed out open and hands out the same handle again (a
database directory can be open only once at a time); ``close()`` closes them all.
"""

from __future__ import annotations

import operator
import os
import re
import shutil
import threading
from pathlib import Path
from typing import Optional, Union

from . import _srvdb
from ._errors import EmbedderMismatchError, InvalidInputError, NotFoundError

__all__ = ["Client", "MAX_COLLECTION_NAME"]

#: The longest collection name accepted, in characters.
MAX_COLLECTION_NAME = 128

_MEMORY = ":memory:"
# A database directory holds its redb metadata from its creation on: a subdirectory without it
# is not a collection, so it is never listed, opened as one or deleted.
_METADATA = "metadata.db"
# The metric names ``srvdb.open`` takes (`Metric::from_str`), by the name a handle reports.
_METRIC_ALIASES = {
    "cosine": "cosine", "cos": "cosine", "dot": "dot", "ip": "dot", "inner": "dot",
    "l2": "l2", "euclidean": "l2",
}
# The names a database directory holds (`src/storage/mod.rs`, `names`; `index.codes` and its
# temporary). A directory holding anything else is not taken for a new collection.
_DATABASE_FILES = frozenset({
    "vectors.bin", "metadata.db", "vectors.bin.compact", "vectors.bin.old", "metadata.db.new",
    "LOCK", "index.codes", "index.codes.tmp",
})
# Letters, digits, '_', '-' and '.', not starting with '.' (no hidden directories, no '.' or
# '..'), so a name is always one plain path component on every operating system.
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def _check_name(name: object) -> str:
    """``name`` if it is a valid collection name, else ``InvalidInputError`` saying why."""
    if not isinstance(name, str):
        raise InvalidInputError(f"a collection name must be a str, not {type(name).__name__}")
    if not name:
        raise InvalidInputError("a collection name must not be empty")
    if len(name) > MAX_COLLECTION_NAME:
        raise InvalidInputError(
            f"collection name of {len(name)} characters: at most {MAX_COLLECTION_NAME} are allowed"
        )
    if _NAME.fullmatch(name) is None:
        raise InvalidInputError(
            f"invalid collection name {name!r}: use letters, digits, '_', '-' and '.', not "
            "starting with '.' (no path separators, no '..')"
        )
    return name


def _not_found(name: str) -> NotFoundError:
    err = NotFoundError(
        f"no collection named {name!r}: create it with create_collection or "
        "get_or_create_collection"
    )
    err.id = name
    return err


class Client:
    """Named collections of vectors, each a :class:`srvdb.Database`.

    ``path``: the directory holding one subdirectory per collection (created if needed), or
    ``":memory:"`` for collections that live in memory only. ``backend``: as for
    ``srvdb.open`` (``"native"`` or ``"wasm"``; in-memory collections need ``"native"``).

    A context manager: leaving the ``with`` block closes every collection it opened.
    """

    def __init__(self, path: Union[str, "os.PathLike[str]"] = _MEMORY, *, backend: str = "native") -> None:
        self._memory = os.fspath(path) == _MEMORY
        self._backend = backend
        self._lock = threading.RLock()
        self._open: dict[str, _srvdb.Database] = {}
        if self._memory:
            if _srvdb_backend_name(backend) == "wasm":
                raise InvalidInputError(
                    'backend="wasm" has no in-memory databases: use backend="native" with '
                    '":memory:", or give the client a directory'
                )
            self._path: Optional[Path] = None
        else:
            self._path = Path(path)
            if self._path.exists() and not self._path.is_dir():
                raise InvalidInputError(f"{self._path} is not a directory: give the client a directory")
            self._path.mkdir(parents=True, exist_ok=True)

    @property
    def path(self) -> Optional[Path]:
        """The directory of the collections, or None for an in-memory client."""
        return self._path

    def _dir(self, name: str) -> Path:
        assert self._path is not None
        return self._path / name

    def _exists(self, name: str) -> bool:
        if self._memory:
            held = self._open.get(name)
            return held is not None and not held.closed
        return _is_database(self._dir(name))

    def _open_db(
        self, name: str, dim: object, metric: Optional[str], embedder: Optional[str]
    ) -> _srvdb.Database:
        """Opens (creating if needed) collection ``name``, or returns the handle held open.

        Reopening a collection created with an embedder without naming one opens it with the
        embedder it recorded, so ``query`` works on it as on the handle that created it.
        """
        held = self._open.get(name)
        if held is not None and not held.closed:
            _check_same(name, held, dim, metric, embedder)
            return held
        if self._memory:
            # A closed in-memory collection is gone.
            db = _srvdb.open(_MEMORY, dim=dim, metric=metric, backend=self._backend, embedder=embedder)
        else:
            target = self._dir(name)
            _check_not_foreign(target)
            db = _srvdb.open(target, dim=dim, metric=metric, backend=self._backend, embedder=embedder)
            if embedder is None and db.embedder is not None:
                recorded = db.embedder
                db.close()
                db = _srvdb.open(target, dim=dim, metric=metric, backend=self._backend, embedder=recorded)
        self._open[name] = db
        return db

    def create_collection(
        self,
        name: str,
        dim: Optional[int] = None,
        metric: Optional[str] = None,
        embedder: Optional[str] = None,
    ) -> _srvdb.Database:
        """Creates collection ``name`` and returns it (a ``Database``). ``dim``, ``metric`` and
        ``embedder`` as for ``srvdb.open``. Raises ``InvalidInputError`` if it exists (use
        ``get_or_create_collection``) or the name is not valid (letters, digits, ``_``, ``-``
        and ``.``, not starting with ``.``, at most 128 characters)."""
        _check_name(name)
        with self._lock:
            if self._exists(name):
                raise InvalidInputError(
                    f"collection {name!r} exists: use get_collection or get_or_create_collection"
                )
            return self._open_db(name, dim, metric, embedder)

    def get_collection(self, name: str, embedder: Optional[str] = None) -> _srvdb.Database:
        """The existing collection ``name``; ``NotFoundError`` (a ``KeyError``) if there is none.
        A collection created with an embedder is opened with it unless ``embedder`` names
        another (which raises ``EmbedderMismatchError``)."""
        _check_name(name)
        with self._lock:
            if not self._exists(name):
                raise _not_found(name)
            return self._open_db(name, None, None, embedder)

    def get_or_create_collection(
        self,
        name: str,
        dim: Optional[int] = None,
        metric: Optional[str] = None,
        embedder: Optional[str] = None,
    ) -> _srvdb.Database:
        """Collection ``name``, created if missing. For an existing one, ``dim`` and ``metric``
        (when given) must be its own, as for ``srvdb.open``."""
        _check_name(name)
        with self._lock:
            return self._open_db(name, dim, metric, embedder)

    def list_collections(self) -> list[str]:
        """The names of the collections, sorted."""
        with self._lock:
            if self._memory:
                return sorted(n for n, db in self._open.items() if not db.closed)
            assert self._path is not None
            return sorted(
                entry.name
                for entry in os.scandir(self._path)
                if entry.is_dir()
                and _NAME.fullmatch(entry.name)
                and len(entry.name) <= MAX_COLLECTION_NAME
                and _is_database(Path(entry.path))
            )

    def delete_collection(self, name: str) -> None:
        """Deletes collection ``name`` and everything in it (its subdirectory). A handle of it
        this client holds is closed first. Raises ``NotFoundError`` if there is none (a
        subdirectory that is not a SrvDB database is not a collection, and is left alone), and
        ``LockedError`` if another handle (not this client's) has it open."""
        _check_name(name)
        with self._lock:
            if not self._exists(name):
                raise _not_found(name)
            held = self._open.pop(name, None)
            if held is not None:
                try:
                    held.close()
                except Exception:
                    # Its data is being deleted: a failed final commit does not matter.
                    pass
            if self._memory:
                return
            target = self._dir(name)
            # Opening it takes its lock: another handle holding it open raises LockedError
            # here rather than having its files removed under it.
            _srvdb.open(target, backend="native").close()
            shutil.rmtree(target)

    def close(self) -> None:
        """Closes every collection this client opened (in-memory collections are then gone).
        Raises the first failure after trying all."""
        with self._lock:
            handles = list(self._open.values())
            self._open.clear()
        first: Optional[BaseException] = None
        for db in handles:
            try:
                db.close()
            except Exception as e:  # noqa: BLE001 - re-raised below
                first = first or e
        if first is not None:
            raise first

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = _MEMORY if self._memory else str(self._path)
        return f"srvdb.Client({where!r}, backend={self._backend!r})"


def _srvdb_backend_name(backend: str) -> str:
    name = backend.lower() if isinstance(backend, str) else backend
    return "wasm" if name in ("wasm", "sandboxed", "wasi") else str(name)


def _is_database(path: Path) -> bool:
    """Whether ``path`` holds a SrvDB database (its ``metadata.db``)."""
    return (path / _METADATA).is_file()


def _check_not_foreign(target: Path) -> None:
    """Refuses to make a collection of a directory that holds files SrvDB did not write."""
    if not target.is_dir():
        return
    foreign = sorted(e.name for e in os.scandir(target) if e.name not in _DATABASE_FILES)
    if foreign:
        raise InvalidInputError(
            f"{target} exists and is not a SrvDB collection (it holds {foreign[0]!r}"
            f"{' and more' if len(foreign) > 1 else ''}): choose another collection name, "
            "or move that directory"
        )


def _check_same(
    name: str, db: _srvdb.Database, dim: object, metric: Optional[str], embedder: Optional[str]
) -> None:
    """The checks ``srvdb.open`` makes on reopening, for a handle that is already open."""
    if dim is not None:
        try:
            # Any integer, NumPy's included (as srvdb.open takes them), but not a bool.
            wanted = None if isinstance(dim, bool) else operator.index(dim)
        except TypeError:
            wanted = None
        if wanted is None:
            raise InvalidInputError(f"dim must be an int, not {type(dim).__name__}")
        dim = wanted
        if db.dim is None:
            raise InvalidInputError(
                f"collection {name!r} is open in this client without a dimension yet: its first "
                f"add fixes it; call it without dim={dim}"
            )
        if dim != db.dim:
            raise InvalidInputError(f"collection {name!r} has dimension {db.dim}, not {dim}")
    if metric is not None:
        if not isinstance(metric, str):
            raise InvalidInputError(f"metric must be a str, not {type(metric).__name__}")
        asked = _METRIC_ALIASES.get(metric.lower())
        if asked is None:
            raise InvalidInputError(f'unknown metric {metric!r}: use "cosine", "dot" or "l2"')
        if asked != db.metric:
            raise InvalidInputError(f"collection {name!r} uses metric {db.metric!r}, not {metric!r}")
    if embedder is not None and db.embedder is not None and embedder != db.embedder:
        err = EmbedderMismatchError(
            f"collection {name!r} was created with embedder {db.embedder!r}, not {embedder!r}"
        )
        err.stored, err.asked = db.embedder, embedder
        raise err


Client.__module__ = "srvdb"
