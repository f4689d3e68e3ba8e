"""The LlamaIndex adapter (srvdb.integrations.llama_index): add, top-k query against NumPy,
metadata filters, delete by ref_doc_id, reopen. Needs llama-index-core, which
`make python-test` installs (python/requirements-integrations.txt)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("llama_index.core", reason="llama-index-core not installed (pip install -r python/requirements-integrations.txt)")

from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode  # noqa: E402
from llama_index.core.vector_stores.types import (  # noqa: E402
    ExactMatchFilter,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
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
