"""`srvdb.open(..., auto_commit_rows=N)`: how many uncommitted inserts and deletes make a write
commit by itself. Checked by what survives a process that ends without closing (os._exit: no
commit at close, no drop), against the count the option promises."""

from __future__ import annotations

import numpy as np
import pytest

import srvdb
from conftest import run_python

def write_then_die(tmp_path, backend: str, option: str, batches: list[int]) -> None:
    run_python(f"""
        import os, numpy as np, srvdb
        db = srvdb.open({str(tmp_path / 'db')!r}, dim=4, backend={backend!r}{option})
        start = 0
        for n in {batches!r}:
            ids = [f"r{{i}}" for i in range(start, start + n)]
            db.add(ids, np.ones((n, 4), dtype=np.float32))
            start += n
        os._exit(0)  # no persist, no close
    """, cwd=tmp_path)


def survivors(tmp_path, backend: str) -> int:
    with srvdb.open(tmp_path / "db", backend=backend) as db:
        return len(db)


@pytest.mark.parametrize("option, batches, kept", [
    ("", [400, 700, 50], 1100),                         # the default, 1000: after the 2nd add
    (", auto_commit_rows=0", [3000, 10], 0),            # only persist/close commit
    (", auto_commit_rows=100", [99, 1, 30], 100),       # exactly at the threshold
    (", auto_commit_rows=5000", [3000, 1999], 0),       # below it
    (", auto_commit_rows=None", [1000, 5], 1000),       # None: the default
])
def test_a_write_commits_once_the_threshold_is_reached(tmp_path, backend, option, batches, kept):
    write_then_die(tmp_path, backend, option, batches)
    assert survivors(tmp_path, backend) == kept


@pytest.mark.parametrize("bad", [-1, True, 1.5, "10", 2**70])
def test_a_bad_threshold_is_refused(tmp_path, bad):
    with pytest.raises(srvdb.InvalidInputError, match="auto_commit_rows must be a non-negative int"):
        srvdb.open(tmp_path / "db", auto_commit_rows=bad)
    assert not (tmp_path / "db").exists()
