"""Qdrant Edge (`qdrant-edge-py`): Qdrant's embedded engine, a shard in this process with no
server. An HNSW index (m=16, ef_construct=100, searched with hnsw_ef=128), so approximate: its
recall is reported, not assumed. Payload indexes on `bucket` (integer) and `source` (keyword)
are made before the shard is optimized, as Qdrant advises for filtered search; indexing never
starts by itself, so ingest ends with `optimize()`."""

from __future__ import annotations

from .base import Adapter, dist_version


class QdrantEdge(Adapter):
    name = "qdrant-edge"
    exact = False
    how = ("EdgeShard.create(path, EdgeConfig(Distance.Dot, HNSW m=16 ef_construct=100, "
           "full_scan_threshold=10000 as Qdrant's default)), upsert in batches of 1,000, "
           "payload indexes on bucket/source, optimize(), flush(); "
           "query(Query.Nearest, SearchParams(hnsw_ef=128))")
    filtered = ("query(filter=Filter(must=[FieldCondition(key=\"bucket\", match=MatchValue(v))])) "
                "with the payload index on bucket (made at ingest)")

    def __init__(self):
        import qdrant_edge

        self.qe = qdrant_edge

    def version(self):
        return dist_version("qdrant-edge-py")

    def ingest(self, path, ids, vectors, metadatas):
        qe = self.qe
        config = qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=vectors.shape[1], distance=qe.Distance.Dot),
            hnsw_config=qe.HnswIndexConfig(m=16, ef_construct=100, full_scan_threshold=10_000))
        shard = qe.EdgeShard.create(str(path), config)
        shard.update(qe.UpdateOperation.create_field_index("bucket", qe.PayloadSchemaType.Integer))
        shard.update(qe.UpdateOperation.create_field_index("source", qe.PayloadSchemaType.Keyword))
        for start in range(0, len(ids), 1000):
            stop = min(start + 1000, len(ids))
            shard.update(qe.UpdateOperation.upsert_points([
                qe.Point(id=i, vector=vectors[i].tolist(), payload=metadatas[i])
                for i in range(start, stop)]))
        shard.optimize()
        shard.flush()
        _close(shard)

    def open(self, path):
        self.shard = self.qe.EdgeShard.load(str(path))
        self.params = self.qe.SearchParams(hnsw_ef=128)

    def _query(self, query, k, flt=None):
        qe = self.qe
        req = qe.QueryRequest(limit=k, query=qe.Query.Nearest(query.tolist()), filter=flt,
                              params=self.params)
        return [int(p.id) for p in self.shard.query(req)]

    def search(self, query, k):
        return self._query(query, k)

    def search_where(self, query, k, bucket, mode):
        qe = self.qe
        flt = qe.Filter(must=[qe.FieldCondition(key="bucket", match=qe.MatchValue(bucket))])
        return self._query(query, k, flt)

    def close(self):
        _close(self.shard)


def _close(shard) -> None:
    close = getattr(shard, "close", None)
    if close is not None:
        close()
