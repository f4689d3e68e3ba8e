//! Python arguments to engine inputs, one module per kind of input. Only conversion is checked
//! here: Python types, array dtypes and shapes, ragged rows, and each row's length against the
//! database's dimension (only Python sees the rows). Every failure is an `InvalidInputError` or
//! `DimensionMismatchError` (`InvalidFilterError` for a filter that is not a dict) naming the
//! position at fault, raised before the engine is called.
//! What the engine checks (lengths that disagree, NaN, empty or repeated ids) it reports
//! itself, so every backend gives the same message.

mod arrays;
mod filter;
mod ids;
mod k;
mod metadata;
mod texts;
mod vectors;

pub(crate) use filter::filter;
pub(crate) use ids::{ids, ids_or_one};
pub(crate) use k::{non_negative, Ef, Oversample, K};
pub(crate) use metadata::metadatas;
pub(crate) use texts::{texts, texts_or_one};
pub(crate) use vectors::{matrix, vector, Matrix};

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyModule;

/// The `numpy` module, imported once.
pub(crate) fn numpy_module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static NUMPY: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    NUMPY
        .get_or_try_init(py, || Ok::<_, PyErr>(py.import("numpy")?.unbind()))
        .map(|m| m.bind(py))
}

/// The `json` module, imported once.
pub(crate) fn json_module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static JSON: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    JSON.get_or_try_init(py, || Ok::<_, PyErr>(py.import("json")?.unbind()))
        .map(|m| m.bind(py))
}

/// The name of `obj`'s type, for messages.
fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_owned())
}
