//! `srvdb._srvdb.shard_numbers`: the shard of every id of a batch, for `srvdb.distributed`'s
//! routing. In Rust because one `hashlib` call per id was the largest cost of a sharded ingest
//! in its driver process (0.11 s of 200,000 ids); `srvdb.distributed._manifest.shard_of`
//! keeps the same hash in Python, one id at a time.

use crate::{convert, errors};
use blake2::digest::{Update, VariableOutput};
use blake2::Blake2bVar;
use numpy::{IntoPyArray, PyArray1};
use pyo3::prelude::*;

/// The shard of each of ``ids`` among ``shards`` shards (an ``int64`` array): the 8 bytes
/// of BLAKE2b with an 8-byte digest (``hashlib.blake2b(id.encode(), digest_size=8)``) of the
/// id's UTF-8, read little-endian, modulo ``shards``.
#[pyfunction]
pub(crate) fn shard_numbers<'py>(
    py: Python<'py>,
    ids: &Bound<'py, PyAny>,
    shards: u32,
) -> PyResult<Bound<'py, PyArray1<i64>>> {
    if shards == 0 {
        return Err(errors::invalid(
            py,
            "shards must be at least 1".to_owned(),
            None,
        ));
    }
    let ids = convert::ids(ids)?;
    let numbers = py.detach(|| {
        ids.iter()
            .map(|id| shard_of(id, shards))
            .collect::<Option<Vec<i64>>>()
    });
    match numbers {
        Some(numbers) => Ok(numbers.into_pyarray(py)),
        None => Err(errors::invalid(
            py,
            "BLAKE2b refused an 8-byte digest".to_owned(),
            None,
        )),
    }
}

/// `None` only if the BLAKE2b implementation refused an 8-byte digest, which it accepts (1
/// to 64 bytes).
fn shard_of(id: &str, shards: u32) -> Option<i64> {
    let mut hasher = Blake2bVar::new(8).ok()?;
    hasher.update(id.as_bytes());
    let mut digest = [0u8; 8];
    hasher.finalize_variable(&mut digest).ok()?;
    // Below `shards`, a u32: always an i64.
    Some((u64::from_le_bytes(digest) % u64::from(shards)) as i64)
}
