"""The LlamaIndex adapter (srvdb.integrations.llama_index): add, top-k query against NumPy,
metadata filters against LlamaIndex's own evaluator, MMR against SimpleVectorStore, queries
without an embedding, delete by ref_doc_id, old-layout records, reopen. Needs llama-index-core, which
`make python-test` installs (python/requirements-integrations.txt)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("llama_index.core", reason="llama-index-core not installed (pip install -r python/requirements-integrations.txt)")

from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode  # noqa: E402
from llama_index.core.vector_stores.types import (  # noqa: E402
    ExactMatchFilter,
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)

import srvdb  # noqa: E402
from srvdb.integrations.llama_index import SrvDBVectorStore  # noqa: E402

N, DIM = 120, 12


def _nodes(seed=5):
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((N, DIM)).astype(np.float32)
    nodes = []
    for i in range(N):
        node = TextNode(
            id_=f"n{i}",
            text=f"text {i}",
            metadata={"i": i, "colour": ["red", "green", "blue"][i % 3]},
            embedding=vecs[i].tolist(),
        )
        node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=f"doc{i // 10}")
        nodes.append(node)
    return nodes, vecs


def _cosine(m, q):
    m = m.astype(np.float64)
    q = np.asarray(q, dtype=np.float64)
    return (m @ q) / (np.linalg.norm(m, axis=1) * np.linalg.norm(q))


@pytest.fixture
def store(tmp_path):
    s = SrvDBVectorStore(tmp_path / "db")
    yield s
    if not s.client.closed:
        s.close()


def test_add_and_query_top_k(store):
    nodes, vecs = _nodes()
    assert store.stores_text is True
    assert store.add(nodes) == [n.node_id for n in nodes]
    assert len(store.client) == N and store.client.metric == "cosine"
    rng = np.random.default_rng(2)
    for _ in range(5):
        q = rng.standard_normal(DIM).astype(np.float32)
        sims = _cosine(vecs, q)
        order = np.argsort(-sims, kind="stable")[:8]
        res = store.query(VectorStoreQuery(query_embedding=q.tolist(), similarity_top_k=8))
        assert res.ids == [f"n{i}" for i in order]
        np.testing.assert_allclose(res.similarities, sims[order], rtol=1e-5, atol=1e-5)
        for node, i in zip(res.nodes, order):
            assert node.get_content() == f"text {i}"
            assert node.metadata == {"i": int(i), "colour": ["red", "green", "blue"][i % 3]}
            assert node.ref_doc_id == f"doc{i // 10}"
    # The text is the record's document, where db.query() and Record.document see it.
    assert store.client.get("n5").document == "text 5"
    assert store.client.get("n5").metadata["colour"] == "blue"


def test_query_filters(store):
    nodes, vecs = _nodes()
    store.add(nodes)
    q = np.random.default_rng(9).standard_normal(DIM).astype(np.float32)
    ranked = np.argsort(-_cosine(vecs, q), kind="stable")
    flt = MetadataFilters(filters=[ExactMatchFilter(key="colour", value="blue")])
    res = store.query(VectorStoreQuery(query_embedding=q.tolist(), similarity_top_k=5, filters=flt))
    assert res.ids == [f"n{i}" for i in ranked if i % 3 == 2][:5]
    flt = MetadataFilters(filters=[
        MetadataFilter(key="colour", value="red"),
        MetadataFilter(key="i", value=60, operator=FilterOperator.GTE),
    ])
    res = store.query(VectorStoreQuery(query_embedding=q.tolist(), similarity_top_k=4, filters=flt))
    assert res.ids == [f"n{i}" for i in ranked if i % 3 == 0 and i >= 60][:4]
    res = store.query(VectorStoreQuery(query_embedding=q.tolist(), similarity_top_k=50, doc_ids=["doc3"]))
    assert res.ids == [f"n{i}" for i in ranked if i // 10 == 3]


# -- filters against LlamaIndex's own evaluator ---------------------------------------------------

WORDS = ["ant", "bee", "cat", "dog", "eel"]


def _random_metadata(rng, i):
    """Metadata whose fields each keep one type (LlamaIndex's evaluator raises on mixed types)
    and are sometimes missing: the cases where both sides define the answer."""
    md = {}
    if rng.random() < 0.8:
        md["n"] = int(rng.integers(0, 20)) if rng.random() < 0.5 else float(rng.integers(0, 40)) / 2
    if rng.random() < 0.8:
        md["w"] = str(rng.choice(WORDS))
    if rng.random() < 0.7:
        md["tags"] = sorted({str(t) for t in rng.choice(WORDS, size=int(rng.integers(0, 4)))})
    if rng.random() < 0.3:
        md["e"] = str(rng.choice(["", "x"]))
    return md


def _pick(rng, options):
    return options[int(rng.integers(len(options)))]


def _random_filter(rng):
    kind = rng.integers(0, 5)
    if kind == 0:
        op = _pick(rng, [FilterOperator.EQ, FilterOperator.NE, FilterOperator.GT,
                         FilterOperator.GTE, FilterOperator.LT, FilterOperator.LTE])
        return MetadataFilter(key="n", value=int(rng.integers(-1, 21)) if rng.random() < 0.5 else 7.5, operator=op)
    if kind == 1:
        op = _pick(rng, [FilterOperator.EQ, FilterOperator.NE, FilterOperator.GT, FilterOperator.LTE])
        return MetadataFilter(key="w", value=str(rng.choice(WORDS)), operator=op)
    if kind == 2:
        op = _pick(rng, [FilterOperator.IN, FilterOperator.NIN])
        key, pool = ("n", list(range(20))) if rng.random() < 0.5 else ("w", WORDS)
        return MetadataFilter(key=key, value=[pool[j] for j in rng.choice(len(pool), size=int(rng.integers(0, 4)))], operator=op)
    if kind == 3:
        op = _pick(rng, [FilterOperator.ANY, FilterOperator.ALL])
        return MetadataFilter(key="tags", value=[str(w) for w in rng.choice(WORDS, size=int(rng.integers(1, 3)))], operator=op)
    if rng.random() < 0.5:
        return MetadataFilter(key="tags", value=str(rng.choice(WORDS)), operator=FilterOperator.CONTAINS)
    return MetadataFilter(key=str(rng.choice(["e", "tags", "n"])), value=None, operator=FilterOperator.IS_EMPTY)


def test_filters_agree_with_llama_index_evaluator(tmp_path):
    """Random MetadataFilters (every operator that maps, AND/OR/NOT) select, through the
    engine, exactly the nodes LlamaIndex's own evaluator (build_metadata_filter_fn) selects,
    ranked as NumPy ranks those nodes."""
    from llama_index.core.vector_stores.utils import build_metadata_filter_fn

    rng = np.random.default_rng(15)
    n = 300
    vecs = rng.standard_normal((n, DIM)).astype(np.float32)
    metas = [_random_metadata(rng, i) for i in range(n)]
    store = SrvDBVectorStore(tmp_path / "db")
    try:
        store.add([TextNode(id_=f"n{i}", text=f"t{i}", metadata=metas[i], embedding=vecs[i].tolist()) for i in range(n)])
        for round_ in range(300):
            condition = [FilterCondition.AND, FilterCondition.OR, FilterCondition.NOT][round_ % 3]
            flt = MetadataFilters(filters=[_random_filter(rng) for _ in range(int(rng.integers(1, 4)))], condition=condition)
            keep = build_metadata_filter_fn(lambda i: metas[i], flt)
            q = rng.standard_normal(DIM).astype(np.float32)
            expect = [f"n{i}" for i in np.argsort(-_cosine(vecs, q), kind="stable") if keep(i)]
            k = int(rng.integers(1, 40))
            res = store.query(VectorStoreQuery(query_embedding=q.tolist(), similarity_top_k=k, filters=flt))
            assert res.ids == expect[:k], flt
            got = store.get_nodes(filters=flt)
            assert sorted(nd.node_id for nd in got) == sorted(expect), flt
    finally:
        store.close()


def test_nested_filters_and_unmapped_operators(store):
    nodes, vecs = _nodes()
    store.add(nodes)
    q = np.random.default_rng(4).standard_normal(DIM).astype(np.float32)
    ranked = np.argsort(-_cosine(vecs, q), kind="stable")
    flt = MetadataFilters(
        filters=[
            MetadataFilter(key="colour", value="green"),
            MetadataFilters(
                filters=[
                    MetadataFilter(key="i", value=10, operator=FilterOperator.LT),
                    MetadataFilter(key="i", value=100, operator=FilterOperator.GT),
                ],
                condition=FilterCondition.OR,
            ),
        ]
    )
    res = store.query(VectorStoreQuery(query_embedding=q.tolist(), similarity_top_k=20, filters=flt))
    assert res.ids == [f"n{i}" for i in ranked if i % 3 == 1 and (i < 10 or i > 100)]
    for op in (FilterOperator.TEXT_MATCH, FilterOperator.TEXT_MATCH_INSENSITIVE):
        bad = MetadataFilters(filters=[MetadataFilter(key="colour", value="re", operator=op)])
        with pytest.raises(NotImplementedError, match="substring"):
            store.query(VectorStoreQuery(query_embedding=q.tolist(), similarity_top_k=3, filters=bad))
    # A value the dialect cannot compare is the engine's typed error.
    bad = MetadataFilters(filters=[MetadataFilter(key="i", value="x", operator=FilterOperator.IN)])
    with pytest.raises(srvdb.InvalidFilterError):
        store.query(VectorStoreQuery(query_embedding=q.tolist(), similarity_top_k=3, filters=bad))


def test_node_ids_doc_ids_and_no_embedding(store):
    nodes, vecs = _nodes()
    store.add(nodes)
    q = vecs[33]
    ranked = np.argsort(-_cosine(vecs, q), kind="stable")
    picked = ["n5", "n33", "n34", "n90", "nope"]
    res = store.query(VectorStoreQuery(query_embedding=q.tolist(), similarity_top_k=3, node_ids=picked))
    assert res.ids == [f"n{i}" for i in ranked if f"n{i}" in picked][:3]
    np.testing.assert_allclose(res.similarities, _cosine(vecs, q)[[int(i[1:]) for i in res.ids]], rtol=1e-5, atol=1e-5)
    red = MetadataFilters(filters=[MetadataFilter(key="colour", value="red")])
    res = store.query(VectorStoreQuery(query_embedding=q.tolist(), similarity_top_k=3, node_ids=picked, filters=red))
    assert res.ids == [f"n{i}" for i in ranked if f"n{i}" in picked and i % 3 == 0][:3]
    res = store.query(VectorStoreQuery(query_embedding=q.tolist(), similarity_top_k=30, doc_ids=["doc3", "doc7"], filters=red))
    assert res.ids == [f"n{i}" for i in ranked if i // 10 in (3, 7) and i % 3 == 0]
    # No embedding: the first top_k matching nodes, in insertion order.
    res = store.query(VectorStoreQuery(similarity_top_k=4, filters=red))
    assert res.ids == ["n0", "n3", "n6", "n9"] and res.similarities is None
    assert [n.get_content() for n in res.nodes] == ["text 0", "text 3", "text 6", "text 9"]
    res = store.query(VectorStoreQuery(similarity_top_k=10, doc_ids=["doc11"]))
    assert res.ids == [f"n{i}" for i in range(110, 120)]


def test_mmr_matches_simple_vector_store(store):
    """MMR mode picks what LlamaIndex's SimpleVectorStore picks when the candidates are all
    the matching nodes."""
    from llama_index.core.vector_stores import SimpleVectorStore

    nodes, vecs = _nodes()
    store.add(nodes)
    simple = SimpleVectorStore()
    simple.add(nodes)
    rng = np.random.default_rng(8)
    for threshold in (0.1, 0.5, 0.9):
        q = rng.standard_normal(DIM).astype(np.float32).tolist()
        query = VectorStoreQuery(query_embedding=q, similarity_top_k=6, mode=VectorStoreQueryMode.MMR, mmr_threshold=threshold)
        ours = store.query(query, mmr_prefetch_k=N)
        theirs = simple.query(query, mmr_threshold=threshold)
        assert ours.ids == theirs.ids
        np.testing.assert_allclose(ours.similarities, theirs.similarities, rtol=1e-4, atol=1e-5)
    # Filtered: the candidates are the matching nodes only.
    blue = MetadataFilters(filters=[MetadataFilter(key="colour", value="blue")])
    query = VectorStoreQuery(query_embedding=q, similarity_top_k=5, mode=VectorStoreQueryMode.MMR, filters=blue)
    ours = store.query(query, mmr_prefetch_k=N)
    assert ours.ids == simple.query(query).ids and all(int(i[1:]) % 3 == 2 for i in ours.ids)
    # The default prefetch (4 x top_k) still returns top_k matching nodes.
    assert len(store.query(query).ids) == 5


def test_reads_records_of_the_old_layout(tmp_path):
    """Earlier versions kept the text inside _node_content and no document: still readable."""
    from llama_index.core.vector_stores.utils import node_to_metadata_dict

    nodes, vecs = _nodes()
    with srvdb.open(tmp_path / "db", metric="cosine") as db:
        db.add([n.node_id for n in nodes[:10]], vecs[:10], [node_to_metadata_dict(n, remove_text=False) for n in nodes[:10]])
    store = SrvDBVectorStore(tmp_path / "db")
    try:
        res = store.query(VectorStoreQuery(query_embedding=vecs[4].tolist(), similarity_top_k=1))
        assert res.ids == ["n4"] and res.nodes[0].get_content() == "text 4"
        assert [n.get_content() for n in store.get_nodes(["n2"])] == ["text 2"]
        store.delete("doc0")
        assert len(store.client) == 0
    finally:
        store.close()


def test_delete_by_ref_doc_id_and_reopen(tmp_path):
    nodes, vecs = _nodes()
    store = SrvDBVectorStore(tmp_path / "db")
    store.add(nodes)
    store.delete("doc2")
    store.delete("no such doc")
    assert len(store.client) == N - 10
    assert all(f"n{i}" not in store.client for i in range(20, 30))
    # Re-adding a node id replaces it.
    replaced = TextNode(id_="n0", text="new text", metadata={"i": 0, "colour": "red"}, embedding=vecs[1].tolist())
    store.add([replaced])
    store.close()

    store = SrvDBVectorStore(tmp_path / "db")
    try:
        assert len(store.client) == N - 10
        q = vecs[1]
        res = store.query(VectorStoreQuery(query_embedding=q.tolist(), similarity_top_k=2))
        assert set(res.ids) == {"n0", "n1"}
        assert res.similarities[0] == pytest.approx(1.0, abs=1e-5)
        assert store.get_nodes(["n0"])[0].get_content() == "new text"
        ranked = [i for i in np.argsort(-_cosine(vecs, vecs[25]), kind="stable") if not 20 <= i < 30 and i != 0]
        res = store.query(VectorStoreQuery(query_embedding=vecs[25].tolist(), similarity_top_k=5))
        assert [i for i in res.ids if i != "n0"][:4] == [f"n{i}" for i in ranked][:4]
        store.delete_nodes(filters=MetadataFilters(filters=[ExactMatchFilter(key="colour", value="green")]))
        assert all(n.metadata["colour"] != "green" for n in store.get_nodes())
    finally:
        store.close()
    with srvdb.open(tmp_path / "db") as db:
        assert db.get("n3").metadata["ref_doc_id"] == "doc0"


def test_with_vector_store_index(tmp_path):
    """End to end through VectorStoreIndex with a local deterministic embedding model."""
    from llama_index.core import Document, StorageContext, VectorStoreIndex
    from llama_index.core.embeddings import MockEmbedding

    store = SrvDBVectorStore(tmp_path / "db")
    try:
        index = VectorStoreIndex.from_documents(
            [Document(text=f"document number {i}", id_=f"d{i}") for i in range(5)],
            storage_context=StorageContext.from_defaults(vector_store=store),
            embed_model=MockEmbedding(embed_dim=8),
        )
        assert len(store.client) == 5
        hits = index.as_retriever(similarity_top_k=3).retrieve("document")
        assert len(hits) == 3 and all(h.node.get_content().startswith("document number") for h in hits)
        index.delete_ref_doc("d1")
        assert len(store.client) == 4
    finally:
        store.close()
