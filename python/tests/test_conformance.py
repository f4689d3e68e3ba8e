"""The conformance scenario (tests/conformance/scenario.json) through the public Python API, on
the native and the wasm backend: the same answers, and the same exception class and message,
as every other target (see the file's "about").

Python's API spells some operations differently; the runner maps them, and only these:

- ``delete`` with ``skip_missing``: ``Database.delete`` has no such flag, so the runner deletes
  the ids that ``id in db`` reports.
- ``documents(ids)``: ``Database`` has no such method; the runner reads ``get(id).document``.
- error kinds: the class ``srvdb.<kind>Error`` (exactly that class, not a subclass).
"""

from __future__ import annotations

import json
import math

import pytest

import srvdb

from conftest import REPO

SCENARIO = json.loads((REPO / "tests" / "conformance" / "scenario.json").read_text())
TOLERANCE = SCENARIO["score_tolerance"]

_SPECIAL = {"NaN": math.nan, "inf": math.inf, "-inf": -math.inf}


def number(x):
    """A number of the file: a JSON number, or "NaN", "inf", "-inf"."""
    return _SPECIAL[x] if isinstance(x, str) else float(x)


def vectors(rows):
    return [[number(x) for x in row] for row in rows]


def same(want, got) -> bool:
    """Equal, with numbers within the tolerance; exact elsewhere (bools are not numbers)."""
    if isinstance(want, bool) or isinstance(got, bool):
        return want is got
    if isinstance(want, (int, float)) and isinstance(got, (int, float)):
        return abs(want - got) <= TOLERANCE
    if isinstance(want, list) and isinstance(got, (list, tuple)):
        return len(want) == len(got) and all(same(w, g) for w, g in zip(want, got))
    if isinstance(want, dict) and isinstance(got, dict):
        return want.keys() == got.keys() and all(same(want[k], got[k]) for k in want)
    return want == got


def record(r):
    if r is None:
        return None
    return {
        "id": r.id,
        "vector": [float(x) for x in r.vector],
        "metadata": r.metadata_text,
        "document": r.document,
    }


def hits(found):
    return [[h[0], h[1]] for h in found]


class Runner:
    def __init__(self, backend: str, directory):
        self.backend = backend
        self.directory = directory
        self.db = None

    def expected(self, step):
        """(answer, error) the file expects of this target: its deviation if it has one
        (error ("skip", why) for a step the file says this target cannot run)."""
        deviations = step.get("deviations", {})
        chosen = deviations.get(f"python-{self.backend}", deviations.get("python", step))
        if "skip" in chosen:
            return None, ("skip", chosen["skip"])
        error = chosen.get("error")
        if error is not None:
            message = error["message"].replace("{dir}", str(self.directory))
            return None, (error["kind"], message)
        return chosen.get("expect"), None

    def open(self, step):
        return srvdb.open(
            self.directory,
            dim=step.get("dimension"),
            metric=step.get("metric"),
            backend=self.backend,
        )

    def reopen(self, step):
        if self.db is not None:
            db, self.db = self.db, None
            db.close()
        self.db = self.open(step)

    def apply(self, op, step):
        db = self.db
        if op in ("add", "upsert"):
            write = db.add if op == "add" else db.upsert
            write(
                step["ids"],
                vectors(step["vectors"]),
                metadatas=step.get("metadatas"),
                documents=step.get("documents"),
            )
            return None
        if op == "delete":
            ids = step["ids"]
            if step.get("skip_missing"):
                ids = [i for i in ids if i in db]
            return db.delete(ids)
        if op == "get":
            return record(db.get(step["id"]))
        if op == "documents":
            found = [db.get(i) for i in step["ids"]]
            return [r.document if r is not None else None for r in found]
        if op == "contains":
            return step["id"] in db
        if op == "count":
            return len(db)
        if op == "ids":
            return db.ids()
        if op == "dimension":
            return db.dim
        if op == "metric":
            return db.metric
        if op == "search":
            return hits(db.search([number(x) for x in step["query"]], step["k"]))
        if op == "search_batch":
            return [hits(h) for h in db.search_batch(vectors(step["queries"]), step["k"])]
        if op == "persist":
            return db.persist()
        if op == "compact":
            return db.compact()
        raise AssertionError(f"scenario.json: unknown op {op!r}")

    def step(self, step) -> str | None:
        """None when the step gives what the file expects, else what differed."""
        op = step["op"]
        want, want_error = self.expected(step)
        if want_error is not None and want_error[0] == "skip":
            print(f"python-{self.backend}: {op} not run: {want_error[1]}")
            return None
        try:
            if op in ("open", "reopen"):
                self.reopen(step)
                got = None
            elif op == "open_second":
                self.open(step).close()
                got = None
            elif self.db is None:
                return "no open database (an earlier open failed)"
            else:
                got = self.apply(op, step)
        except srvdb.Error as e:
            got_error = (type(e).__name__.removesuffix("Error"), str(e))
            if want_error is None:
                return f"expected {want!r}, got error {got_error}"
            if got_error != want_error:
                return f"expected error {want_error}, got {got_error}"
            return None
        if want_error is not None:
            return f"expected error {want_error}, got {got!r}"
        if not same(want, got):
            return f"expected {want!r}, got {got!r}"
        return None

    def close(self):
        if self.db is not None:
            db, self.db = self.db, None
            db.close()


@pytest.mark.parametrize("scenario", SCENARIO["scenarios"], ids=lambda s: s["name"])
def test_scenario(backend, tmp_path, scenario):
    runner = Runner(backend, tmp_path / scenario["name"])
    failures = []
    try:
        for i, step in enumerate(scenario["steps"]):
            why = runner.step(step)
            if why is not None:
                failures.append(f"python-{backend} / {scenario['name']} / step {i} ({step['op']}): {why}")
    finally:
        runner.close()
    assert not failures, (
        f"{len(failures)} of {len(scenario['steps'])} steps disagree with "
        "tests/conformance/scenario.json:\n" + "\n".join(failures)
    )
