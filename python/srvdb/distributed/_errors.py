"""The errors only a sharded database raises: a shard that cannot answer, and a write through a
read-only handle. Both are :class:`srvdb.Error` subclasses; the engine's own errors (a
duplicate id, a malformed filter, ...) reach the caller as the same classes a single
:class:`srvdb.Database` raises."""

from __future__ import annotations

from typing import Optional

from .._errors import Error
from .._errors import ReadOnlyError as _ReadOnlyError

__all__ = ["ShardError", "ShardUnavailableError", "ReadOnlyError"]


class ShardError(Error):
    """A shard failed to answer: its database raised an error that is not about the input
    (I/O, corruption, a poisoned handle), or its actor is gone (see
    :class:`ShardUnavailableError`). The original error is ``__cause__``. A search can skip such
    shards with ``allow_partial=True``; a write that raises it may have been applied on the
    other shards (each shard's part is atomic): repeat it with ``upsert``."""

    #: The shard that failed (its directory is ``shard-{shard:05d}``).
    shard: Optional[int] = None


class ShardUnavailableError(ShardError):
    """A shard's actor did not answer within the timeout, or died and cannot be restarted
    (killed with ``no_restart=True``, its node lost, its directory missing). Restarts after a
    crash are automatic: this is raised only when the shard is not back in time."""


class ReadOnlyError(_ReadOnlyError):
    """A write through a sharded database opened with ``read_only=True``: a
    ``srvdb.ReadOnlyError`` (and so a ``PermissionError``), as on one database."""


for _cls in (ShardError, ShardUnavailableError, ReadOnlyError):
    _cls.__module__ = "srvdb.distributed"
del _cls
