//! The `k` of a search, the other non-negative counts (`limit`, `offset`), and a quantized
//! search's `oversample` and an HNSW search's `ef`.

use super::type_name;
use crate::errors::invalid;
use pyo3::prelude::*;

/// The `k` of a search: a non-negative int. Anything else is an `InvalidInputError` (a
/// `ValueError`), not the `OverflowError`/`TypeError` a plain `usize` argument would give.
pub(crate) struct K(pub(crate) usize);

impl<'a, 'py> FromPyObject<'a, 'py> for K {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        non_negative(&obj, "k").map(K)
    }
}

/// `obj` as a non-negative int (not a bool); `name` is the argument's name for the message.
pub(crate) fn non_negative(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<usize> {
    let py = obj.py();
    let bad = || {
        invalid(
            py,
            format!(
                "{name} must be a non-negative int, got {} {}",
                type_name(obj),
                obj.repr().map(|r| r.to_string()).unwrap_or_default()
            ),
            None,
        )
    };
    if obj.is_instance_of::<pyo3::types::PyBool>() {
        return Err(bad());
    }
    let value: i64 = obj.extract().map_err(|_| bad())?;
    usize::try_from(value).map_err(|_| bad())
}

/// A quantized search's `oversample`: an int in `1..=srvdb::quant::MAX_OVERSAMPLE`. Anything
/// else is an `InvalidInputError` (a `ValueError`) that says what is accepted.
pub(crate) struct Oversample(pub(crate) usize);

impl<'a, 'py> FromPyObject<'a, 'py> for Oversample {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let max = srvdb::quant::MAX_OVERSAMPLE;
        match non_negative(&obj, "oversample") {
            Ok(n) if (1..=max).contains(&n) => Ok(Oversample(n)),
            _ => Err(invalid(
                obj.py(),
                format!(
                    "oversample must be an int from 1 to {max} (candidates kept per hit before \
                     exact rescoring; None for the index's default), got {} {}",
                    type_name(&obj),
                    obj.repr().map(|r| r.to_string()).unwrap_or_default()
                ),
                None,
            )),
        }
    }
}

/// An HNSW search's `ef`: a non-negative int (an `InvalidInputError` otherwise). Its range is
/// the engine's to check, so the message is the same from every surface.
pub(crate) struct Ef(pub(crate) usize);

impl<'a, 'py> FromPyObject<'a, 'py> for Ef {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        non_negative(&obj, "ef").map(Ef)
    }
}
