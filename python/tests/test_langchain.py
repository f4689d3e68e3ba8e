"""The LangChain adapter (srvdb.integrations.langchain): LangChain's standard vector store
suite, then our own checks (scores against NumPy, by-vector search, MMR against a reference
written here, persistence, filters). Needs langchain-core and langchain-tests, which
`make python-test` installs (python/requirements-integrations.txt)."""

from __future__ import annotations

import json
import re

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
    # The stored record is plain SrvDB: the text in the document column, the metadata as is.
    with srvdb.open(tmp_path / "db") as db:
        assert db.metric == "cosine"
        rec = db.get(ids[20])
        assert rec.document == "doc 20"
        assert rec.metadata == {"i": 20}
        np.testing.assert_array_equal(rec.vector, vecs[20])


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
        assert store.delete() is False and len(store.database) == 3


# Filters in Chroma's dialect, each with the same selection written as a Python predicate on
# (row number, metadata): the reference the engine's filtered search is checked against.
FILTERS = [
    ({"tag": "x"}, lambda i, m: i % 5 == 0),
    ({"tag": "x", "parity": 1}, lambda i, m: i % 5 == 0 and i % 2 == 1),
    ({"i": 123}, lambda i, m: i == 123),
    ({"i": 123.0}, lambda i, m: i == 123),
    ({"tag": "none"}, lambda i, m: False),
    ({"i": {"$gt": 150, "$lte": 170}}, lambda i, m: 150 < i <= 170),
    ({"i": {"$in": [3, 77, 199, 5000]}}, lambda i, m: i in (3, 77, 199)),
    ({"i": {"$nin": [0, 1, 2]}}, lambda i, m: i > 2),
    ({"tag": {"$ne": "x"}}, lambda i, m: i % 5 != 0),
    ({"$or": [{"i": {"$lt": 4}}, {"tag": "x", "parity": 1}]}, lambda i, m: i < 4 or (i % 5 == 0 and i % 2 == 1)),
    ({"$not": {"tag": "y"}}, lambda i, m: i % 5 == 0),
    ({"nested.decade": 3}, lambda i, m: i // 10 == 3),
    ({"labels": "prime"}, lambda i, m: _is_prime(i)),
    ({"only_some": {"$ne": 1}}, lambda i, m: i % 7 != 0 or i % 2 == 0),  # a missing field matches $ne
    ({"only_some": {"$gte": 0}}, lambda i, m: i % 7 == 0),  # and no other operator
    ({"tag": {"$gt": 1}}, lambda i, m: False),  # strings compare only with strings
    ({}, lambda i, m: True),
]


def _is_prime(n):
    return n > 1 and all(n % d for d in range(2, int(n**0.5) + 1))


def _metadata(i):
    md = {
        "i": i,
        "parity": i % 2,
        "tag": "x" if i % 5 == 0 else "y",
        "nested": {"decade": i // 10},
        "labels": ["prime"] if _is_prime(i) else ["composite", "other"],
    }
    if i % 7 == 0:
        md["only_some"] = 1 if i % 2 else 0
    return md


@pytest.fixture
def filter_store(tmp_path):
    texts, vecs, emb = _random_corpus()
    store = SrvDBVectorStore(tmp_path / "db", embedding=emb)
    store.add_texts(texts, [_metadata(i) for i in range(len(texts))], ids=[f"id{i}" for i in range(len(texts))])
    yield store, vecs
    store.close()


@pytest.mark.parametrize("flt,keep", FILTERS, ids=[json.dumps(f) for f, _ in FILTERS])
def test_filtered_search_equals_brute_force(filter_store, flt, keep):
    """k results, exactly the k best of the rows the filter selects (NumPy over those rows),
    however few rows that is: no post-filtering."""
    store, vecs = filter_store
    rng = np.random.default_rng(11)
    for _ in range(3):
        q = rng.standard_normal(vecs.shape[1]).astype(np.float32)
        sims = _cosine(vecs, q)
        allowed = [i for i in np.argsort(-sims, kind="stable") if keep(i, _metadata(i))]
        for k in (1, 7, 60):
            got = store.similarity_search_with_score_by_vector(q.tolist(), k=k, filter=flt)
            assert [d.id for d, _ in got] == [f"id{i}" for i in allowed[:k]], (flt, k)
            np.testing.assert_allclose([s for _, s in got], sims[allowed[:k]], rtol=1e-5, atol=1e-5)
            assert all(d.metadata == _metadata(int(d.id[2:])) for d, _ in got)


def test_selective_filter_returns_k(tmp_path):
    """A filter matching 1% of 2,000 rows still gives k hits, the k best of those rows."""
    n, dim, k = 2000, 8, 10
    rng = np.random.default_rng(4)
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    texts = [f"t{i}" for i in range(n)]
    store = SrvDBVectorStore(tmp_path / "db", embedding=TableEmbeddings(dict(zip(texts, vecs))))
    with store:
        store.add_texts(texts, [{"user": "rare" if i % 100 == 0 else "common"} for i in range(n)], ids=texts)
        q = rng.standard_normal(dim).astype(np.float32)
        sims = _cosine(vecs, q)
        expect = [f"t{i}" for i in np.argsort(-sims, kind="stable") if i % 100 == 0][:k]
        got = store.similarity_search_by_vector(q.tolist(), k=k, filter={"user": "rare"})
        assert [d.id for d in got] == expect and len(expect) == k
        # Through a retriever too.
        retriever = store.as_retriever(search_kwargs={"k": k, "filter": {"user": "rare"}})
        assert [d.id for d in retriever.invoke("t5")] == [
            f"t{i}" for i in np.argsort(-_cosine(vecs, vecs[5]), kind="stable") if i % 100 == 0
        ][:k]


def test_where_document(filter_store):
    store, vecs = filter_store
    q = vecs[42]
    sims = _cosine(vecs, q)
    ranked = np.argsort(-sims, kind="stable")
    # The texts are "doc {i}": "doc 1" is in doc 1, doc 10..19, doc 100..199.
    got = store.similarity_search_by_vector(q.tolist(), k=50, where_document={"$contains": "doc 1"})
    assert [d.id for d in got] == [f"id{i}" for i in ranked if str(i).startswith("1")][:50]
    got = store.similarity_search_by_vector(
        q.tolist(), k=5, filter={"parity": 0}, where_document={"$not_contains": "4"}
    )
    assert [d.id for d in got] == [f"id{i}" for i in ranked if i % 2 == 0 and "4" not in str(i)][:5]
    got = store.max_marginal_relevance_search_by_vector(q.tolist(), k=3, where_document={"$contains": "doc 2"})
    assert len(got) == 3 and all(d.page_content.startswith("doc 2") for d in got)


def test_mmr_and_text_search_take_filters(filter_store):
    store, vecs = filter_store
    q = np.random.default_rng(2).standard_normal(vecs.shape[1]).astype(np.float32)
    fetch_k, k = 20, 4
    cand = [i for i in np.argsort(-_cosine(vecs, q), kind="stable") if i % 2 == 0][:fetch_k]
    expect = [f"id{cand[i]}" for i in _reference_mmr(q, vecs[cand], k, 0.5)]
    got = store.max_marginal_relevance_search_by_vector(q.tolist(), k=k, fetch_k=fetch_k, filter={"parity": 0})
    assert [d.id for d in got] == expect
    hits = store.similarity_search("doc 10", k=3, filter={"tag": "x"})
    assert hits[0].id == "id10" and all(d.metadata["tag"] == "x" for d in hits)
    scored = store.similarity_search_with_relevance_scores("doc 10", k=3, filter={"tag": "x"})
    assert [d for d, _ in scored] == hits


def test_malformed_filters_raise(filter_store):
    store, vecs = filter_store
    q = vecs[0].tolist()
    for bad, part in [
        ({"i": {"$bogus": 1}}, "where.i.$bogus"),
        ({"$and": []}, "where.$and"),
        ({"i": {"$gt": True}}, "where.i.$gt"),
        ({"i": {"$in": 3}}, "where.i.$in"),
    ]:
        with pytest.raises(srvdb.InvalidFilterError, match=re.escape(part)) as info:
            store.similarity_search_by_vector(q, k=3, filter=bad)
        assert isinstance(info.value, ValueError)
    with pytest.raises(srvdb.InvalidFilterError, match="where_document"):
        store.similarity_search_by_vector(q, k=3, where_document={"$has": "x"})
    with pytest.raises(TypeError, match="Chroma"):
        store.similarity_search_by_vector(q, k=3, filter=lambda d: True)


def test_get_shaped_as_chroma(filter_store):
    store, vecs = filter_store
    everything = store.get()
    assert everything["ids"] == [f"id{i}" for i in range(200)]
    assert everything["documents"] == [f"doc {i}" for i in range(200)]
    assert everything["metadatas"] == [_metadata(i) for i in range(200)]
    assert everything["embeddings"] is None
    picked = store.get(where={"tag": "x"}, limit=4, offset=2, include=["embeddings"])
    assert picked["ids"] == ["id10", "id15", "id20", "id25"]
    assert picked["documents"] is None and picked["metadatas"] is None
    np.testing.assert_array_equal(np.stack(picked["embeddings"]), vecs[[10, 15, 20, 25]])
    by_ids = store.get(ids=["id7", "nope", "id5", "id3"], where={"parity": 1})
    assert by_ids["ids"] == ["id7", "id5", "id3"]
    assert store.get(ids="id9")["documents"] == ["doc 9"]
    assert store.get(ids=["id7", "id5", "id3"], limit=1, offset=1)["ids"] == ["id5"]
    assert store.get(where_document={"$contains": "doc 19"})["ids"] == ["id19"] + [f"id{i}" for i in range(190, 200)]
    with pytest.raises(ValueError, match="include"):
        store.get(include=["distances"])


def test_delete_by_filter(filter_store):
    store, _ = filter_store
    assert store.delete(where={"tag": "x"}) is True
    left = store.get()["ids"]
    assert left == [f"id{i}" for i in range(200) if i % 5 != 0]
    # Ids and a filter: only those of the ids the filter selects (unknown ids ignored).
    store.delete(["id1", "id2", "id3", "id5", "nope"], where={"parity": 1})
    assert store.get(ids=["id1", "id2", "id3"])["ids"] == ["id2"]
    store.delete(where_document={"$contains": "doc 19"})
    assert store.get(where={"i": {"$gte": 190}})["ids"] == []
    assert len(store.database) == 200 - 40 - 2 - 9  # 190 and 195 went with tag x


def test_update_documents(filter_store):
    store, vecs = filter_store
    emb = store.embeddings
    emb.table["new text"] = vecs[150]
    store.update_documents(["id3"], [Document(page_content="new text", metadata={"tag": "z"})])
    doc = store.get_by_ids(["id3"])[0]
    assert (doc.page_content, doc.metadata) == ("new text", {"tag": "z"})
    np.testing.assert_array_equal(store.database.get("id3").vector, vecs[150])
    hits = store.similarity_search_by_vector(vecs[150].tolist(), k=2)
    assert {d.id for d in hits} == {"id3", "id150"}
    assert [d.id for d in store.similarity_search_by_vector(vecs[0].tolist(), k=5, filter={"tag": "z"})] == ["id3"]
    store.update_document("id4", Document(page_content="new text", metadata={}))
    assert store.get(ids=["id4"])["metadatas"] == [{}]
    with pytest.raises(srvdb.NotFoundError):
        store.update_documents(["id5", "nope"], [Document(page_content="new text")] * 2)
    assert store.get_by_ids(["id5"])[0].page_content == "doc 5"


def test_reads_and_upgrades_stores_of_the_old_layout(tmp_path):
    """The adapter used to keep {"text", "metadata"} JSON in the record's metadata: such a
    store opens, reads as before, and is rewritten to the new layout (vectors untouched)."""
    texts, vecs, emb = _random_corpus(n=30)
    ids = [f"id{i}" for i in range(30)]
    with srvdb.open(tmp_path / "db", metric="cosine") as db:
        db.add(ids, vecs, [json.dumps({"text": t, "metadata": {"i": i}}) for i, t in enumerate(texts)])
        # Records the adapter did not write keep their own shape.
        db.add(["plain", "dict"], vecs[:2], ["just a string", {"text": "t", "other": 1}])
    with SrvDBVectorStore(tmp_path / "db", embedding=emb) as store:
        assert store.get_by_ids(["id4"]) == [Document(id="id4", page_content="doc 4", metadata={"i": 4})]
        assert store.get_by_ids(["plain"]) == [Document(id="plain", page_content="just a string", metadata={})]
        assert store.get_by_ids(["dict"])[0].metadata == {"text": "t", "other": 1}
        got = store.similarity_search_by_vector(vecs[4].tolist(), k=3, filter={"i": {"$lt": 10}})
        sims = _cosine(vecs, vecs[4])
        assert [d.id for d in got] == [f"id{i}" for i in np.argsort(-sims, kind="stable") if i < 10][:3]
    with srvdb.open(tmp_path / "db") as db:
        rec = db.get("id7")
        assert (rec.document, rec.metadata) == ("doc 7", {"i": 7})
        np.testing.assert_array_equal(rec.vector, vecs[7])
        assert db.get("plain").metadata_text == "just a string" and db.get("plain").document is None


def test_collections_as_chroma_names_them(tmp_path):
    texts, vecs, emb = _random_corpus(n=10)
    a = SrvDBVectorStore(persist_directory=tmp_path / "root", collection_name="a", embedding_function=emb)
    b = SrvDBVectorStore.from_texts(texts[:3], emb, persist_directory=tmp_path / "root", collection_name="b")
    with a, b:
        a.add_texts(texts, ids=[f"a{i}" for i in range(10)])
        assert len(a.database) == 10 and len(b.database) == 3
        assert (tmp_path / "root" / "a").is_dir() and (tmp_path / "root" / "b").is_dir()
    with SrvDBVectorStore(persist_directory=tmp_path / "root", collection_name="a", embedding=emb) as again:
        assert again.similarity_search("doc 3", k=1)[0].id == "a3"
    with pytest.raises(ValueError):  # a name that would leave the directory
        SrvDBVectorStore(persist_directory=tmp_path / "root", collection_name="../x", embedding=emb)
    with pytest.raises(ValueError, match="persist_directory"):
        SrvDBVectorStore(tmp_path / "db", collection_name="a", embedding=emb)
    # Without a directory the store is ephemeral, as Chroma's is.
    with SrvDBVectorStore(embedding=emb) as mem:
        mem.add_texts(texts[:2], ids=["x", "y"])
        assert mem.similarity_search("doc 1", k=1)[0].id == "y"
    with SrvDBVectorStore(embedding=emb) as mem:
        assert len(mem.database) == 0


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
        assert empty.similarity_search("doc 1", filter={"n": 1}) == []
        assert empty.max_marginal_relevance_search("doc 1") == []
        assert empty.delete(["x"]) is True
        assert empty.get()["ids"] == []


def test_reopen_keeps_the_metric(tmp_path):
    texts, _, emb = _random_corpus(n=5)
    with SrvDBVectorStore(tmp_path / "db", embedding=emb, metric="l2") as store:
        store.add_texts(texts)
    with SrvDBVectorStore(tmp_path / "db", embedding=emb) as store:
        assert store.database.metric == "l2"
        doc, score = store.similarity_search_with_score("doc 2", k=1)[0]
        assert doc.page_content == "doc 2" and score == pytest.approx(0.0, abs=1e-5)


# -- the built-in embedder ------------------------------------------------------------------------

TEXT_REFERENCE = json.loads((REPO / "tests/data/text_reference.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def minilm(model):
    """The MiniLM folder (conftest's `model`: installed if needed, a skip only if that fails)."""
    return model


def test_srvdb_embeddings_match_sentence_transformers(minilm):
    from srvdb.integrations.langchain import SrvDBEmbeddings

    sentences = [s["text"] for s in TEXT_REFERENCE["sentences"]]
    reference = np.array([s["vector"] for s in TEXT_REFERENCE["sentences"]], dtype=np.float64)
    emb = SrvDBEmbeddings(minilm)
    ours = np.asarray(emb.embed_documents(sentences), dtype=np.float64)
    cos = (ours * reference).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(reference, axis=1))
    assert cos.min() >= 0.9999
    np.testing.assert_allclose(emb.embed_query(sentences[3]), ours[3], rtol=1e-6, atol=1e-6)
    assert emb.embed_documents([]) == []


def test_store_over_a_text_database_shares_its_text(minilm, tmp_path):
    """With no `embedding`, a text database's own model embeds, and the engine's text API
    (db.query, Record.document) sees what the store wrote."""
    sentences = [s["text"] for s in TEXT_REFERENCE["sentences"]][:10]
    db = srvdb.open(tmp_path / "db", embedder=minilm)
    with SrvDBVectorStore(database=db) as store:
        store.add_texts(sentences, [{"n": i} for i in range(10)], ids=[f"s{i}" for i in range(10)])
        hit = db.query(sentences[2], k=1)[0]
        assert hit[0] == "s2" and hit[2] == sentences[2]
        assert db.get("s2").document == sentences[2]
        assert store.similarity_search(sentences[2], k=1, filter={"n": {"$ne": 2}})[0].id != "s2"


def test_old_layout_upgrade_keeps_vectors_of_a_text_database(minilm, tmp_path):
    """A text database's update embeds documents given without vectors; the upgrade must not
    replace the vectors the old adapter stored."""
    vecs = np.random.default_rng(6).standard_normal((3, 384)).astype(np.float32)
    db = srvdb.open(tmp_path / "db", embedder=minilm)
    db.add(["a", "b", "c"], vecs, [json.dumps({"text": f"text {i}", "metadata": {"i": i}}) for i in range(3)])
    with SrvDBVectorStore(database=db) as store:
        assert store.get()["documents"] == ["text 0", "text 1", "text 2"]
        for i, id_ in enumerate("abc"):
            np.testing.assert_array_equal(db.get(id_).vector, vecs[i])
            assert db.get(id_).metadata == {"i": i}


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
