//! NumPy arrays (and objects with `__array__`) as `f32`s in a buffer the binding owns.
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

use super::numpy_module;
use crate::errors::invalid;
use numpy::{
    Element, PyArray1, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyReadonlyArray1,
    PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use pyo3::types::{PyFloat, PyList, PyString, PyTuple};

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

/// Rejects arrays whose dtype is not floating-point (`what` names the argument).
pub(super) fn check_float_dtype(
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
pub(super) fn copy_floats<'py>(arr: &Bound<'py, PyUntypedArray>) -> PyResult<Floats<'py>> {
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
pub(super) fn as_array_like<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
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
