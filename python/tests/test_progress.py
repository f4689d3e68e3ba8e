"""Progress bars of long jobs: tqdm when installed, nothing (and no error) without it, and by
default only for big jobs in an interactive session."""

from __future__ import annotations

import sys

import pytest

from srvdb import _progress


def test_progress_true_draws_a_bar_false_never(fake_tqdm):
    bar = _progress.bar(5, True, "embedding")
    assert bar is fake_tqdm[0] and bar.total == 5 and bar.desc == "embedding"
    assert _progress.bar(5_000, False, "embedding") is None
    assert len(fake_tqdm) == 1


def test_default_bar_only_for_big_interactive_jobs(fake_tqdm, monkeypatch):
    monkeypatch.setattr(_progress, "_interactive", lambda: True)
    assert _progress.bar(_progress.AUTO_MIN_ITEMS - 1, None, "embedding") is None
    assert _progress.bar(_progress.AUTO_MIN_ITEMS, None, "embedding") is not None
    monkeypatch.setattr(_progress, "_interactive", lambda: False)
    assert _progress.bar(10 * _progress.AUTO_MIN_ITEMS, None, "embedding") is None


def test_without_tqdm_there_is_no_bar_and_no_error(monkeypatch):
    # A None entry in sys.modules makes `import` raise ImportError.
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    assert _progress.bar(5_000, True, "embedding") is None


def test_a_closed_stderr_is_not_interactive(monkeypatch):
    class Closed:
        def isatty(self):
            raise ValueError("I/O operation on closed file")

    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    monkeypatch.setattr(sys, "stderr", Closed())
    assert _progress._interactive() is False


@pytest.mark.parametrize("progress", [True, False, None])
def test_vector_writes_take_progress_and_draw_nothing(open_db, fake_tqdm, progress):
    # Only embedding draws a bar: a write of given vectors is one quick step.
    db = open_db()
    db.add(["a", "b"], [[1.0, 0.0], [0.0, 1.0]], progress=progress)
    db.upsert(["b"], [[1.0, 1.0]], progress=progress)
    assert len(db) == 2 and fake_tqdm == []
