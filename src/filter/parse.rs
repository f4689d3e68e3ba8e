//! The dialect's parser: JSON text -> [`Where`] / [`WhereDocument`] trees, with the limits
//! (size, depth) and an [`Error::InvalidFilter`] that names the offending place as a path
//! (`where.$and[1].year.$gt`) and says what is accepted there.

use super::{FieldOp, Scalar, Where, WhereDocument, MAX_FILTER_BYTES, MAX_FILTER_DEPTH};
use crate::error::{Error, Result};
use serde_json::{Map, Value};

fn invalid(part: &str, reason: impl Into<String>) -> Error {
    Error::InvalidFilter {
        part: part.to_owned(),
        reason: reason.into(),
    }
}

/// Parses `text` as JSON after the size check; `what` is `where` or `where_document`.
pub(super) fn json(what: &str, text: &str) -> Result<Value> {
    if text.len() > MAX_FILTER_BYTES {
        return Err(invalid(
            what,
            format!(
                "{} bytes of filter text, more than the {MAX_FILTER_BYTES} allowed",
                text.len()
            ),
        ));
    }
    serde_json::from_str(text).map_err(|e| invalid(what, format!("not valid JSON ({e})")))
}

fn check_depth(part: &str, depth: usize) -> Result<()> {
    if depth > MAX_FILTER_DEPTH {
        return Err(invalid(
            part,
            format!("nested more than {MAX_FILTER_DEPTH} levels deep"),
        ));
    }
    Ok(())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A `where` object at `part`, `depth` levels deep (the top level is 1).
pub(super) fn where_(value: &Value, part: &str, depth: usize) -> Result<Where> {
    check_depth(part, depth)?;
    let Value::Object(map) = value else {
        return Err(invalid(
            part,
            format!(
                "{} where an object of conditions was expected (e.g. {{\"year\": {{\"$gt\": 2000}}}})",
                kind(value)
            ),
        ));
    };
    let mut all = Vec::with_capacity(map.len());
    for (key, v) in map {
        let at = format!("{part}.{key}");
        all.push(match key.as_str() {
            "$and" | "$or" => {
                let list = where_list(v, &at, depth)?;
                if key == "$and" {
                    Where::And(list)
                } else {
                    Where::Or(list)
                }
            }
            "$not" => Where::Not(Box::new(where_(v, &at, depth + 1)?)),
            op if op.starts_with('$') => {
                return Err(invalid(
                    &at,
                    format!(
                        "unknown operator {op}: at this level use $and, $or, $not or a field name"
                    ),
                ))
            }
            name => field(name, v, &at, depth)?,
        });
    }
    Ok(if all.len() == 1 {
        all.pop().unwrap_or(Where::And(Vec::new()))
    } else {
        Where::And(all)
    })
}

fn where_list(v: &Value, part: &str, depth: usize) -> Result<Vec<Where>> {
    let Value::Array(items) = v else {
        return Err(invalid(
            part,
            format!(
                "{} where a non-empty list of conditions was expected",
                kind(v)
            ),
        ));
    };
    if items.is_empty() {
        return Err(invalid(part, "an empty list: give at least one condition"));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| where_(item, &format!("{part}[{i}]"), depth + 1))
        .collect()
}

fn field(name: &str, v: &Value, part: &str, depth: usize) -> Result<Where> {
    if name.is_empty() {
        return Err(invalid(part, "an empty field name"));
    }
    let leaf = |op| Where::Field {
        name: name.to_owned(),
        path: name.split('.').map(str::to_owned).collect(),
        op,
    };
    let Value::Object(ops) = v else {
        let s = scalar(v, part)?;
        return Ok(leaf(FieldOp::Eq(s)));
    };
    check_depth(part, depth + 1)?;
    if ops.is_empty() {
        return Err(invalid(
            part,
            "an empty operator object: give a value or e.g. {\"$eq\": value}",
        ));
    }
    let mut all = Vec::with_capacity(ops.len());
    for (op, operand) in ops {
        let at = format!("{part}.{op}");
        all.push(leaf(field_op(op, operand, &at)?));
    }
    Ok(if all.len() == 1 {
        all.pop().unwrap_or(Where::And(Vec::new()))
    } else {
        Where::And(all)
    })
}

fn field_op(op: &str, v: &Value, part: &str) -> Result<FieldOp> {
    let ordered = |v: &Value| -> Result<Scalar> {
        match scalar(v, part)? {
            Scalar::Bool(_) => Err(invalid(
                part,
                "a boolean cannot be ordered: compare with a number or a string",
            )),
            s => Ok(s),
        }
    };
    Ok(match op {
        "$eq" => FieldOp::Eq(scalar(v, part)?),
        "$ne" => FieldOp::Ne(scalar(v, part)?),
        "$gt" => FieldOp::Gt(ordered(v)?),
        "$gte" => FieldOp::Gte(ordered(v)?),
        "$lt" => FieldOp::Lt(ordered(v)?),
        "$lte" => FieldOp::Lte(ordered(v)?),
        "$in" => FieldOp::In(scalars(v, part)?),
        "$nin" => FieldOp::Nin(scalars(v, part)?),
        _ => {
            return Err(invalid(
                part,
                format!(
                "unknown operator {op}: a field takes $eq, $ne, $gt, $gte, $lt, $lte, $in or $nin"
            ),
            ))
        }
    })
}

fn scalar(v: &Value, part: &str) -> Result<Scalar> {
    match v {
        Value::Bool(b) => Ok(Scalar::Bool(*b)),
        Value::String(s) => Ok(Scalar::String(s.clone())),
        Value::Number(n) => n
            .as_f64()
            .map(Scalar::Number)
            .ok_or_else(|| invalid(part, "a number out of range")),
        other => Err(invalid(
            part,
            format!(
                "{} where a string, number or boolean was expected",
                kind(other)
            ),
        )),
    }
}

fn scalars(v: &Value, part: &str) -> Result<Vec<Scalar>> {
    let Value::Array(items) = v else {
        return Err(invalid(
            part,
            format!(
                "{} where a list of strings, numbers or booleans was expected",
                kind(v)
            ),
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| scalar(item, &format!("{part}[{i}]")))
        .collect()
}

/// A `where_document` object at `part`, `depth` levels deep (the top level is 1).
pub(super) fn document(value: &Value, part: &str, depth: usize) -> Result<WhereDocument> {
    check_depth(part, depth)?;
    let map: &Map<String, Value> = match value {
        Value::Object(m) if m.len() == 1 => m,
        _ => {
            return Err(invalid(
                part,
                format!(
                    "{} where an object with exactly one of $contains, $not_contains, $and, $or was expected",
                    match value {
                        Value::Object(m) if m.is_empty() => "an empty object",
                        Value::Object(_) => "an object with several keys",
                        other => kind(other),
                    }
                ),
            ))
        }
    };
    let Some((key, v)) = map.iter().next() else {
        return Err(invalid(part, "an empty object"));
    };
    let at = format!("{part}.{key}");
    let text = |v: &Value| match v {
        Value::String(s) => Ok(s.clone()),
        other => Err(invalid(
            &at,
            format!("{} where a string was expected", kind(other)),
        )),
    };
    match key.as_str() {
        "$contains" => Ok(WhereDocument::Contains(text(v)?)),
        "$not_contains" => Ok(WhereDocument::NotContains(text(v)?)),
        "$and" | "$or" => {
            let Value::Array(items) = v else {
                return Err(invalid(
                    &at,
                    format!("{} where a non-empty list was expected", kind(v)),
                ));
            };
            if items.is_empty() {
                return Err(invalid(&at, "an empty list: give at least one condition"));
            }
            let list = items
                .iter()
                .enumerate()
                .map(|(i, item)| document(item, &format!("{at}[{i}]"), depth + 1))
                .collect::<Result<Vec<_>>>()?;
            Ok(if key == "$and" {
                WhereDocument::And(list)
            } else {
                WhereDocument::Or(list)
            })
        }
        other => Err(invalid(
            &at,
            format!("unknown operator {other}: use $contains, $not_contains, $and or $or"),
        )),
    }
}
