"""Helpers shared by the framework adapters (no framework imports here)."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Mapping, Optional

import srvdb

# Over-fetch for post-search filtering: start with max(k * FACTOR, MIN) candidates and
# double until k matches are found or the whole database has been ranked.
_OVERFETCH_FACTOR = 4
_OVERFETCH_MIN = 32


def filtered_hits(
    db: srvdb.Database,
    query: Any,
    k: int,
    accept: Optional[Callable[[Optional[srvdb.Record]], bool]],
) -> Iterator[tuple[srvdb.Record, float]]:
    """Yields up to ``k`` ``(record, score)`` pairs, best first, that ``accept`` keeps (all
    when ``accept`` is None). The engine has no filters, so this searches ``k`` (or more, when
    filtering) candidates and filters them here, widening the search until ``k`` matches are
    found or every record has been looked at."""
    total = len(db)
    if k <= 0 or total == 0:
        return
    if accept is None:
        for id_, score in db.search(query, min(k, total)):
            rec = db.get(id_)
            if rec is not None:
                yield rec, score
        return
    fetch = min(total, max(k * _OVERFETCH_FACTOR, _OVERFETCH_MIN))
    examined: set[str] = set()  # ids a narrower round already looked at
    found = 0
    while True:
        for id_, score in db.search(query, fetch):
            if id_ in examined:
                continue
            examined.add(id_)
            rec = db.get(id_)
            if rec is not None and accept(rec):
                yield rec, score
                found += 1
                if found == k:
                    return
        if fetch >= total:
            return
        fetch = min(total, fetch * 2)


def exact_match(filter: Mapping[str, Any]) -> Callable[[Mapping[str, Any]], bool]:
    """A predicate on a metadata dict: every key of ``filter`` is present with an equal value."""
    items = list(filter.items())
    missing = object()
    return lambda md: all(md.get(key, missing) == value for key, value in items)


def dedupe_last(ids: Iterable[str]) -> list[int]:
    """Positions to keep so that each id appears once, its last occurrence winning (a batch that
    repeats an id behaves like the same writes done one after the other)."""
    last: dict[str, int] = {}
    for i, id_ in enumerate(ids):
        last[id_] = i
    return sorted(last.values())
