//! Engine errors as Python exceptions.
//!
//! The exception classes are defined in Python (`srvdb/_errors.py`), because several of them
//! have two bases (`DimensionMismatchError` is also a `ValueError`, `NotFoundError` also a
//! `KeyError`, ...), which `create_exception!` cannot express. This module imports them once
//! and builds instances carrying the details as attributes (`index`, `id`, `expected`, ...).

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;
use pyo3::IntoPyObjectExt;

/// The Python exception classes, in `srvdb._errors`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Base,
    DimensionMismatch,
    DuplicateId,
    NotFound,
    InvalidInput,
    Corrupt,
    Locked,
    ReadOnly,
    Io,
    Poisoned,
    BackendUnavailable,
    Sandbox,
    EmbedderMismatch,
    Model,
    InvalidFilter,
}

const KINDS: usize = 15;

impl Kind {
    fn class_name(self) -> &'static str {
        match self {
            Kind::Base => "Error",
            Kind::DimensionMismatch => "DimensionMismatchError",
            Kind::DuplicateId => "DuplicateIdError",
            Kind::NotFound => "NotFoundError",
            Kind::InvalidInput => "InvalidInputError",
            Kind::Corrupt => "CorruptError",
            Kind::Locked => "LockedError",
            Kind::ReadOnly => "ReadOnlyError",
            Kind::Io => "IoError",
            Kind::Poisoned => "PoisonedError",
            Kind::BackendUnavailable => "BackendUnavailableError",
            Kind::Sandbox => "SandboxError",
            Kind::EmbedderMismatch => "EmbedderMismatchError",
            Kind::Model => "ModelError",
            Kind::InvalidFilter => "InvalidFilterError",
        }
    }
}

static CLASSES: [PyOnceLock<Py<PyType>>; KINDS] = [const { PyOnceLock::new() }; KINDS];

/// An attribute value of an exception.
pub(crate) enum Attr {
    Int(i64),
    Str(String),
}

/// Builds an exception of class `kind` with `message` and the given attributes.
pub(crate) fn raise(py: Python<'_>, kind: Kind, message: String, attrs: &[(&str, Attr)]) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let class = CLASSES[kind as usize].import(py, "srvdb._errors", kind.class_name())?;
        let exc = class.call1((message.as_str(),))?;
        for (name, value) in attrs {
            let value = match value {
                Attr::Int(v) => v.into_py_any(py)?,
                Attr::Str(s) => s.into_py_any(py)?,
            };
            exc.setattr(*name, value)?;
        }
        Ok(PyErr::from_value(exc))
    };
    build().unwrap_or_else(|e| e)
}

fn index_attr(index: Option<usize>) -> Option<(&'static str, Attr)> {
    index.map(|i| ("index", Attr::Int(i as i64)))
}

/// `InvalidInputError` raised by the binding's own checks.
pub(crate) fn invalid(py: Python<'_>, message: String, index: Option<usize>) -> PyErr {
    let attrs: Vec<_> = index_attr(index).into_iter().collect();
    raise(py, Kind::InvalidInput, message, &attrs)
}

/// `InvalidFilterError` raised by the binding's own checks (a filter that is not a dict, or
/// holds what JSON cannot express), in the engine's wording.
pub(crate) fn invalid_filter(py: Python<'_>, part: &str, reason: String) -> PyErr {
    engine(
        py,
        srvdb::Error::InvalidFilter {
            part: part.to_owned(),
            reason,
        },
    )
}

/// `DimensionMismatchError` raised by the binding's own checks (with the vector's index).
pub(crate) fn dimension_mismatch(
    py: Python<'_>,
    expected: usize,
    got: usize,
    index: Option<usize>,
) -> PyErr {
    // Same wording as the engine's `Error::DimensionMismatch`.
    let err = srvdb::Error::DimensionMismatch {
        expected: expected as u32,
        got,
        index,
    };
    engine(py, err)
}

/// Maps an engine error to its Python exception.
pub(crate) fn engine(py: Python<'_>, err: srvdb::Error) -> PyErr {
    let message = err.to_string();
    let mut attrs: Vec<(&str, Attr)> = Vec::new();
    let kind = match err {
        srvdb::Error::DimensionMismatch {
            expected,
            got,
            index,
        } => {
            attrs.push(("expected", Attr::Int(i64::from(expected))));
            attrs.push(("got", Attr::Int(got as i64)));
            attrs.extend(index_attr(index));
            Kind::DimensionMismatch
        }
        srvdb::Error::DuplicateId { id, index } => {
            attrs.push(("id", Attr::Str(id)));
            attrs.extend(index_attr(index));
            Kind::DuplicateId
        }
        srvdb::Error::NotFound { id } => {
            attrs.push(("id", Attr::Str(id)));
            Kind::NotFound
        }
        srvdb::Error::InvalidInput { index, .. } => {
            attrs.extend(index_attr(index));
            Kind::InvalidInput
        }
        srvdb::Error::InvalidFilter { part, reason } => {
            attrs.push(("part", Attr::Str(part)));
            attrs.push(("reason", Attr::Str(reason)));
            Kind::InvalidFilter
        }
        srvdb::Error::Corrupt { file, .. } => {
            attrs.push(("path", Attr::Str(file.display().to_string())));
            Kind::Corrupt
        }
        srvdb::Error::Locked { path, holder } => {
            attrs.push(("path", Attr::Str(path.display().to_string())));
            attrs.push(("holder", Attr::Str(holder.name().to_owned())));
            Kind::Locked
        }
        srvdb::Error::ReadOnly { .. } => Kind::ReadOnly,
        srvdb::Error::Io { source, .. } => {
            if let Some(code) = source.raw_os_error() {
                attrs.push(("errno", Attr::Int(i64::from(code))));
            }
            Kind::Io
        }
        srvdb::Error::Poisoned { .. } => Kind::Poisoned,
        srvdb::Error::EmbedderMismatch { stored, asked } => {
            attrs.push(("stored", Attr::Str(stored)));
            attrs.push(("asked", Attr::Str(asked)));
            Kind::EmbedderMismatch
        }
        srvdb::Error::Model { path, .. } => {
            attrs.push(("path", Attr::Str(path.display().to_string())));
            Kind::Model
        }
        srvdb::Error::Sandbox { failure, .. } => {
            attrs.push(("failure", Attr::Str(failure.name().to_owned())));
            Kind::Sandbox
        }
        // `Metadata` (a redb error that is not corruption) and variants added later.
        _ => Kind::Base,
    };
    raise(py, kind, message, &attrs)
}

/// `srvdb.Error` for a handle that was closed.
pub(crate) fn closed(py: Python<'_>, path: &std::path::Path) -> PyErr {
    raise(
        py,
        Kind::Base,
        format!(
            "the database {} is closed: open it again with srvdb.open()",
            path.display()
        ),
        &[],
    )
}

/// Converts engine results, given the interpreter token.
pub(crate) trait EngineResultExt<T> {
    /// The value, or the engine error as its Python exception.
    fn or_raise(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> EngineResultExt<T> for srvdb::Result<T> {
    fn or_raise(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| engine(py, e))
    }
}
