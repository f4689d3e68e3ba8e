"""`close()` and `with` on a poisoned handle (issue 13, defect 4).

A handle is poisoned when a write fails midway; its acknowledged but uncommitted writes are
then lost. `close()` used to return normally on such a handle, so a program ending with
`db.close()` (or a `with` block) never heard that its last writes were gone. Now `close()` and
`__exit__` raise `PoisonedError`, except that `__exit__` never replaces an exception already
leaving the `with` block: that one propagates (with a note naming the close failure where
Python supports notes).

To poison a handle without faking anything, a child process lowers its file-size limit
(`RLIMIT_FSIZE`, which binds root too) below the end of `vectors.bin`: the next write of rows
fails with `EFBIG`, a real I/O error.
"""

from __future__ import annotations

import json
import sys

import pytest

from conftest import run_python

CHILD = r"""
import json, resource, signal
import numpy as np
import srvdb

BACKEND = {backend!r}
# Writing past the limit raises SIGXFSZ, which would kill the process: ignore it, so the write
# just fails with EFBIG.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
rng = np.random.default_rng(13)
COMMITTED = 2000
out = {{}}


def poisoned(name, legacy=False):
    # 2,000 x 384 rows committed (3 MB), then the file-size limit set to 1 MiB: the next rows
    # would be written past it.
    if legacy:
        db = srvdb.SvDBPython(name, backend=BACKEND)
    else:
        db = srvdb.open(name, backend=BACKEND)
    db.add([f"c{{i}}" for i in range(COMMITTED)], rng.standard_normal((COMMITTED, 384), dtype=np.float32))
    db.persist()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, hard))
    failed = []
    try:
        for step in ("add", "persist"):
            try:
                if step == "add":
                    db.add([f"u{{i}}" for i in range(500)], rng.standard_normal((500, 384), dtype=np.float32))
                else:
                    db.persist()
            except srvdb.Error as e:
                failed.append(f"{{step}}: {{type(e).__name__}}")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    # The handle now refuses writes.
    try:
        db.add(["after"], rng.standard_normal((1, 384), dtype=np.float32))
        failed.append("write after: accepted")
    except srvdb.Error as e:
        failed.append(f"write after: {{type(e).__name__}}")
    out[name + " failures"] = failed
    return db


def outcome(fn):
    try:
        fn()
        return "returned"
    except BaseException as e:
        notes = getattr(e, "__notes__", [])
        return f"{{type(e).__name__}}: {{e}}" + "".join(f" [note: {{n}}]" for n in notes)


def reopened(name):
    db = srvdb.open(name, backend=BACKEND)
    n = len(db)
    db.close()
    return n


# 1. close() on a poisoned handle.
db = poisoned("close")
out["close"] = outcome(db.close)
out["close closed"] = db.closed
out["close again"] = outcome(db.close)
out["close reopened"] = reopened("close")

# 2. A with block that ends normally.
def with_normal():
    with poisoned("with") as db:
        pass
out["with"] = outcome(with_normal)
out["with reopened"] = reopened("with")

# 3. A with block that raises: its exception is the one that propagates.
def with_raising():
    with poisoned("raising") as db:
        raise LookupError("the block's own error")
out["raising"] = outcome(with_raising)
out["raising reopened"] = reopened("raising")

# 4. The original API.
legacy = poisoned("legacy", legacy=True)
out["legacy close"] = outcome(legacy.close)
def legacy_with():
    with poisoned("legacy-with", legacy=True):
        pass
out["legacy with"] = outcome(legacy_with)
out["legacy reopened"] = reopened("legacy")
print(json.dumps(out))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE/EFBIG behaviour is checked on Linux")
def test_close_and_exit_raise_on_a_poisoned_handle(backend, tmp_path):
    out = json.loads(run_python(CHILD.format(backend=backend), cwd=tmp_path).splitlines()[-1])
    report = json.dumps(out, indent=1)
    # The file-size limit did poison every handle: a write failed, and later writes are refused.
    for name in ("close", "with", "raising", "legacy", "legacy-with"):
        failures = out[f"{name} failures"]
        assert failures and failures[-1] == "write after: PoisonedError", report
        assert any(f.endswith("IoError") for f in failures[:-1]), report
    # close() raises, and the handle is closed anyway (closing again is a no-op).
    assert out["close"].startswith("PoisonedError"), report
    assert out["close closed"] is True and out["close again"] == "returned", report
    assert out["with"].startswith("PoisonedError"), report
    assert out["legacy close"].startswith("PoisonedError"), report
    assert out["legacy with"].startswith("PoisonedError"), report
    # The block's own exception is not masked by the close failure.
    assert out["raising"].startswith("LookupError: the block's own error"), report
    if sys.version_info >= (3, 11):
        assert "[note: closing the database" in out["raising"] and "PoisonedError" in out["raising"], report
    # Reopening recovers the last commit: the acknowledged rows that were never committed are
    # gone, which is why close() must say so.
    for name in ("close", "with", "raising", "legacy"):
        assert out[f"{name} reopened"] == 2000, report
