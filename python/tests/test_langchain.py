"""The LangChain adapter (srvdb.integrations.langchain): LangChain's standard vector store
suite, then our own checks (scores against NumPy, by-vector search, MMR against a reference
written here, persistence, filters). Needs langchain-core and langchain-tests, which
`make python-test` installs (python/requirements-integrations.txt)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import REPO, run_python

pytest.importorskip("langchain_core", reason="langchain-core not installed (pip install -r python/requirements-integrations.txt)")
langchain_tests_vs = pytest.importorskip(
    "langchain_tests.integration_tests.vectorstores", reason="langchain-tests not installed"
)

from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import Embeddings  # noqa: E402

import srvdb  # noqa: E402
from srvdb.integrations.langchain import SrvDBVectorStore  # noqa: E402

# The standard suite's async tests are plain `async def`: they run through pytest-asyncio's
# `asyncio_mode = "auto"` (python/pyproject.toml; no other test module is async).
class TestStandardSuite(langchain_tests_vs.VectorStoreIntegrationTests):
    @pytest.fixture()
    def vectorstore(self, tmp_path):
        store = SrvDBVectorStore(tmp_path / "db", embedding=self.get_embeddings())
        yield store
        store.close()


# -- our own tests -------------------------------------------------------------------------------


class TableEmbeddings(Embeddings):
    """Embeddings looked up in a fixed table (text -> vector); unknown texts raise."""

    def __init__(self, table: dict[str, np.ndarray]):
        self.table = table

    def embed_documents(self, texts):
        return [self.table[t].tolist() for t in texts]

    def embed_query(self, text):
        return self.table[text].tolist()


def _random_corpus(n=200, dim=16, seed=7):
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    texts = [f"doc {i}" for i in range(n)]
    return texts, vecs, TableEmbeddings(dict(zip(texts, vecs)))


def _cosine(matrix, q):
    m = matrix.astype(np.float64)
    q = np.asarray(q, dtype=np.float64)
    return (m @ q) / (np.linalg.norm(m, axis=1) * np.linalg.norm(q))


@pytest.fixture
def corpus_store(tmp_path):
    texts, vecs, emb = _random_corpus()
    metadatas = [{"i": i, "parity": i % 2, "tag": "x" if i % 5 == 0 else "y"} for i in range(len(texts))]
    store = SrvDBVectorStore(tmp_path / "db", embedding=emb)
    store.add_texts(texts, metadatas, ids=[f"id{i}" for i in range(len(texts))])
    yield store, texts, vecs
    store.close()


def test_cosine_scores_match_numpy(corpus_store):
    store, texts, vecs = corpus_store
    rng = np.random.default_rng(1)
    for _ in range(5):
        q = rng.standard_normal(vecs.shape[1]).astype(np.float32)
        expect = _cosine(vecs, q)
        order = np.argsort(-expect, kind="stable")[:10]
        hits = store.similarity_search_with_score_by_vector(q.tolist(), k=10)
        assert [d.id for d, _ in hits] == [f"id{i}" for i in order]
        np.testing.assert_allclose([s for _, s in hits], expect[order], rtol=1e-5, atol=1e-5)
        for d, _ in hits:
            i = int(d.id[2:])
            assert d.page_content == texts[i]
            assert d.metadata["i"] == i


def test_query_by_text_equals_by_vector(corpus_store):
    store, texts, vecs = corpus_store
    by_text = store.similarity_search_with_score("doc 3", k=5)
    by_vec = store.similarity_search_with_score_by_vector(vecs[3].tolist(), k=5)
    assert by_text == by_vec
    assert by_text[0][0].id == "id3"
    assert by_text[0][1] == pytest.approx(1.0, abs=1e-5)
    assert store.similarity_search("doc 3", k=5) == [d for d, _ in by_text]
    assert store.similarity_search_by_vector(vecs[3].tolist(), k=5) == [d for d, _ in by_text]


def test_relevance_scores_in_unit_interval(corpus_store):
    store, _, _ = corpus_store
    hits = store.similarity_search_with_relevance_scores("doc 4", k=20)
    assert hits[0][1] == pytest.approx(1.0, abs=1e-5)
    assert all(0.0 <= s <= 1.0 for _, s in hits)
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)


def _reference_mmr(query, candidates, k, lambda_mult):
    """MMR written out: pick argmax of lambda*sim(q, d) - (1-lambda)*max sim(d, picked)."""
    q = np.asarray(query, dtype=np.float64)
    c = np.asarray(candidates, dtype=np.float64)
    cn = c / np.linalg.norm(c, axis=1, keepdims=True)
    sim_q = cn @ (q / np.linalg.norm(q))
    picked: list[int] = []
    while len(picked) < min(k, len(c)):
        best, best_score = -1, -np.inf
        for i in range(len(c)):
            if i in picked:
                continue
            redundancy = max((float(cn[i] @ cn[j]) for j in picked), default=0.0)
            score = lambda_mult * sim_q[i] - (1 - lambda_mult) * redundancy
            if score > best_score:
                best, best_score = i, score
        picked.append(best)
    return picked


@pytest.mark.parametrize("lambda_mult", [0.0, 0.25, 0.5, 1.0])
def test_mmr_matches_reference(corpus_store, lambda_mult):
    store, _, vecs = corpus_store
    rng = np.random.default_rng(3)
    q = rng.standard_normal(vecs.shape[1]).astype(np.float32)
    fetch_k, k = 30, 6
    cand = np.argsort(-_cosine(vecs, q), kind="stable")[:fetch_k]
    expect = [f"id{cand[i]}" for i in _reference_mmr(q, vecs[cand], k, lambda_mult)]
    got = store.max_marginal_relevance_search_by_vector(
        q.tolist(), k=k, fetch_k=fetch_k, lambda_mult=lambda_mult
    )
    assert [d.id for d in got] == expect
    if lambda_mult == 1.0:  # pure relevance: the plain search order
        assert expect == [d.id for d in store.similarity_search_by_vector(q.tolist(), k=k)]


def test_mmr_by_text_and_retriever(corpus_store):
    store, _, vecs = corpus_store
    by_text = store.max_marginal_relevance_search("doc 9", k=4, fetch_k=25, lambda_mult=0.3)
    by_vec = store.max_marginal_relevance_search_by_vector(vecs[9].tolist(), k=4, fetch_k=25, lambda_mult=0.3)
    assert by_text == by_vec and by_text[0].id == "id9"
    retriever = store.as_retriever(search_type="mmr", search_kwargs={"k": 4, "fetch_k": 25, "lambda_mult": 0.3})
    assert retriever.invoke("doc 9") == by_text
    assert store.as_retriever(search_kwargs={"k": 3}).invoke("doc 9") == store.similarity_search("doc 9", k=3)


def test_persistence_across_reopen(tmp_path):
    texts, vecs, emb = _random_corpus(n=50)
    with SrvDBVectorStore(tmp_path / "db", embedding=emb) as store:
        ids = store.add_texts(texts, [{"i": i} for i in range(50)])
        ranking = store.similarity_search_with_score("doc 7", k=50)
        store.delete(ids[10:20])
    gone = set(ids[10:20])
    with SrvDBVectorStore(tmp_path / "db", embedding=emb) as store:
        assert len(store.database) == 40
        assert store.get_by_ids(ids[10:20]) == []
        assert [d.metadata["i"] for d in store.get_by_ids(ids[20:23])] == [20, 21, 22]
        after = store.similarity_search_with_score("doc 7", k=5)
        assert after == [h for h in ranking if h[0].id not in gone][:5]
        assert after[0][0].id == ids[7]
    # The stored record is plain SrvDB: the text and metadata as JSON.
    with srvdb.open(tmp_path / "db") as db:
        assert db.metric == "cosine"
        assert json.loads(db.get(ids[20]).metadata_text) == {"text": "doc 20", "metadata": {"i": 20}}


def test_upsert_ids_and_delete_semantics(tmp_path):
    texts, vecs, emb = _random_corpus(n=6)
    with SrvDBVectorStore(tmp_path / "db", embedding=emb) as store:
        # Generated ids are uuid4 strings, unique.
        gen = store.add_texts(texts[:2])
        assert len(set(gen)) == 2 and all(len(i) == 36 for i in gen)
        # Document.id is used; an id repeated within a batch keeps the last one.
        ids = store.add_documents([
            Document(page_content="doc 2", id="a"),
            Document(page_content="doc 3", id="a", metadata={"v": 2}),
            Document(page_content="doc 4"),
        ])
        assert ids[:2] == ["a", "a"]
        assert store.get_by_ids(["a"]) == [Document(id="a", page_content="doc 3", metadata={"v": 2})]
        # Re-adding an id replaces it (vector included).
        store.add_texts(["doc 5"], [{"v": 3}], ids=["a"])
        assert store.similarity_search("doc 5", k=1)[0] == Document(id="a", page_content="doc 5", metadata={"v": 3})
        assert len(store.database) == 4
        # Unknown ids are not an error; known ones go.
        assert store.delete(["nope", "a", "a"]) is True
        assert "a" not in store.database and len(store.database) == 3


def test_filters(corpus_store):
    store, _, vecs = corpus_store
    rng = np.random.default_rng(11)
    q = rng.standard_normal(vecs.shape[1]).astype(np.float32)
    sims = _cosine(vecs, q)
    for flt, keep in [
        ({"tag": "x"}, lambda i: i % 5 == 0),
        ({"tag": "x", "parity": 1}, lambda i: i % 5 == 0 and i % 2 == 1),
        ({"i": 123}, lambda i: i == 123),
        ({"tag": "none"}, lambda i: False),
    ]:
        allowed = [i for i in np.argsort(-sims, kind="stable") if keep(i)]
        got = store.similarity_search_by_vector(q.tolist(), k=7, filter=flt)
        assert [d.id for d in got] == [f"id{i}" for i in allowed[:7]], flt
        assert all(all(d.metadata[k] == v for k, v in flt.items()) for d in got)
    # A callable on the Document.
    got = store.similarity_search_by_vector(q.tolist(), k=3, filter=lambda d: d.metadata["i"] < 10)
    assert [d.id for d in got] == [f"id{i}" for i in np.argsort(-sims, kind="stable") if i < 10][:3]
    # MMR filters its candidates too.
    got = store.max_marginal_relevance_search_by_vector(q.tolist(), k=3, filter={"parity": 0})
    assert len(got) == 3 and all(d.metadata["parity"] == 0 for d in got)


def test_from_texts_and_empty(tmp_path):
    texts, _, emb = _random_corpus(n=5)
    store = SrvDBVectorStore.from_texts(texts, emb, [{"n": i} for i in range(5)], ids=list("abcde"), path=tmp_path / "db")
    try:
        assert store.similarity_search("doc 2", k=1)[0].id == "c"
        assert store.database.metric == "cosine"
    finally:
        store.close()
    with SrvDBVectorStore(tmp_path / "empty", embedding=emb) as empty:
        assert empty.similarity_search("doc 1") == []
        assert empty.max_marginal_relevance_search("doc 1") == []
        assert empty.delete(["x"]) is True


def test_importing_srvdb_loads_no_framework():
    out = run_python(
        """
        import sys
        import srvdb, srvdb.integrations
        print(sorted(m for m in sys.modules if m.split('.')[0] in ('langchain_core', 'langchain', 'llama_index')))
        """,
        cwd=REPO,
    )
    assert out.strip() == "[]"


@pytest.mark.parametrize("mode", [[], ["--plain"]])
def test_example_retrieval_pipeline(tmp_path, mode):
    """examples/retrieval_pipeline.py runs offline, through LangChain and through plain srvdb,
    and finds the paragraph that answers."""
    doc = tmp_path / "notes.md"
    doc.write_text(
        "# Tests\n\nRun the python tests with make python-test, which builds the extension "
        "into a virtualenv and runs pytest.\n\n# Crashes\n\nAfter a crash during a write the "
        "database reopens at its last commit; a torn tail is discarded on open.\n",
        encoding="utf-8",
    )
    out = run_python(
        f"""
        import runpy, sys
        sys.argv = ["retrieval_pipeline.py", *{mode!r}, {str(doc)!r}]
        runpy.run_path({str(REPO / "examples" / "retrieval_pipeline.py")!r}, run_name="__main__")
        """,
        cwd=tmp_path,
    )
    assert "indexed 2 chunks" in out
    first_answer = out.split("Q: how do I run the python tests")[1].splitlines()[1]
    assert "[notes.md / Tests]" in first_answer
