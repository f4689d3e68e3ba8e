"""benches/python/corpus.py, which makes the quantized benchmark's million real sentences:
which sentences it keeps, and that the set it writes lines vectors, texts and ground truth up."""

from __future__ import annotations

import gzip
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

import srvdb

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def corpus():
    path = REPO / "benches" / "python" / "corpus.py"
    if not path.is_file():
        pytest.skip("benches/python/corpus.py is not here (tests run outside a checkout)")
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location("srvdb_bench_corpus", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


KEPT = [
    "This sentence is long enough to be kept by the harvest of the corpus script.",
    "A second sentence that has more than ten words is also kept by it, as it should be.",
    "Returns the number of rows that are stored in the table after the last commit.",
    "The docstring of a function can also be a source of sentences for the corpus.",
    "Manual pages are read from their compressed files, and the requests are dropped.",
]
DROPPED = [
    "Too short to keep.",
    "this sentence starts with a lower case letter so it is not a sentence start.",
    "A sentence with code in it like x = {a: b} is not kept by the harvest at all.",
    "Ein deutscher Satz mit genug Woertern wird trotzdem nicht behalten, weil er fremd ist.",
    "This sentence has no end mark so it is only a fragment of some longer text here",
]


def write_tree(root: Path) -> None:
    (root / "html").mkdir(parents=True)
    (root / "html" / "page.html").write_text(
        f"<html><body><p>{KEPT[0]}</p><pre>{KEPT[1]}</pre><p>{DROPPED[0]} {DROPPED[2]}</p>"
        f"<p>{KEPT[1]}</p></body></html>")
    # The same sentence again, in other case and punctuation, read after the page: dropped.
    (root / "zz").mkdir()
    (root / "zz" / "notes.txt").write_text(
        f"{KEPT[0].upper().replace(',', '')}\n\n{DROPPED[1]}\n\n{DROPPED[3]}\n\n{DROPPED[4]}\n")
    first, second = KEPT[2][:KEPT[2].index(" that")], KEPT[2][KEPT[2].index(" that") + 1:]
    (root / "lib.rs").write_text(f"/// {first}\n/// {second}\nfn rows() {{}}\n")
    (root / "mod.py").write_text(f'def f():\n    """{KEPT[3]}"""\n')
    (root / "man" / "man1").mkdir(parents=True)
    with gzip.open(root / "man" / "man1" / "tool.1.gz", "wt") as f:
        f.write(f".TH TOOL 1\n.SH DESCRIPTION\n\n{KEPT[4]}\n")
    (root / "blob.bin").write_bytes(b"\x00" * 64 + KEPT[0].encode())


def test_harvest_keeps_distinct_english_sentences_only(corpus, tmp_path):
    write_tree(tmp_path / "docs")
    corpus.harvest(tmp_path / "out", [tmp_path / "docs"])
    found = (tmp_path / "out" / "sentences.txt").read_text().splitlines()
    assert sorted(found) == sorted(KEPT)
    record = json.loads((tmp_path / "out" / "harvest.json").read_text())
    assert record["sentences"] == len(KEPT)
    assert list(record["new_sentences_per_root"].values()) == [len(KEPT)]


def test_embed_writes_a_set_whose_truth_is_the_brute_force_top(corpus, tmp_path, model):
    write_tree(tmp_path / "docs")
    out = tmp_path / "out"
    corpus.harvest(out, [tmp_path / "docs"])
    with pytest.raises(SystemExit, match="fewer than"):
        corpus.embed(out, rows=len(KEPT), queries=1)
    corpus.embed(out, rows=3, queries=2)
    base, queries = np.load(out / "base.npy"), np.load(out / "queries.npy")
    texts = (out / "base.txt").read_text().splitlines()
    asked = (out / "queries.txt").read_text().splitlines()
    assert base.shape == (3, 384) and queries.shape == (2, 384) and len(texts) == 3
    assert sorted(texts + asked) == sorted(
        (out / "sentences.txt").read_text().splitlines()[:5])
    # Each stored row is its own text's embedding, made one at a time here.
    with srvdb.open(tmp_path / "db", embedder=model) as db:
        for rows, lines in ((base, texts), (queries, asked)):
            for row, text in zip(rows, lines):
                assert float(row @ db.embed([text])[0]) > 0.99999
    scores = queries.astype(np.float64) @ base.astype(np.float64).T
    assert np.array_equal(np.load(out / "gt.npy"), np.argsort(-scores, axis=1, kind="stable"))
    info = json.loads((out / "info.json").read_text())
    assert (info["name"], info["rows"], info["queries"]) == ("minilm-corpus", 3, 2)
    assert not list(out.glob("vectors-*"))
