//! Embeddings and queries: a 2-D array or a sequence of vectors (`matrix`), one vector
//! (`vector`). Lists, tuples and other sequences are read element by element; arrays are
//! copied by `arrays`.

use super::arrays::{as_array_like, check_float_dtype, copy_floats, Floats};
use super::type_name;
use crate::errors::{dimension_mismatch, invalid};
use numpy::{PyUntypedArray, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyFloat, PyInt, PyList, PyString, PyTuple};

/// A batch of `rows` vectors of equal length, back to back, in the binding's own buffer.
pub(crate) struct Matrix<'py> {
    data: Floats<'py>,
    pub(crate) rows: usize,
}

impl Matrix<'_> {
    pub(crate) fn as_slice(&self) -> &[f32] {
        self.data.as_slice()
    }
}

/// One vector (a query), in the binding's own buffer.
pub(crate) struct Vector<'py>(Floats<'py>);

impl Vector<'_> {
    pub(crate) fn as_slice(&self) -> &[f32] {
        self.0.as_slice()
    }
}

/// A batch of embeddings: a 2-D NumPy array, or a sequence of vectors (lists, tuples, 1-D
/// arrays). `expected` is the database's dimension, if fixed; a vector of another length is a
/// `DimensionMismatchError` naming its index. Vectors of different lengths are rejected.
pub(crate) fn matrix<'py>(
    obj: &Bound<'py, PyAny>,
    what: &str,
    expected: Option<usize>,
) -> PyResult<Matrix<'py>> {
    let py = obj.py();
    let converted;
    let obj = match as_array_like(obj)? {
        Some(array) => {
            converted = array;
            &converted
        }
        None => obj,
    };
    if let Ok(arr) = obj.cast::<PyUntypedArray>() {
        let shape = arr.shape().to_vec();
        if shape.len() != 2 {
            return Err(invalid(
                py,
                format!(
                    "{what} must be a 2-D array (one row per vector), got shape {shape:?}{}",
                    if shape.len() == 1 {
                        ": for a single vector use array.reshape(1, -1)"
                    } else {
                        ""
                    }
                ),
                None,
            ));
        }
        let (rows, dim) = (shape[0], shape[1]);
        check_float_dtype(arr, what, None)?;
        if let Some(want) = expected {
            if dim != want && rows > 0 {
                return Err(dimension_mismatch(py, want, dim, None));
            }
        }
        return Ok(Matrix {
            data: copy_floats(arr)?,
            rows,
        });
    }
    if obj.is_instance_of::<PyString>() || obj.is_instance_of::<PyBytes>() {
        return Err(invalid(
            py,
            format!(
                "{what} must be a sequence of vectors, not {}",
                type_name(obj)
            ),
            None,
        ));
    }
    let items = obj.try_iter().map_err(|_| {
        invalid(
            py,
            format!(
                "{what} must be a 2-D NumPy array or a sequence of vectors, not {}",
                type_name(obj)
            ),
            None,
        )
    })?;
    let mut data: Vec<f32> = Vec::new();
    let mut dim: Option<usize> = None;
    let mut rows = 0usize;
    for (i, row) in items.enumerate() {
        let row = row?;
        let start = data.len();
        push_vector(&row, what, i, &mut data)?;
        let len = data.len() - start;
        if i == 0 {
            // Size the buffer once the length of a vector is known.
            if let Ok(n) = obj.len() {
                data.reserve(len.saturating_mul(n.saturating_sub(1)));
            }
        }
        match (expected, dim) {
            (Some(want), _) if len != want => {
                return Err(dimension_mismatch(py, want, len, Some(i)));
            }
            (None, Some(first)) if len != first => {
                return Err(invalid(
                    py,
                    format!(
                        "embedding {i} has {len} components but embedding 0 has {first}: every vector needs the same length"
                    ),
                    Some(i),
                ));
            }
            _ => {}
        }
        dim.get_or_insert(len);
        rows += 1;
    }
    Ok(Matrix {
        data: Floats::Owned(data),
        rows,
    })
}

/// Appends the components of vector `i` of a batch to `out`.
fn push_vector(row: &Bound<'_, PyAny>, what: &str, i: usize, out: &mut Vec<f32>) -> PyResult<()> {
    let py = row.py();
    if let Ok(list) = row.cast::<PyList>() {
        out.reserve(list.len());
        for (j, x) in list.iter().enumerate() {
            out.push(component(&x, i, j)?);
        }
        return Ok(());
    }
    if let Ok(tuple) = row.cast::<PyTuple>() {
        out.reserve(tuple.len());
        for (j, x) in tuple.iter().enumerate() {
            out.push(component(&x, i, j)?);
        }
        return Ok(());
    }
    if let Ok(arr) = row.cast::<PyUntypedArray>() {
        if arr.ndim() != 1 {
            return Err(invalid(
                py,
                format!(
                    "embedding {i} must be a 1-D array, got shape {:?}",
                    arr.shape()
                ),
                Some(i),
            ));
        }
        check_float_dtype(arr, &format!("embedding {i}"), Some(i))?;
        out.extend_from_slice(copy_floats(arr)?.as_slice());
        return Ok(());
    }
    if row.is_instance_of::<PyString>() || row.is_instance_of::<PyBytes>() {
        return Err(invalid(
            py,
            format!(
                "embedding {i} is a {}, not a vector of numbers",
                type_name(row)
            ),
            Some(i),
        ));
    }
    if row.is_instance_of::<PyFloat>() || row.extract::<f64>().is_ok() {
        return Err(invalid(
            py,
            format!(
                "{what} must be a sequence of vectors, but item {i} is a number: to pass one vector, wrap it in a list"
            ),
            Some(i),
        ));
    }
    let items = row.try_iter().map_err(|_| {
        invalid(
            py,
            format!(
                "embedding {i} is a {}, not a sequence of numbers",
                type_name(row)
            ),
            Some(i),
        )
    })?;
    for (j, x) in items.enumerate() {
        out.push(component(&x?, i, j)?);
    }
    Ok(())
}

/// Component `j` of vector `i` as an `f32` (values beyond the `f32` range become infinite,
/// which the engine rejects with the component's position).
fn component(x: &Bound<'_, PyAny>, i: usize, j: usize) -> PyResult<f32> {
    if let Ok(f) = x.cast::<PyFloat>() {
        return Ok(f.value() as f32);
    }
    if x.is_instance_of::<PyString>() || x.is_instance_of::<PyBytes>() {
        return Err(not_a_number(x, i, j));
    }
    x.extract::<f64>()
        .map(|v| v as f32)
        .map_err(|_| not_a_number(x, i, j))
}

fn not_a_number(x: &Bound<'_, PyAny>, i: usize, j: usize) -> PyErr {
    invalid(
        x.py(),
        format!("component {j} of vector {i} {}", what_it_is(x)),
        Some(i),
    )
}

/// Why `x` is no vector component: "is a str, not a number", or for an int past f64's range
/// (which `extract` refuses with an overflow) that it is too large.
fn what_it_is(x: &Bound<'_, PyAny>) -> String {
    if x.is_instance_of::<PyInt>() {
        "is an int too large for a float32 (at most about 3.4e38 in size)".to_owned()
    } else {
        format!("is a {}, not a number", type_name(x))
    }
}

/// One vector: a 1-D NumPy array (or a 2-D array with one row), or a sequence of numbers.
pub(crate) fn vector<'py>(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<Vector<'py>> {
    let py = obj.py();
    let converted;
    let obj = match as_array_like(obj)? {
        Some(array) => {
            converted = array;
            &converted
        }
        None => obj,
    };
    if let Ok(arr) = obj.cast::<PyUntypedArray>() {
        let shape = arr.shape();
        let ok = shape.len() == 1 || (shape.len() == 2 && shape[0] == 1);
        if !ok {
            return Err(invalid(
                py,
                format!(
                    "{what} must be one vector (a 1-D array), got shape {shape:?}: for several queries use search_batch"
                ),
                None,
            ));
        }
        check_float_dtype(arr, what, None)?;
        return Ok(Vector(copy_floats(arr)?));
    }
    if obj.is_instance_of::<PyString>() || obj.is_instance_of::<PyBytes>() {
        return Err(invalid(
            py,
            format!(
                "{what} must be a sequence of numbers, not {}",
                type_name(obj)
            ),
            None,
        ));
    }
    let mut out = Vec::new();
    let items = obj.try_iter().map_err(|_| {
        invalid(
            py,
            format!(
                "{what} must be a 1-D NumPy array or a sequence of numbers, not {}",
                type_name(obj)
            ),
            None,
        )
    })?;
    for (j, x) in items.enumerate() {
        let x = x?;
        if let Ok(f) = x.cast::<PyFloat>() {
            out.push(f.value() as f32);
            continue;
        }
        let is_text = x.is_instance_of::<PyString>() || x.is_instance_of::<PyBytes>();
        match x.extract::<f64>() {
            Ok(v) if !is_text => out.push(v as f32),
            _ => {
                let hint = if x.is_instance_of::<PyList>() || x.cast::<PyUntypedArray>().is_ok() {
                    ": for several queries use search_batch"
                } else {
                    ""
                };
                return Err(invalid(
                    py,
                    format!("component {j} of the {what} {}{hint}", what_it_is(&x)),
                    None,
                ));
            }
        }
    }
    Ok(Vector(Floats::Owned(out)))
}
