"""The libraries the bench compares, one adapter module each (see `base.Adapter`).

`LIBRARIES` maps a library's bench name to how to run it: which interpreter (`"srvdb"`: the
project's virtualenv target/pyenv, where `make python-dev` builds the extension; `"peers"`:
target/bench-peers-venv, made from benches/requirements-peers.txt), which PyPI packages it
needs there, extra environment for its process, and the adapter factory. Adapters import
their library only when made, so a missing one fails that library alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import import_module
from typing import Callable


@dataclass(frozen=True)
class Library:
    name: str
    interpreter: str  # "srvdb" or "peers"
    module: str
    factory: str
    kwargs: dict = field(default_factory=dict)
    packages: tuple[str, ...] = ()
    env: dict = field(default_factory=dict)  # value None: remove the variable
    #: The tests it runs; None means all. The 1-thread SrvDB run only needs ingest + latency.
    tests: tuple[str, ...] | None = None
    memory: bool = True
    #: Also runs the filtered test on the big filtered-only set (bench_data's synthetic-big).
    big: bool = False
    #: Has quantized modes (`Adapter.quantized_modes`): runs the quantized test, also on
    #: bench_data's perturbed 1M MiniLM set.
    quantized: bool = False
    #: Has a graph index (`Adapter.hnsw_modes`): runs the HNSW test (`--tests hnsw`), also on
    #: the perturbed 1M MiniLM set when the run names it.
    hnsw: bool = False

    def make_class(self):
        """The adapter's class, without making one (which imports the library)."""
        return getattr(import_module(f"peers.{self.module}"), self.factory)

    def make(self):
        cls: Callable = getattr(import_module(f"peers.{self.module}"), self.factory)
        return cls(**self.kwargs)


# OpenBLAS reads these at load time; a value tuned for another machine (or a slow core type)
# would make NumPy's kernel look worse than it is. Unset for the NumPy process only.
NUMPY_ENV = {"OPENBLAS_CORETYPE": None, "OPENBLAS_L2_SIZE": None}

LIBRARIES = {lib.name: lib for lib in [
    Library("srvdb", "srvdb", "srvdb_engine", "SrvDB", {"backend": "native"}, big=True,
            quantized=True, hnsw=True),
    Library("srvdb-wasm", "srvdb", "srvdb_engine", "SrvDB", {"backend": "wasm"},
            quantized=True),
    Library("srvdb-1thread", "srvdb", "srvdb_engine", "SrvDB", {"backend": "native"},
            env={"RAYON_NUM_THREADS": "1"}, tests=("ingest", "latency"), memory=False),
    Library("numpy", "peers", "numpy_bf", "NumpyBruteForce", packages=("numpy",), env=NUMPY_ENV),
    Library("faiss", "peers", "faiss_flat", "FaissFlat", packages=("faiss-cpu",),
            quantized=True, hnsw=True),
    Library("usearch", "peers", "usearch_exact", "UsearchExact", packages=("usearch",),
            quantized=True, hnsw=True),
    Library("hnswlib", "peers", "hnswlib_bf", "HnswlibBF", packages=("hnswlib",), hnsw=True),
    Library("chroma", "peers", "chroma", "Chroma", packages=("chromadb",), hnsw=True),
    Library("lancedb", "peers", "lance", "Lance", packages=("lancedb", "pyarrow")),
    Library("qdrant-local", "peers", "qdrant_local", "QdrantLocal", packages=("qdrant-client",)),
    Library("qdrant-edge", "peers", "qdrant_edge", "QdrantEdge", packages=("qdrant-edge-py",)),
    Library("sqlite-vec", "peers", "sqlite_vec", "SqliteVec", packages=("sqlite-vec", "apsw")),
]}
