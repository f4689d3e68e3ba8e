//! Python arguments to engine inputs: ids, embeddings (NumPy arrays or sequences), metadata,
//! `k`. Every failure is an `InvalidInputError` or `DimensionMismatchError` that names the
//! position at fault, raised before the engine is called, so a rejected call changes nothing.
//!
//! Every array is copied into a buffer the binding owns, once, while the GIL is held, and the
//! engine only ever sees that copy: it checks the copy for NaN and stores or scores the same
//! copy. The engine used to read the caller's array in place with the GIL released, so another
//! Python thread could write a NaN into it after the check (and the NaN was stored), or resize
//! it (`ndarray.resize(..., refcheck=False)`) and free the memory being read (issue 13).
//! While the GIL is held no Python code runs, so nothing can resize or free the array during
//! the copy. A NumPy operation that another thread runs with the GIL released can still write
//! into the array meanwhile; the copy then mixes old and new values, and is checked as a whole.
//!
//! `float32` and `float64` arrays of any layout (C or Fortran order, strided views) are copied
//! by Rust, converting `float64` to `float32`. Other floating-point arrays (`float16`,
//! `longdouble`, byte-swapped or unaligned) are read through `ndarray.tolist()`, also with the
//! GIL held (slower: convert them with `.astype(numpy.float32)` first if speed matters). Lists,
//! tuples and other sequences are read element by element. Integer, boolean, complex, string
//! and object arrays are rejected rather than guessed at.

use crate::errors::{dimension_mismatch, invalid};
use numpy::{
    Element, PyArray1, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyReadonlyArray1,
    PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyFloat, PyList, PyModule, PyString, PyTuple};
use srvdb::Metadata;

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

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_owned())
}

/// Values copied into a buffer the binding owns (see the module doc). A contiguous `float32`
/// array is copied into a new NumPy array that only this value refers to: NumPy asks for huge
/// pages for large arrays, and copying 10,000 x 1536 values took 10 ms that way against 77 ms
/// into a `Vec` (page faults). Other inputs are converted into a `Vec`.
pub(crate) enum Floats<'py> {
    /// A private array: never handed to Python code, so nothing else can write to it, resize
    /// it or free it while the engine reads it (with or without the GIL).
    Private(PyReadonlyArray1<'py, f32>),
    Owned(Vec<f32>),
}

impl Floats<'_> {
    pub(crate) fn as_slice(&self) -> &[f32] {
        match self {
            // A new one-dimensional array is contiguous.
            Floats::Private(a) => a.as_slice().unwrap_or(&[]),
            Floats::Owned(v) => v,
        }
    }
}

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

/// Rejects arrays whose dtype is not floating-point (`what` names the argument).
fn check_float_dtype(
    arr: &Bound<'_, PyUntypedArray>,
    what: &str,
    index: Option<usize>,
) -> PyResult<()> {
    let dtype = arr.dtype();
    if dtype.kind() == b'f' {
        return Ok(());
    }
    let name = dtype
        .str()
        .map(|s| s.to_string())
        .unwrap_or_else(|_| "?".into());
    Err(invalid(
        arr.py(),
        format!(
            "{what} must hold floating-point numbers, not dtype {name}: convert it with .astype(numpy.float32)"
        ),
        index,
    ))
}

/// The values of a floating-point array, in row-major (C) order, as `f32`, copied into a new
/// buffer while the GIL is held (see the module doc). The caller has checked the dtype.
fn copy_floats<'py>(arr: &Bound<'py, PyUntypedArray>) -> PyResult<Floats<'py>> {
    if let Some(values) = copy_typed::<f32>(arr)? {
        return Ok(values);
    }
    if let Some(values) = copy_typed::<f64>(arr)? {
        return Ok(values);
    }
    // float16, longdouble, byte-swapped or unaligned: NumPy's own conversion copies large
    // arrays with the GIL released, during which another thread could resize this one; its
    // `tolist` does not release it.
    let mut out = Vec::with_capacity(arr.len());
    push_nested(
        &arr.call_method0(pyo3::intern!(arr.py(), "tolist"))?,
        &mut out,
    )?;
    Ok(Floats::Owned(out))
}

/// An element type whose arrays are copied by Rust.
trait CopiedElement: Element + Copy {
    fn to_f32(self) -> f32;

    /// A contiguous run of values as `f32`s.
    fn copy_contiguous<'py>(py: Python<'py>, values: &[Self]) -> PyResult<Floats<'py>> {
        let _ = py;
        Ok(Floats::Owned(values.iter().map(|&x| x.to_f32()).collect()))
    }
}

impl CopiedElement for f32 {
    fn to_f32(self) -> f32 {
        self
    }

    fn copy_contiguous<'py>(py: Python<'py>, values: &[Self]) -> PyResult<Floats<'py>> {
        let private = PyArray1::from_slice(py, values);
        Ok(Floats::Private(private.try_readonly()?))
    }
}

impl CopiedElement for f64 {
    fn to_f32(self) -> f32 {
        self as f32
    }
}

/// `arr`'s values as `f32`s, if `arr` is an aligned native-endian array of `T` (any strides);
/// `None` otherwise.
fn copy_typed<'py, T: CopiedElement>(
    arr: &Bound<'py, PyUntypedArray>,
) -> PyResult<Option<Floats<'py>>> {
    // Byte-swapped arrays are not of type `T` (their dtype is not equivalent to it).
    let Ok(typed) = arr.cast::<PyArrayDyn<T>>() else {
        return Ok(None);
    };
    // Rust may only read `T`s at aligned addresses: every element's address is the data
    // pointer plus a sum of multiples of the strides.
    let align = std::mem::align_of::<T>();
    let aligned = (typed.data() as usize).is_multiple_of(align)
        && typed
            .strides()
            .iter()
            .all(|s| s.unsigned_abs().is_multiple_of(align));
    if !aligned {
        return Ok(None);
    }
    let Ok(view) = typed.try_readonly() else {
        return Ok(None);
    };
    let values = view.as_array();
    Ok(Some(match values.as_slice() {
        Some(contiguous) => T::copy_contiguous(arr.py(), contiguous)?,
        None => Floats::Owned(values.iter().map(|&x| x.to_f32()).collect()),
    }))
}

/// Appends the numbers of `obj` (`tolist()` output: a float, or nested lists of them) to
/// `out`, in order.
fn push_nested(obj: &Bound<'_, PyAny>, out: &mut Vec<f32>) -> PyResult<()> {
    if let Ok(list) = obj.cast::<PyList>() {
        for item in list.iter() {
            push_nested(&item, out)?;
        }
        return Ok(());
    }
    let value = match obj.cast::<PyFloat>() {
        Ok(f) => f.value(),
        Err(_) => obj.extract::<f64>()?,
    };
    out.push(value as f32);
    Ok(())
}

/// Objects that are not NumPy arrays but convert to one (`__array__`: a PyTorch CPU tensor, a
/// pandas DataFrame, ...) as `numpy.asarray(obj)`; `None` for arrays, lists, tuples and the rest.
fn as_array_like<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
    if obj.cast::<PyUntypedArray>().is_ok()
        || obj.is_instance_of::<PyList>()
        || obj.is_instance_of::<PyTuple>()
        || obj.is_instance_of::<PyString>()
        || !obj.hasattr(pyo3::intern!(obj.py(), "__array__"))?
    {
        return Ok(None);
    }
    Ok(Some(
        numpy_module(obj.py())?.call_method1("asarray", (obj,))?,
    ))
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
        format!(
            "component {j} of vector {i} is a {}, not a number",
            type_name(x)
        ),
        Some(i),
    )
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
                    format!(
                        "component {j} of the {what} is a {}, not a number{hint}",
                        type_name(&x)
                    ),
                    None,
                ));
            }
        }
    }
    Ok(Vector(Floats::Owned(out)))
}

/// Ids for a write: a sequence of `str` (a single `str` is refused, since iterating it would
/// give its characters).
pub(crate) fn ids(obj: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    str_sequence(obj, "ids", |i| format!("id {i}"))
}

/// Texts (documents or queries): a sequence of `str`; a single `str` only if `one_allowed`
/// (then it is one text, and the flag says it was one).
pub(crate) fn texts_or_one(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<(Vec<String>, bool)> {
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok((vec![s.to_str()?.to_owned()], true));
    }
    Ok((texts(obj, what)?, false))
}

/// A sequence of `str` (documents, query texts); a single `str` is refused, as for ids.
pub(crate) fn texts(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<String>> {
    str_sequence(obj, what, |i| format!("{what}[{i}]"))
}

/// A sequence of `str` called `what` in errors; `item(i)` names its element `i`. A single
/// `str` is refused (iterating it would give its characters).
fn str_sequence(
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
        out.push(s.to_str()?.to_owned());
    }
    Ok(out)
}

/// Ids to delete: one `str` or a sequence of them.
pub(crate) fn ids_or_one(obj: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(vec![s.to_str()?.to_owned()]);
    }
    ids(obj)
}

/// Metadata for a write: `None`, or one entry per id, each `None`, a `str` (stored exactly as
/// given, JSON or not) or any JSON-serialisable value such as a `dict` (stored as its JSON).
pub(crate) fn metadatas(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<Option<Metadata>>> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok(Vec::new());
    };
    let py = obj.py();
    if obj.is_instance_of::<PyString>() || obj.cast::<pyo3::types::PyDict>().is_ok() {
        return Err(invalid(
            py,
            format!(
                "metadatas must be a sequence with one entry per id, not a single {}: wrap it in a list",
                type_name(obj)
            ),
            None,
        ));
    }
    let items = obj.try_iter().map_err(|_| {
        invalid(
            py,
            format!("metadatas must be a sequence, not {}", type_name(obj)),
            None,
        )
    })?;
    let mut out = Vec::with_capacity(obj.len().unwrap_or(0));
    for (i, item) in items.enumerate() {
        let item = item?;
        out.push(metadata(&item, i)?);
    }
    Ok(out)
}

fn metadata(item: &Bound<'_, PyAny>, i: usize) -> PyResult<Option<Metadata>> {
    let py = item.py();
    if item.is_none() {
        return Ok(None);
    }
    if let Ok(s) = item.cast::<PyString>() {
        return Ok(Some(Metadata::from_text(s.to_str()?)));
    }
    if item.is_instance_of::<PyBytes>() {
        return Err(invalid(
            py,
            format!("metadata {i} is bytes: decode it to str, or pass a dict"),
            Some(i),
        ));
    }
    let mut fast = String::new();
    if simple_json(item, &mut fast, 0) {
        return Ok(Some(Metadata::Json(fast)));
    }
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item("ensure_ascii", false)?;
    kwargs.set_item("allow_nan", false)?;
    let text = json_module(py)?
        .call_method("dumps", (item,), Some(&kwargs))
        .map_err(|e| {
            invalid(
                py,
                format!(
                    "metadata {i} (a {}) cannot be stored as JSON: {}",
                    type_name(item),
                    e.value(py)
                ),
                Some(i),
            )
        })?;
    Ok(Some(Metadata::Json(text.extract::<String>()?)))
}

/// Writes `obj` as `json.dumps(obj, ensure_ascii=False)` would, for the common metadata shapes
/// (dicts with str keys, lists, str, int, bool, None; nested at most 32 deep), without a call
/// into Python per item: 50,000 small dicts went from about 0.18 s through `json.dumps` to a
/// fraction of that. Returns false for anything else (floats, whose repr is Python's own,
/// other key types, big ints, custom objects), and the caller falls back to `json.dumps`.
fn simple_json(obj: &Bound<'_, PyAny>, out: &mut String, depth: usize) -> bool {
    use pyo3::types::{PyBool, PyDict, PyInt};
    if depth > 32 {
        return false;
    }
    if obj.is_none() {
        out.push_str("null");
    } else if let Ok(b) = obj.cast::<PyBool>() {
        out.push_str(if b.is_true() { "true" } else { "false" });
    } else if let Ok(i) = obj.cast_exact::<PyInt>() {
        match i.extract::<i64>() {
            Ok(v) => out.push_str(&v.to_string()),
            Err(_) => return false,
        }
    } else if let Ok(s) = obj.cast_exact::<PyString>() {
        match s.to_str() {
            Ok(text) => json_string(text, out),
            Err(_) => return false,
        }
    } else if let Ok(d) = obj.cast_exact::<PyDict>() {
        out.push('{');
        for (n, (key, value)) in d.iter().enumerate() {
            let Ok(key) = key
                .cast_exact::<PyString>()
                .map(|k| k.to_str().map(str::to_owned))
            else {
                return false;
            };
            let Ok(key) = key else { return false };
            if n > 0 {
                out.push_str(", ");
            }
            json_string(&key, out);
            out.push_str(": ");
            if !simple_json(&value, out, depth + 1) {
                return false;
            }
        }
        out.push('}');
    } else if let Ok(l) = obj.cast_exact::<PyList>() {
        out.push('[');
        for (n, value) in l.iter().enumerate() {
            if n > 0 {
                out.push_str(", ");
            }
            if !simple_json(&value, out, depth + 1) {
                return false;
            }
        }
        out.push(']');
    } else {
        return false;
    }
    true
}

/// A JSON string literal with the escapes `json.dumps(..., ensure_ascii=False)` uses.
fn json_string(text: &str, out: &mut String) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The `k` of a search: a non-negative int. Anything else is an `InvalidInputError` (a
/// `ValueError`), not the `OverflowError`/`TypeError` a plain `usize` argument would give.
pub(crate) struct K(pub(crate) usize);

impl<'a, 'py> FromPyObject<'a, 'py> for K {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        k(&obj).map(K)
    }
}

fn k(obj: &Bound<'_, PyAny>) -> PyResult<usize> {
    let py = obj.py();
    let bad = || {
        invalid(
            py,
            format!(
                "k must be a non-negative int, got {} {}",
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
