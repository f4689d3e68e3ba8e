//! Texts (documents, query texts) and the `str` sequences ids share with them.

use super::type_name;
use crate::errors::invalid;
use pyo3::prelude::*;
use pyo3::types::PyString;

/// Texts (query texts): a sequence of `str`, or a single `str` as one text (then the flag is
/// true, so the caller can answer with one list rather than a list of lists).
pub(crate) fn texts_or_one(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<(Vec<String>, bool)> {
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok((vec![s.to_cow()?.into_owned()], true));
    }
    Ok((texts(obj, what)?, false))
}

/// A sequence of `str` (documents, query texts); a single `str` is refused, as for ids.
pub(crate) fn texts(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<String>> {
    str_sequence(obj, what, |i| format!("{what}[{i}]"))
}

/// A sequence of `str` called `what` in errors; `item(i)` names its element `i`. A single
/// `str` is refused (iterating it would give its characters).
pub(super) fn str_sequence(
    obj: &Bound<'_, PyAny>,
    what: &str,
    item: impl Fn(usize) -> String,
) -> PyResult<Vec<String>> {
    let py = obj.py();
    if obj.is_instance_of::<PyString>() {
        return Err(invalid(
            py,
            format!("{what} must be a sequence of str, not a single str: wrap it in a list"),
            None,
        ));
    }
    let items = obj.try_iter().map_err(|_| {
        invalid(
            py,
            format!("{what} must be a sequence of str, not {}", type_name(obj)),
            None,
        )
    })?;
    let mut out = Vec::with_capacity(obj.len().unwrap_or(0));
    for (i, element) in items.enumerate() {
        let element = element?;
        let s = element.cast::<PyString>().map_err(|_| {
            invalid(
                py,
                format!("{} is a {}, not a str", item(i), type_name(&element)),
                Some(i),
            )
        })?;
        out.push(s.to_cow()?.into_owned());
    }
    Ok(out)
}
