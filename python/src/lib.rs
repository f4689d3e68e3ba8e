//! `srvdb._srvdb`: the Python extension module of SrvDB (PyO3). The `srvdb` package re-exports
//! it together with the exception classes defined in `srvdb/_errors.py`.
//!
//! - `database`: `srvdb.open` / `srvdb.Database` / `srvdb.Record`, the Pythonic API;
//! - `legacy`: `srvdb.SvDBPython`, the original API, call for call;
//! - `handle`: what both hold, and the calls they share (the GIL is released around every
//!   scan, write and sync);
//! - `convert`: Python arguments to engine inputs (arrays copied while the GIL is held);
//! - `backend`: which `srvdb::Store` a handle opens: the native engine, or with the `wasm`
//!   cargo feature the same engine as a WASI component in a wasmtime sandbox;
//! - `errors`: `srvdb::Error` to the Python exception tree;
//! - `text`: the text embedder behind `srvdb.open(..., embedder=...)`;
//! - `progress`: the optional progress bar of long embedding jobs;
//! - `sharding`: the shard numbers of a batch of ids, for `srvdb.distributed`.

#![deny(clippy::unwrap_used, clippy::undocumented_unsafe_blocks)]

mod backend;
mod convert;
mod database;
mod errors;
mod handle;
mod legacy;
mod progress;
mod sharding;
mod text;

use pyo3::prelude::*;

#[pymodule]
fn _srvdb(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<database::Database>()?;
    m.add_class::<database::Record>()?;
    m.add_class::<legacy::SvDBPython>()?;
    m.add_function(wrap_pyfunction!(database::open, m)?)?;
    m.add_function(wrap_pyfunction!(database::reads_in_place, m)?)?;
    m.add_function(wrap_pyfunction!(database::_sync_directory, m)?)?;
    m.add_function(wrap_pyfunction!(sharding::shard_numbers, m)?)?;
    Ok(())
}
