"""The sharded database's manifest and the id -> shard hash.

The manifest is the commit point of a sharded database: ``ingest`` writes it last (after every
shard has committed), ``open`` creates it with the empty shards. It is written to a temporary
file, fsynced, renamed over ``manifest.json`` and the directory fsynced, so a crash leaves the
old manifest or the new one, never half of one.

The hash must never change for a given manifest ``hash`` name: it decides which shard holds an
id, so a different answer would hide rows. ``blake2b-64`` is BLAKE2b with an 8-byte digest
(``digest_size=8``, not the first 8 bytes of the default 64-byte digest) over the id's UTF-8
bytes, read little-endian, modulo the shard count; it is the same on every
platform and Python version (unlike ``hash()``, which is salted per process).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

MANIFEST_NAME = "manifest.json"
FORMAT = "srvdb-sharded"
VERSION = 1
HASH = "blake2b-64"
#: The most shards one manifest may name (a sanity bound on user input, not an engine limit).
MAX_SHARDS = 4096


def shard_dir_name(shard: int) -> str:
    """``shard-00000``, ``shard-00001``, ...: the directory of shard ``shard`` under the root."""
    return f"shard-{shard:05d}"


def shard_of(id: str, shards: int) -> int:
    """The shard that holds ``id`` among ``shards`` shards (stable across processes)."""
    digest = hashlib.blake2b(id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % shards


def shard_numbers(ids: Sequence[str], shards: int) -> np.ndarray:
    """:func:`shard_of` of every id in ``ids``, as an ``intp`` array: the same answers, for a
    batch at a time, hashed in the extension (``srvdb._srvdb.shard_numbers``): one
    ``hashlib`` call per id here was the largest cost of a sharded ingest's driver."""
    from .._srvdb import shard_numbers as hashed

    return hashed(ids, shards).astype(np.intp, copy=False)


@dataclass(frozen=True)
class Manifest:
    """What every reader of a sharded database must agree on."""

    shards: int
    dim: Optional[int]
    metric: str
    embedder: Optional[str] = None
    hash: str = HASH
    format: str = FORMAT
    version: int = VERSION

    def shard_path(self, root: Path, shard: int) -> Path:
        return Path(root) / shard_dir_name(shard)


class ManifestError(ValueError):
    """A manifest that is missing fields, foreign or from a newer SrvDB."""


def read_manifest(root: os.PathLike | str) -> Optional[Manifest]:
    """The manifest under ``root``, or ``None`` when there is none."""
    path = Path(root) / MANIFEST_NAME
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ManifestError(f"{path} is not a SrvDB sharded-database manifest ({e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ManifestError(f"{path} is not a SrvDB sharded-database manifest (format is not {FORMAT!r})")
    if data.get("version") != VERSION:
        raise ManifestError(
            f"{path} has manifest version {data.get('version')!r}; this SrvDB reads version {VERSION}: "
            "upgrade SrvDB to open it"
        )
    if data.get("hash") != HASH:
        raise ManifestError(f"{path} partitions ids with {data.get('hash')!r}; this SrvDB knows only {HASH!r}")
    shards = data.get("shards")
    dim = data.get("dim")
    metric = data.get("metric")
    embedder = data.get("embedder")
    if not isinstance(shards, int) or not 1 <= shards <= MAX_SHARDS:
        raise ManifestError(f"{path}: shards must be an integer in 1..={MAX_SHARDS}, got {shards!r}")
    if dim is not None and (not isinstance(dim, int) or dim < 1):
        raise ManifestError(f"{path}: dim must be a positive integer or null, got {dim!r}")
    if metric not in ("cosine", "dot", "l2"):
        raise ManifestError(f"{path}: metric must be cosine, dot or l2, got {metric!r}")
    if embedder is not None and not isinstance(embedder, str):
        raise ManifestError(f"{path}: embedder must be a string or null, got {embedder!r}")
    return Manifest(shards=shards, dim=dim, metric=metric, embedder=embedder)


def write_manifest(root: os.PathLike | str, manifest: Manifest) -> None:
    """Write ``manifest`` under ``root`` atomically and durably (temp file, fsync, rename,
    directory fsync)."""
    root = Path(root)
    final = root / MANIFEST_NAME
    tmp = root / (MANIFEST_NAME + ".tmp")
    data = json.dumps(asdict(manifest), indent=2, sort_keys=True) + "\n"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    fsync_dir(root)


def fsync_dir(path: os.PathLike | str) -> None:
    """fsync a directory so a file created or renamed in it survives power loss (a no-op where
    directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
