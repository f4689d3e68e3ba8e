"""qdrant-client in local mode (`QdrantClient(path=...)`: no server, points kept in a SQLite
file by the client), dot product, searched with `SearchParams(exact=True)`."""

from __future__ import annotations

import numpy as np

from .base import Adapter, dist_version

COLLECTION = "bench"


class QdrantLocal(Adapter):
    name = "qdrant-local"
    has_batch = True
    how = ("QdrantClient(path=...), Distance.DOT, query_points(exact=True); batch: "
           "query_batch_points. Ingest with the client's SQLite at synchronous=OFF, made durable "
           "by close + fsync like the others: by default it commits and fsyncs every point, "
           "too slow for 50,000 rows in this run's time budget")
    filtered = ("query_points(query_filter=Filter(must=[FieldCondition(key=\"bucket\", "
                "match=MatchValue(value=v))])), exact=True; local mode has no payload index")

    def __init__(self):
        import qdrant_client
        from qdrant_client import models

        self.qc = qdrant_client
        self.models = models

    def version(self):
        return dist_version("qdrant-client")

    def ingest(self, path, ids, vectors, metadatas):
        m = self.models
        client = self.qc.QdrantClient(path=str(path))
        client.create_collection(COLLECTION, vectors_config=m.VectorParams(
            size=vectors.shape[1], distance=m.Distance.DOT))
        # Local mode keeps points in SQLite and commits each one; without fsync per commit
        # the bulk load finishes in minutes instead of hours (durability comes from the close
        # and the caller's fsync of every file, as for every library).
        client._client.collections[COLLECTION].storage.storage.execute("PRAGMA synchronous=OFF")
        for start in range(0, len(ids), 1000):
            rows = range(start, min(start + 1000, len(ids)))
            client.upsert(COLLECTION, points=m.Batch(
                ids=list(rows), vectors=vectors[start:rows.stop].tolist(),
                payloads=[{"doc_id": ids[i], **metadatas[i]} for i in rows]))
        client.close()

    def open(self, path):
        self.client = self.qc.QdrantClient(path=str(path))
        self.params = self.models.SearchParams(exact=True)

    def search(self, query, k):
        res = self.client.query_points(COLLECTION, query=query, limit=k, search_params=self.params,
                                       with_payload=False)
        return [p.id for p in res.points]

    def search_where(self, query, k, bucket, mode):
        m = self.models
        flt = m.Filter(must=[m.FieldCondition(key="bucket", match=m.MatchValue(value=bucket))])
        res = self.client.query_points(COLLECTION, query=query, limit=k, query_filter=flt,
                                       search_params=self.params, with_payload=False)
        return [p.id for p in res.points]

    def search_batch(self, queries, k):
        reqs = [self.models.QueryRequest(query=q.tolist(), limit=k, params=self.params)
                for q in queries]
        res = self.client.query_batch_points(COLLECTION, requests=reqs)
        return np.array([[p.id for p in r.points] for r in res])

    def close(self):
        self.client.close()
