"""A small retrieval pipeline over local text, offline and deterministic.

1. Reads Markdown files (by default this repository's README.md and docs/*.md; or the files
   given on the command line) and splits them into paragraph chunks.
2. Embeds the chunks with a hashed bag-of-words embedding: each lower-cased word (and word
   pair) is hashed (BLAKE2b) to one of DIM buckets with a sign, counts are log-scaled and
   the vector is L2-normalised. No model, no network; the same text always gives the same
   vector.
3. Stores them in SrvDB through the LangChain vector store (`pip install "langchain-core>=1.0,<2"`)
   and answers a few questions with a similarity search, an MMR search and a metadata filter.
   Without langchain-core it does the same with the plain `srvdb` API.

Run:  target/pyenv/bin/python examples/retrieval_pipeline.py [--db DIR] [FILE.md ...]
"""

from __future__ import annotations

import argparse
import hashlib
import math
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

import srvdb

DIM = 512
REPO = Path(__file__).resolve().parents[1]
QUESTIONS = [
    "how do I run the python tests",
    "what happens after a crash during a write",
    "which distance metrics are supported",
]
_WORD = re.compile(r"[a-z0-9_]+")
_STOP = frozenset(
    "a an and are as at be by do does for from how i in is it of on or the this to what when "
    "which who why with you".split()
)


def embed(text: str, dim: int = DIM) -> list[float]:
    """Hashed bag of words (stop words dropped) and word pairs, log-scaled counts,
    L2-normalised."""
    words = [w for w in _WORD.findall(text.lower()) if w not in _STOP]
    features = words + [f"{a} {b}" for a, b in zip(words, words[1:])]
    vec = np.zeros(dim, dtype=np.float64)
    for f in features:
        h = int.from_bytes(hashlib.blake2b(f.encode(), digest_size=8).digest(), "little")
        vec[h % dim] += 1.0 if (h >> 63) & 1 else -1.0
    vec = np.sign(vec) * np.log1p(np.abs(vec))
    norm = np.linalg.norm(vec)
    if norm == 0.0:
        vec[0] = 1.0  # an empty text still gets a valid (non-zero) vector
        norm = 1.0
    return (vec / norm).tolist()


def chunks(paths: list[Path], min_chars: int = 80) -> list[tuple[str, dict]]:
    """Paragraphs of at least `min_chars` characters, with their file and heading."""
    out = []
    for path in paths:
        heading = ""
        for para in re.split(r"\n\s*\n", path.read_text(encoding="utf-8")):
            para = para.strip()
            if para.startswith("#"):
                heading = para.splitlines()[0].lstrip("# ").strip()
                para = "\n".join(para.splitlines()[1:]).strip()
            if len(para) >= min_chars:
                out.append((para, {"source": path.name, "heading": heading}))
    return out


def _short(text: str, n: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def with_langchain(db_dir: Path, corpus: list[tuple[str, dict]]) -> None:
    from langchain_core.embeddings import Embeddings

    from srvdb.integrations.langchain import SrvDBVectorStore

    class HashedBagOfWords(Embeddings):
        def embed_documents(self, texts):
            return [embed(t) for t in texts]

        def embed_query(self, text):
            return embed(text)

    with SrvDBVectorStore(db_dir, embedding=HashedBagOfWords()) as store:
        texts = [t for t, _ in corpus]
        # Stable ids (source + position): running the example twice updates, never duplicates.
        ids = [f"{m['source']}#{i}" for i, (_, m) in enumerate(corpus)]
        store.add_texts(texts, [m for _, m in corpus], ids=ids)
        print(f"indexed {len(store.database)} chunks (dim {store.database.dim}, {store.database.metric})")
        for q in QUESTIONS:
            print(f"\nQ: {q}")
            for doc, score in store.similarity_search_with_score(q, k=3):
                print(f"  {score:.3f}  [{doc.metadata['source']} / {doc.metadata['heading']}] {_short(doc.page_content)}")
        q = QUESTIONS[0]
        print(f"\nMMR (k=3, fetch_k=15, lambda=0.5): {q}")
        for doc in store.as_retriever(search_type="mmr", search_kwargs={"k": 3, "fetch_k": 15}).invoke(q):
            print(f"  [{doc.metadata['source']} / {doc.metadata['heading']}] {_short(doc.page_content)}")
        source = corpus[-1][1]["source"]
        print(f"\nFiltered to source={source!r}: {q}")
        for doc in store.similarity_search(q, k=2, filter={"source": source}):
            print(f"  [{doc.metadata['source']} / {doc.metadata['heading']}] {_short(doc.page_content)}")


def with_srvdb(db_dir: Path, corpus: list[tuple[str, dict]]) -> None:
    with srvdb.open(db_dir, metric="cosine") as db:
        ids = [f"{m['source']}#{i}" for i, (_, m) in enumerate(corpus)]
        db.upsert(ids, np.asarray([embed(t) for t, _ in corpus], dtype=np.float32),
                  [{"text": t, **m} for t, m in corpus])
        print(f"indexed {len(db)} chunks (dim {db.dim}, {db.metric}), plain srvdb API")
        for q in QUESTIONS:
            print(f"\nQ: {q}")
            for id_, score in db.search(embed(q), k=3):
                md = db.get(id_).metadata
                print(f"  {score:.3f}  [{md['source']} / {md['heading']}] {_short(md['text'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, help="Markdown/text files (default: README.md, docs/*.md)")
    parser.add_argument("--db", type=Path, help="database directory (default: a temporary one)")
    parser.add_argument("--plain", action="store_true", help="use the plain srvdb API, not LangChain")
    args = parser.parse_args()
    files = args.files or [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    corpus = chunks([f for f in files if f.exists()])
    if not corpus:
        sys.exit("no text to index")
    with tempfile.TemporaryDirectory() as tmp:
        db_dir = args.db or Path(tmp) / "db"
        try:
            if args.plain:
                raise ImportError
            import langchain_core  # noqa: F401
        except ImportError:
            with_srvdb(db_dir, corpus)
        else:
            with_langchain(db_dir, corpus)


if __name__ == "__main__":
    main()
