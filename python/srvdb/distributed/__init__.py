"""SrvDB beyond one machine, on Ray: sharded ingest from Ray Data and sharded search on Ray
actors (``pip install "ray[data]"``).

- :func:`ingest` writes N shard databases from a ``ray.data.Dataset`` (embedding a text column
  with the built-in embedder when asked) and records them in a manifest written last.
- :func:`open` returns a :class:`ShardedDatabase`: one Ray actor per shard, with the
  :class:`srvdb.Database` operations that make sense across shards; searches fan out and the
  merge is exact.

Ids are partitioned by a stable hash (:func:`shard_of`), so any process agrees on where an id
lives. Importing this package does not import Ray; opening a sharded database does.
"""

from ._errors import ReadOnlyError, ShardError, ShardUnavailableError
from ._manifest import Manifest, ManifestError, read_manifest, shard_of
from ._ingest import DatabaseExistsError, ingest
from ._sharded import PartialArrays, PartialResult, ShardedDatabase, ShardedRecord, open

__all__ = [
    "ingest",
    "DatabaseExistsError",
    "open",
    "ShardedDatabase",
    "ShardedRecord",
    "PartialResult",
    "PartialArrays",
    "ShardError",
    "ShardUnavailableError",
    "ReadOnlyError",
    "Manifest",
    "ManifestError",
    "read_manifest",
    "shard_of",
]
