"""sqlite-vec: a `vec0` virtual table (brute-force KNN, cosine distance), metadata in an
ordinary table. Loaded through the interpreter's `sqlite3` when it can load extensions, else
through `apsw` (CPython built without --enable-loadable-sqlite-extensions, as pyenv's is).
Each searching thread opens its own connection, as SQLite's documentation advises."""

from __future__ import annotations

import json
import sqlite3
import threading

from .base import Adapter, dist_version


def _can_load_extensions() -> bool:
    return hasattr(sqlite3.connect(":memory:"), "enable_load_extension")


class SqliteVec(Adapter):
    name = "sqlite-vec"
    how = ("vec0(embedding float[d] distance_metric=cosine, bucket integer), KNN via MATCH ... "
           "AND k = ?")
    filtered = "vec0 metadata column: ... MATCH ? AND k = ? AND bucket = ?"

    def __init__(self):
        import sqlite_vec

        self.sqlite_vec = sqlite_vec
        self.driver = "sqlite3" if _can_load_extensions() else "apsw"
        self.how += f"; loaded through {self.driver}"
        self.local = threading.local()

    def version(self):
        return f"{dist_version('sqlite-vec')} ({self.driver}, SQLite {self._sqlite_version()})"

    def _sqlite_version(self) -> str:
        if self.driver == "apsw":
            import apsw

            return apsw.sqlite_lib_version()
        return sqlite3.sqlite_version

    def _connect(self, path):
        if self.driver == "apsw":
            import apsw

            conn = apsw.Connection(str(path))
            conn.enable_load_extension(True)
            conn.load_extension(self.sqlite_vec.loadable_path())
        else:
            conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            conn.enable_load_extension(True)
            self.sqlite_vec.load(conn)
        return conn

    def ingest(self, path, ids, vectors, metadatas):
        conn = self._connect(path / "vec.db")
        dim = vectors.shape[1]
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("BEGIN")
        conn.execute(f"CREATE VIRTUAL TABLE items USING vec0(embedding float[{dim}] distance_metric=cosine, "
                     "bucket integer)")
        conn.execute("CREATE TABLE meta(id INTEGER PRIMARY KEY, doc_id TEXT, json TEXT)")
        conn.executemany("INSERT INTO items(rowid, embedding, bucket) VALUES (?, ?, ?)",
                         ((i, vectors[i].tobytes(), metadatas[i]["bucket"])
                          for i in range(len(ids))))
        conn.executemany("INSERT INTO meta VALUES (?, ?, ?)",
                         ((i, ids[i], json.dumps(metadatas[i])) for i in range(len(ids))))
        conn.execute("COMMIT")
        conn.close()

    def open(self, path):
        self.path = path / "vec.db"
        self.local = threading.local()

    def _conn(self):
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = self._connect(self.path)
        return conn

    def search(self, query, k):
        rows = self._conn().execute(
            "SELECT rowid FROM items WHERE embedding MATCH ? AND k = ? ORDER BY distance",
            (query.tobytes(), k)).fetchall()
        return [r[0] for r in rows]

    def search_where(self, query, k, bucket, mode):
        rows = self._conn().execute(
            "SELECT rowid FROM items WHERE embedding MATCH ? AND k = ? AND bucket = ? "
            "ORDER BY distance", (query.tobytes(), k, int(bucket))).fetchall()
        return [r[0] for r in rows]
