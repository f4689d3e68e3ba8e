"""A million real MiniLM sentence embeddings, made on this machine (issue 16's "MiniLM over a
larger corpus").

The shared data holds 20,000 sentences. The 1M sets the benchmark derives from them
(`minilm-perturbed`) put 50 noisy copies around each sentence, so a query's top 10 are copies
of two or three sentences within 0.04 of each other; that is not how a million distinct
sentences behave. Nothing the bench may download ships a million real ones, so this script
makes them from the documentation installed on the machine:

1. `harvest`: English sentences of 10-60 words from documentation folders (HTML, XML help,
   man and info pages, text, Markdown, reStructuredText, POD, and the doc comments and
   docstrings of source files), each starting with a capital letter and ending a sentence, at
   least 85% plain words, none of `{}[]=<>\\@$^~`, and a fifth or more (at least 3) of the
   commonest English words; deduplicated on their letters
   (case and punctuation ignored), shuffled with a fixed seed. Writes `sentences.txt`.
2. `embed`: the first `--queries` sentences become the queries, the next `--rows` the base;
   both are embedded with SrvDB's built-in all-MiniLM-L6-v2 (which agrees with
   sentence-transformers to cosine 1.0000000 over the shared set's 20,000 sentences,
   docs/performance.md), resumably in chunks, then the exact float64 top 100 of each query is
   computed (bench_data.exact_top). Writes `base.npy`, `queries.npy`, `gt.npy`, `base.txt`,
   `queries.txt` and `info.json`: the layout bench_data's sets have, so `run_peers.py` finds
   it as `minilm-corpus` in its data cache.

What it finds depends on what is installed. On the Debian 12 development VM, with the doc
packages docs/performance.md lists ("A million real sentences") and two `--also` folders,
it found 1,097,430; embedding 1,000,200 of them took 65 minutes on two AVX-512 cores.

    python benches/python/corpus.py harvest [--out DIR] [ROOT ...] [--also ROOT ...]
    python benches/python/corpus.py embed [--out DIR] [--rows 1000000] [--queries 200]

`--out` defaults to `target/bench-data/minilm-corpus` (where run_peers.py looks). `embed` needs
the SrvDB extension and its model (`SRVDB_MODEL_DIR`, see python/srvdb/text.py).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import html
import json
import os
import re
import shutil
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_data  # noqa: E402

DEFAULT_OUT = bench_data.REPO / "target" / "bench-data" / "minilm-corpus"
SEED = 20261205
CHUNK = 4096  # sentences embedded (and saved) at a time; a resumed run restarts a chunk

_TAG = re.compile(r"<[^>]+>")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_PLAIN_WORD = re.compile(r"^[A-Za-z][A-Za-z'\-]*[A-Za-z,;:.!?)]?$")
_MARKUP_TEXT = {".html", ".htm", ".xhtml", ".xhp", ".xml"}
_COMMENTED = {".rs", ".go", ".c", ".h", ".cc", ".cpp", ".hpp", ".js", ".java"}
_PLAIN_TEXT = {"", ".md", ".txt", ".rst", ".pod", ".info", ".texi", ".rdoc", ".tex"}
_MAX_FILE = 20_000_000
# Words nearly every English sentence has a few of; other languages' sentences rarely do.
_ENGLISH = frozenset(
    "the a an of to is are and in for this that with be it on as by or from at not can if "
    "which will you your use used when all its has have was were these those than then there "
    "their into more one each may should must only also any other such".split())


def default_roots() -> list[Path]:
    """Where documentation usually is: the system's doc, man, info, help, Perl, Vim and Qt
    folders, Go's sources, this Python's standard library and site-packages, the system
    Python's packages, the Rust toolchain's docs and the crates Cargo has downloaded."""
    home = Path.home()
    share = Path("/usr/share")
    roots = [share / "doc", share / "man", share / "info", share / "help", share / "perl",
             share / "vim", share / "qt5" / "doc", Path(sysconfig.get_paths()["stdlib"]),
             Path(sysconfig.get_paths()["purelib"]), home / ".cargo" / "registry" / "src"]
    roots += [Path("/usr/lib/python3/dist-packages")]
    roots += sorted(Path("/usr/lib").glob("go-*/src")) + sorted(share.glob("go-*/src"))
    roots += sorted((home / ".rustup" / "toolchains").glob("*/share/doc"))[:1]
    return [r for r in roots if r.is_dir()]


def shown(path: Path) -> str:
    """`path` relative to the repository if inside it, else with the home folder as `~`, so
    results name no directory of the machine that made them."""
    path = path.resolve()
    for base, shown_as in ((bench_data.REPO, ""), (Path.home(), "~/")):
        try:
            return shown_as + str(path.relative_to(base))
        except ValueError:
            pass
    return str(path)


class Harvest:
    """Distinct sentences in the order found."""

    def __init__(self) -> None:
        self.sentences: list[str] = []
        self._seen: set[bytes] = set()

    def text(self, text: str) -> None:
        text = html.unescape(text)
        text = re.sub(r"`([^`]*)`", r"\1", text)
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
        text = re.sub(r"[*_#>|]+", " ", text)
        text = re.sub(r"\s+", " ", text).strip()
        for s in _SENTENCE_END.split(text):
            s = s.strip()
            if not s or not s[0].isupper() or not s.endswith((".", "!", "?")):
                continue
            words = s.split()
            if not 10 <= len(words) <= 60:
                continue
            if sum(1 for w in words if _PLAIN_WORD.match(w)) < 0.85 * len(words):
                continue
            if any(c in s for c in "{}[]=<>\\@$^~"):
                continue
            common = sum(1 for w in re.findall(r"[a-z']+", s.lower()) if w in _ENGLISH)
            if common < max(3, 0.2 * len(words)):
                continue
            key = hashlib.blake2b(re.sub(r"[^a-z]", "", s.lower()).encode(),
                                  digest_size=8).digest()
            if key not in self._seen:
                self._seen.add(key)
                self.sentences.append(s)

    def paragraphs(self, lines) -> None:
        para: list[str] = []
        for line in lines:
            line = line.strip()
            if line:
                para.append(line)
            elif para:
                self.text(" ".join(para))
                para = []
        if para:
            self.text(" ".join(para))

    def file(self, path: Path) -> None:
        name = path.name
        try:
            if name.endswith(".gz"):
                with gzip.open(path, "rt", errors="replace") as f:
                    data = f.read(_MAX_FILE)
                name = name[:-3]
            elif path.stat().st_size <= _MAX_FILE:
                data = path.read_text(errors="replace")
            else:
                return
        except (OSError, EOFError, ValueError):
            return  # unreadable, a broken link or a corrupt archive: not text we want
        if "\x00" in data[:1000]:
            return
        ext = os.path.splitext(name)[1].lower()
        if ext in _MARKUP_TEXT:
            data = re.sub(r"(?is)<(script|style|pre|code)[^>]*>.*?</\1>", " ", data)
            data = re.sub(r"(?i)</?(p|div|li|h\d|br|td|dt|dd)[^>]*>", "\n\n", data)
            self.paragraphs(_TAG.sub(" ", data).splitlines())
        elif ext in _COMMENTED:
            self.paragraphs(m.group(1) for m in
                            re.finditer(r"^\s*(?://[/!]?|/?\*+)\s?(.*)$", data, re.M))
        elif ext == ".py":
            for m in re.finditer(r'(?s)"""(.*?)"""', data):
                self.paragraphs(m.group(1).splitlines())
            self.paragraphs(m.group(1) for m in re.finditer(r"^\s*#\s?(.*)$", data, re.M))
        elif ext in _PLAIN_TEXT or "/man" in str(path) or "/doc/" in str(path):
            if "/man" in str(path):  # roff: drop requests and escapes, keep the words
                data = re.sub(r"(?m)^\.[A-Za-z]+ ?", "", data)
                data = re.sub(r"\\f[BIRP]|\\\(..|\\-|\\&|\\e", " ", data)
            self.paragraphs(data.splitlines())


def harvest(out: Path, roots: list[Path]) -> None:
    h = Harvest()
    counts = {}
    for root in roots:
        before = len(h.sentences)
        for folder, dirs, files in os.walk(root):
            dirs.sort()
            for f in sorted(files):
                h.file(Path(folder) / f)
        counts[shown(root)] = len(h.sentences) - before
        print(f"{shown(root)}: {counts[shown(root)]:,} new sentences "
              f"({len(h.sentences):,} in all)", file=sys.stderr, flush=True)
    order = np.random.default_rng(SEED).permutation(len(h.sentences))
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "sentences.txt.tmp"
    tmp.write_text("".join(h.sentences[i] + "\n" for i in order))
    tmp.replace(out / "sentences.txt")
    (out / "harvest.json").write_text(json.dumps(
        {"sentences": len(h.sentences), "seed": SEED, "new_sentences_per_root": counts},
        indent=1))


def embed(out: Path, rows: int, queries: int) -> None:
    import srvdb  # the extension: built by `make python` (or maturin develop)

    sentences = (out / "sentences.txt").read_text().splitlines()
    if len(sentences) < rows + queries:
        sys.exit(f"{out / 'sentences.txt'} has {len(sentences):,} sentences, fewer than "
                 f"{rows:,} rows + {queries} queries: harvest more roots (see the module doc) "
                 f"or pass a smaller --rows")
    texts = sentences[: queries + rows]
    work = out / f"vectors-{queries}+{rows}.npy"  # queries first, then the base
    done_file = work.with_suffix(".done")
    vectors = np.lib.format.open_memmap(work, mode="r+" if work.exists() else "w+",
                                        dtype="<f4", shape=(len(texts), 384))
    start = int(done_file.read_text()) if done_file.exists() else 0
    with tempfile.TemporaryDirectory() as scratch:
        db = srvdb.open(scratch, embedder="all-MiniLM-L6-v2")
        t0 = time.time()
        for at in range(start, len(texts), CHUNK):
            end = min(at + CHUNK, len(texts))
            vectors[at:end] = db.embed(texts[at:end])
            vectors.flush()
            done_file.write_text(str(end))
            rate = (end - start) / (time.time() - t0)
            print(f"embedded {end:,} / {len(texts):,} ({rate:.0f} sentences/s, "
                  f"{(len(texts) - end) / rate / 60:.0f} min left)", file=sys.stderr, flush=True)
    base = np.asarray(vectors[queries:])
    query_rows = np.asarray(vectors[:queries])
    harvested = json.loads((out / "harvest.json").read_text())
    info = {"name": "minilm-corpus",
            "source": f"{rows:,} distinct documentation sentences from this machine, "
                      f"embedded by SrvDB's all-MiniLM-L6-v2 (benches/python/corpus.py); "
                      f"{queries} held-out sentences as queries",
            "harvest": harvested}
    print("exact top 100 of each query (float64)...", file=sys.stderr, flush=True)
    tmp = out / "set.tmp"
    shutil.rmtree(tmp, ignore_errors=True)  # left by a run stopped here
    bench_data._write(tmp, base, query_rows, info)
    (tmp / "base.txt").write_text("".join(s + "\n" for s in texts[queries:]))
    (tmp / "queries.txt").write_text("".join(s + "\n" for s in texts[:queries]))
    # gt.npy and info.json last: bench_data takes the set as made once both are there.
    for f in sorted(tmp.iterdir(), key=lambda f: f.name in ("gt.npy", "info.json")):
        f.replace(out / f.name)
    tmp.rmdir()
    work.unlink()
    done_file.unlink()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="step", required=True)
    h = sub.add_parser("harvest", help="collect distinct sentences into sentences.txt")
    h.add_argument("--out", type=Path, default=DEFAULT_OUT)
    h.add_argument("roots", nargs="*", type=Path, help="folders to read (default: the usual "
                   "documentation folders, see default_roots)")
    h.add_argument("--also", nargs="+", type=Path, default=[],
                   help="folders to read after the default ones")
    e = sub.add_parser("embed", help="embed them and compute the exact ground truth")
    e.add_argument("--out", type=Path, default=DEFAULT_OUT)
    e.add_argument("--rows", type=int, default=1_000_000)
    e.add_argument("--queries", type=int, default=200)
    a = p.parse_args()
    if a.step == "harvest":
        harvest(a.out, (a.roots or default_roots()) + a.also)
    else:
        embed(a.out, a.rows, a.queries)


if __name__ == "__main__":
    main()
