//! Ids: a sequence of `str`, or one `str` where one id makes sense (delete).

use super::texts::str_sequence;
use pyo3::prelude::*;
use pyo3::types::PyString;

/// Ids for a write: a sequence of `str` (a single `str` is refused, since iterating it would
/// give its characters).
pub(crate) fn ids(obj: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    str_sequence(obj, "ids", |i| format!("id {i}"))
}

/// Ids to delete: one `str` or a sequence of them.
pub(crate) fn ids_or_one(obj: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(vec![s.to_cow()?.into_owned()]);
    }
    ids(obj)
}
