"""`get` while `compact()` runs (issue 13, defect 1).

Compaction renumbers the rows. It used to commit the new numbering of metadata and documents
to the metadata store, rename and reopen the rows, and only then swap the id-to-row map: in
between, `get(id)` paired the id's old row number with metadata and documents already stored
under the new numbering, and returned another record's metadata (or None). Measured on the
code before the fix: 5,134 of 80,301 `get` calls wrong.

Here two threads `get` live ids while the main thread compacts three times, with deletes in
between. Every answer is checked against a dict model: the metadata and document must name
the id, and the vector must be the one added.
"""

from __future__ import annotations

import threading

import numpy as np

import srvdb

SEED = 13


def test_get_during_compact_returns_the_records_own_data(open_db):
    n, dim = 60_000, 8
    rng = np.random.default_rng(SEED)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    ids = [f"id{i}" for i in range(n)]
    db = open_db(metric="l2")
    db.add(
        ids,
        vectors,
        metadatas=[{"id": id_} for id_ in ids],
        documents=[f"document of {id_}" for id_ in ids],
    )
    # Every other row deleted; of the rest, rows i % 4 == 1 stay for good (the readers' ids)
    # and rows i % 4 == 3 are deleted, a third at a time, between the compactions.
    db.delete(ids[0::2])
    stable = np.arange(1, n, 4)
    doomed = np.array_split(np.arange(3, n, 4), 3)
    db.persist()

    stop = threading.Event()
    wrong: list[str] = []
    counts = {"gets": 0, "wrong": 0, "none": 0}
    lock = threading.Lock()

    def reader(seed: int):
        local = np.random.default_rng(seed)
        gets = bad = none = 0
        while not stop.is_set():
            for i in local.choice(stable, size=64):
                id_ = ids[i]
                record = db.get(id_)
                gets += 1
                if record is None:
                    none += 1
                    bad += 1
                    problem = "None"
                elif (
                    record.id != id_
                    or record.metadata != {"id": id_}
                    or record.document != f"document of {id_}"
                    or not np.array_equal(record.vector, vectors[i])
                ):
                    bad += 1
                    problem = f"metadata {record.metadata}, document {record.document!r}"
                else:
                    continue
                if len(wrong) < 5:
                    wrong.append(f"get({id_!r}) gave {problem}")
        with lock:
            counts["gets"] += gets
            counts["wrong"] += bad
            counts["none"] += none

    threads = [threading.Thread(target=reader, args=(SEED + t,)) for t in range(2)]
    for t in threads:
        t.start()
    try:
        for part in doomed:
            db.compact()
            db.delete([ids[i] for i in part])
        db.compact()
    finally:
        stop.set()
        for t in threads:
            t.join()

    summary = (
        f"{counts['wrong']} of {counts['gets']} gets during 4 compactions were wrong "
        f"({counts['none']} None): {wrong}"
    )
    print(summary)
    assert counts["gets"] > 0
    assert counts["wrong"] == 0, summary
    # The final state, against the model.
    assert len(db) == len(stable)
    assert sorted(db.ids()) == sorted(ids[i] for i in stable)
    for i in stable[::97]:
        record = db.get(ids[i])
        assert record.metadata == {"id": ids[i]} and np.array_equal(record.vector, vectors[i])
