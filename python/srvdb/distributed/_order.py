"""A shard's record of the global write order, so the sharded merge breaks ties like one
database does.

One database breaks score ties by row: the record written first wins (``src/index/topk.rs``).
Across shards row numbers are local, so the sharded database numbers every record it writes
with a global sequence number (``seq``, batch position order, a fresh one for an upsert, which
also moves the record to a new row in the engine) and each shard keeps ``id -> seq`` in
``order.log`` in its directory: one JSON line ``[seq, id]`` per write (``[null, id]`` undoes a
failed write's line). The lines of a write are fsynced before the engine sees the write, so
every record the engine commits (also by auto-commit) has its line. Lines of records deleted
or never committed are ignored: only live ids are looked up.

Records written without a line (by ``srvdb.distributed.ingest``) get keys below every
sequence number, in their order within the shard, so they rank before later writes and tie
among themselves by (position in the shard, shard).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Optional, Sequence

from ._manifest import fsync_dir

LOG_NAME = "order.log"
#: Keys of records with no line: ``UNLOGGED + position in the shard`` (below every seq).
UNLOGGED = -(2**62)


class OrderLog:
    """``id -> ordering key`` for the live records of one shard, and the append-only log
    behind it."""

    def __init__(self, directory: Path, live_ids: Sequence[str]):
        self._path = Path(directory) / LOG_NAME
        logged, self._lines, self.max_seq = _read(self._path)
        self.key: dict[str, int] = {}
        for position, id in enumerate(live_ids):
            seq = logged.get(id)
            self.key[id] = UNLOGGED + position if seq is None else seq
        new = not self._path.exists()
        self._file = open(self._path, "a", encoding="utf-8")
        if new:
            fsync_dir(self._path.parent)

    def record(self, pairs: Iterable[tuple[Optional[int], str]]) -> None:
        """Appends ``(seq, id)`` lines and fsyncs them (before the engine write they order)."""
        text = "".join(json.dumps([seq, id], ensure_ascii=False) + "\n" for seq, id in pairs)
        self._file.write(text)
        self._file.flush()
        os.fsync(self._file.fileno())
        self._lines += text.count("\n")

    def should_compact(self) -> bool:
        return self._lines > 2 * len(self.key) + 1024

    def compact(self) -> None:
        """Rewrites the log with one line per live record (temp file, fsync, rename, directory
        fsync), so it does not grow with upserts and deletes."""
        tmp = self._path.with_name(LOG_NAME + ".tmp")
        live = sorted((k, id) for id, k in self.key.items() if k >= 0)
        with open(tmp, "w", encoding="utf-8") as f:
            for seq, id in live:
                f.write(json.dumps([seq, id], ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self._file.close()
        os.replace(tmp, self._path)
        fsync_dir(self._path.parent)
        self._file = open(self._path, "a", encoding="utf-8")
        self._lines = len(live)

    def close(self) -> None:
        self._file.close()


def _read(path: Path) -> tuple[dict[str, Optional[int]], int, int]:
    """The last line per id, the number of lines and the highest seq in any line (-1 for
    none; the driver numbers new writes above it). A torn last line (a crash mid-append) is
    skipped; its write was never handed to the engine."""
    logged: dict[str, Optional[int]] = {}
    lines = 0
    highest = -1
    try:
        f = open(path, encoding="utf-8")
    except FileNotFoundError:
        return logged, 0, highest
    with f:
        for line in f:
            lines += 1
            try:
                seq, id = json.loads(line)
            except (ValueError, TypeError):
                continue
            if isinstance(id, str) and (seq is None or isinstance(seq, int)):
                logged[id] = seq
                if seq is not None and seq > highest:
                    highest = seq
    return logged, lines, highest
