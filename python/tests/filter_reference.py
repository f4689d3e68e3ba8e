"""An independent evaluator of SrvDB's filter dialect (Chroma's ``where`` / ``where_document``),
written from the specification rather than from the engine, for the property tests to compare
the engine against. Plain recursion over Python values; speed does not matter here.

The rules it encodes:

- ``where`` is a dict; ``{}`` matches everything. ``$and`` / ``$or`` take a non-empty list of
  ``where`` dicts, ``$not`` one ``where`` dict; several keys at one level are an implicit
  ``$and``. Other keys are field names, dotted paths into nested objects (an exact top-level
  key with the dots wins; navigating through a non-object is "missing").
- A field's condition is a scalar (``$eq``) or a dict of operators (an implicit ``$and``).
- Missing field or JSON null: ``$ne`` and ``$nin`` match, every other operator does not.
- Numbers compare numerically (``1 == 1.0``), strings only with strings (ordering by code
  point, which is the order of their UTF-8 bytes), booleans only equal booleans. A type
  mismatch fails ``$eq $gt $gte $lt $lte $in`` and passes ``$ne $nin``.
- A list-valued field: ``$eq``, ``$in`` and the orderings match if any element does; ``$ne``
  and ``$nin`` match if no element is equal. An object-valued field equals no scalar.
- Metadata that is not a JSON object (plain text, a JSON list or scalar) fails every field
  predicate, ``$ne`` and ``$nin`` included; no metadata at all counts as ``{}``. ``$not``
  negates its subtree.
- ``where_document``: ``$contains`` / ``$not_contains`` a substring (case-sensitive), or
  ``$and`` / ``$or`` lists. No document: ``$contains`` fails, ``$not_contains`` passes.
"""

from __future__ import annotations

import json
from typing import Any, Optional

__all__ = ["NOT_AN_OBJECT", "MISSING", "stored_metadata", "matches", "where_matches", "document_matches"]


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: The value of a field that is absent (or null).
MISSING = _Marker("MISSING")
#: Metadata stored as plain text (not JSON): fails every field predicate.
NOT_AN_OBJECT = _Marker("NOT_AN_OBJECT")


def stored_metadata(given: Any) -> Any:
    """What the engine holds for metadata passed to ``add`` as ``given``: a dict or other JSON
    value as is; a str parsed as JSON if it is JSON, else plain text (``NOT_AN_OBJECT``)."""
    if isinstance(given, str):
        try:
            return json.loads(given)
        except ValueError:
            return NOT_AN_OBJECT
    return given


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _scalar_equal(value: Any, operand: Any) -> bool:
    """``value`` (a field value, not a list) equals scalar ``operand`` under the dialect."""
    if isinstance(operand, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(operand, bool) and value == operand
    if _is_number(operand):
        return _is_number(value) and float(value) == float(operand)
    if isinstance(operand, str):
        return isinstance(value, str) and value == operand
    return False


def _scalar_order(value: Any, op: str, operand: Any) -> bool:
    if _is_number(operand) and _is_number(value):
        a, b = float(value), float(operand)
    elif isinstance(operand, str) and isinstance(value, str):
        a, b = value.encode("utf-8"), operand.encode("utf-8")  # type: ignore[assignment]
    else:
        return False
    if op == "$gt":
        return a > b
    if op == "$gte":
        return a >= b
    if op == "$lt":
        return a < b
    return a <= b


def _elements(value: Any) -> list[Any]:
    """The values a condition is tested against: the elements of a list, else the value."""
    return list(value) if isinstance(value, list) else [value]


def _op_matches(value: Any, op: str, operand: Any) -> bool:
    if value is MISSING:
        return op in ("$ne", "$nin")
    elements = _elements(value)
    if op == "$eq":
        return any(_scalar_equal(e, operand) for e in elements)
    if op == "$ne":
        return not any(_scalar_equal(e, operand) for e in elements)
    if op == "$in":
        return any(_scalar_equal(e, o) for e in elements for o in operand)
    if op == "$nin":
        return not any(_scalar_equal(e, o) for e in elements for o in operand)
    if op in ("$gt", "$gte", "$lt", "$lte"):
        return any(_scalar_order(e, op, operand) for e in elements)
    raise ValueError(f"reference: unknown operator {op}")


def _lookup(metadata: dict, name: str) -> Any:
    if name in metadata:
        value = metadata[name]
    else:
        value = metadata
        for part in name.split("."):
            if not isinstance(value, dict) or part not in value:
                return MISSING
            value = value[part]
    return MISSING if value is None else value


def _field_matches(metadata: Any, name: str, condition: Any) -> bool:
    if not isinstance(metadata, dict):
        return False
    value = _lookup(metadata, name)
    if isinstance(condition, dict):
        return all(_op_matches(value, op, operand) for op, operand in condition.items())
    return _op_matches(value, "$eq", condition)


def where_matches(where: dict, metadata: Any) -> bool:
    """``where`` matches stored ``metadata`` (a JSON value, ``NOT_AN_OBJECT``, or None)."""
    if metadata is None:
        metadata = {}
    for key, value in where.items():
        if key == "$and":
            ok = all(where_matches(w, metadata) for w in value)
        elif key == "$or":
            ok = any(where_matches(w, metadata) for w in value)
        elif key == "$not":
            ok = not where_matches(value, metadata)
        else:
            ok = _field_matches(metadata, key, value)
        if not ok:
            return False
    return True


def document_matches(where_document: dict, document: Optional[str]) -> bool:
    """``where_document`` matches ``document`` (None for a record without one)."""
    ((key, value),) = where_document.items()
    if key == "$contains":
        return document is not None and value in document
    if key == "$not_contains":
        return document is None or value not in document
    if key == "$and":
        return all(document_matches(w, document) for w in value)
    if key == "$or":
        return any(document_matches(w, document) for w in value)
    raise ValueError(f"reference: unknown document operator {key}")


def matches(
    where: Optional[dict],
    where_document: Optional[dict],
    metadata: Any,
    document: Optional[str],
) -> bool:
    """A record with stored ``metadata`` and ``document`` passes both parts of a filter."""
    if where is not None and not where_matches(where, metadata):
        return False
    if where_document is not None and not document_matches(where_document, document):
        return False
    return True
