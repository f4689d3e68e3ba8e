//! `where` / `where_document` arguments: dicts in Chroma's dialect, encoded once as JSON (the
//! encoder `add` uses for metadata, so numbers and strings cross exactly as `json.dumps` writes
//! them) and parsed by the engine's one parser, `srvdb::Filter::parse`, which checks the
//! dialect and its limits the same way for every backend.

use super::type_name;
use crate::errors;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use srvdb::Filter;

/// The filter of a call, or `None` when neither part is given (`None` for both). Anything
/// but a dict (or None) is an `InvalidFilterError` naming the part.
pub(crate) fn filter(
    py: Python<'_>,
    where_: Option<&Bound<'_, PyAny>>,
    where_document: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<Filter>> {
    let where_json = part_json(where_, "where")?;
    let document_json = part_json(where_document, "where_document")?;
    if where_json.is_none() && document_json.is_none() {
        return Ok(None);
    }
    Filter::parse(where_json.as_deref(), document_json.as_deref())
        .map(Some)
        .map_err(|e| errors::engine(py, e))
}

/// The JSON text of one part, or `None` if it is absent.
fn part_json(obj: Option<&Bound<'_, PyAny>>, part: &str) -> PyResult<Option<String>> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok(None);
    };
    let py = obj.py();
    if obj.cast::<PyDict>().is_err() {
        return Err(errors::invalid_filter(
            py,
            part,
            format!(
                "{part} must be a dict such as {}, not a {}",
                example(part),
                type_name(obj)
            ),
        ));
    }
    let text = super::metadata::encoder(py)?
        .call_method1(pyo3::intern!(py, "encode"), (obj,))
        .map_err(|e| {
            errors::invalid_filter(
                py,
                part,
                format!(
                    "{part} holds a value JSON cannot express ({}): use str, int, float, bool, \
                     lists and dicts",
                    e.value(py)
                ),
            )
        })?;
    Ok(Some(text.extract()?))
}

fn example(part: &str) -> &'static str {
    if part == "where" {
        r#"{"year": {"$gt": 2000}}"#
    } else {
        r#"{"$contains": "text"}"#
    }
}
