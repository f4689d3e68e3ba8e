//! Single-record evaluation: the dialect's semantics written once over a parsed JSON value.
//! [`super::Filter::matches`] uses it directly (the reference path for one record); the
//! column caches use [`lookup`] and [`scalar_matches`] so both paths agree by construction.

use super::{FieldOp, Scalar, Where, WhereDocument};
use serde_json::{Map, Value};
use std::cmp::Ordering;

/// The value at dotted path `name` (split into `path`): an exact top-level key wins, else the
/// path is followed through nested objects. `None` when missing, or when the path passes
/// through a non-object; JSON null counts as missing.
pub(crate) fn lookup<'a>(
    meta: &'a Map<String, Value>,
    name: &str,
    path: &[String],
) -> Option<&'a Value> {
    let found = match meta.get(name) {
        Some(v) => Some(v),
        None if path.len() > 1 => {
            let mut at = meta;
            let mut found = None;
            for (i, key) in path.iter().enumerate() {
                let v = at.get(key)?;
                if i + 1 == path.len() {
                    found = Some(v);
                } else {
                    at = v.as_object()?;
                }
            }
            found
        }
        None => None,
    };
    found.filter(|v| !v.is_null())
}

/// How a stored scalar compares with an operand: `None` when they cannot be compared
/// (different types, or anything that is not a string, number or boolean).
fn compare(stored: &Value, operand: &Scalar) -> Option<Ordering> {
    match (stored, operand) {
        (Value::Number(n), Scalar::Number(x)) => n.as_f64()?.partial_cmp(x),
        (Value::String(s), Scalar::String(x)) => Some(s.as_bytes().cmp(x.as_bytes())),
        (Value::Bool(b), Scalar::Bool(x)) => Some(b.cmp(x)),
        _ => None,
    }
}

/// True when one stored value (not a list) satisfies the positive form of `op`: `$eq`, the
/// orderings and `$in` as written, and `$ne` / `$nin` as `$eq` / `$in` (the caller negates).
pub(crate) fn scalar_matches(stored: &Value, op: &FieldOp) -> bool {
    let is =
        |operand: &Scalar, want: fn(Ordering) -> bool| compare(stored, operand).is_some_and(want);
    match op {
        FieldOp::Eq(x) | FieldOp::Ne(x) => is(x, Ordering::is_eq),
        FieldOp::Gt(x) => is(x, Ordering::is_gt),
        FieldOp::Gte(x) => is(x, Ordering::is_ge),
        FieldOp::Lt(x) => is(x, Ordering::is_lt),
        FieldOp::Lte(x) => is(x, Ordering::is_le),
        FieldOp::In(xs) | FieldOp::Nin(xs) => xs.iter().any(|x| is(x, Ordering::is_eq)),
    }
}

/// True for `$ne` and `$nin`, whose result is the negation of their positive form.
pub(crate) fn negated(op: &FieldOp) -> bool {
    matches!(op, FieldOp::Ne(_) | FieldOp::Nin(_))
}

/// One field's comparison on an object's value (`None` = missing): a list matches the
/// positive form if any element does.
pub(crate) fn field_matches(value: Option<&Value>, op: &FieldOp) -> bool {
    let positive = match value {
        None => false,
        Some(Value::Array(items)) => items.iter().any(|v| scalar_matches(v, op)),
        Some(v) => scalar_matches(v, op),
    };
    positive != negated(op)
}

/// `where` on a record's metadata: `Some(object)` (no metadata is an empty object), or `None`
/// for metadata that is not a JSON object, which no field predicate matches.
pub(crate) fn where_matches(w: &Where, meta: Option<&Map<String, Value>>) -> bool {
    match w {
        Where::Field { name, path, op } => match meta {
            Some(m) => field_matches(lookup(m, name, path), op),
            None => false,
        },
        Where::And(all) => all.iter().all(|w| where_matches(w, meta)),
        Where::Or(any) => any.iter().any(|w| where_matches(w, meta)),
        Where::Not(w) => !where_matches(w, meta),
    }
}

/// `where_document` on a record's document (`None` = no document).
pub(crate) fn document_matches(w: &WhereDocument, doc: Option<&str>) -> bool {
    let contains =
        |t: &str| doc.is_some_and(|d| memchr::memmem::find(d.as_bytes(), t.as_bytes()).is_some());
    match w {
        WhereDocument::Contains(t) => contains(t),
        WhereDocument::NotContains(t) => !contains(t),
        WhereDocument::And(all) => all.iter().all(|w| document_matches(w, doc)),
        WhereDocument::Or(any) => any.iter().any(|w| document_matches(w, doc)),
    }
}
