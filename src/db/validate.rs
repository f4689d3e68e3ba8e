//! Checks of user input, shared by writes, searches and open: each rejects a bad request
//! whole, before anything is written or locked, with an error that says what to fix.

use crate::error::{Error, Result};
use crate::types::{Metadata, MAX_DOCUMENT_BYTES, MAX_ID_BYTES, MAX_METADATA_BYTES};

/// The error for `values` that are not `n` vectors of `expected` components: `got` is the
/// per-vector length when the values split evenly, else the total.
pub(super) fn dimension_mismatch(expected: u32, values: &[f32], n: usize) -> Error {
    let got = if n > 0 && values.len().is_multiple_of(n) {
        values.len() / n
    } else {
        values.len()
    };
    Error::DimensionMismatch {
        expected,
        got,
        index: None,
    }
}

/// Position of the first NaN or infinity in `values`; large inputs are checked on every core.
pub(super) fn first_non_finite(values: &[f32]) -> Option<usize> {
    #[cfg(not(target_arch = "wasm32"))]
    if values.len() > 1 << 16 {
        use rayon::prelude::*;
        const CHUNK: usize = 1 << 16;
        let chunk = values
            .par_chunks(CHUNK)
            .position_first(|c| c.iter().any(|x| !x.is_finite()))?;
        let offset = chunk * CHUNK;
        return values[offset..]
            .iter()
            .position(|x| !x.is_finite())
            .map(|p| offset + p);
    }
    values.iter().position(|x| !x.is_finite())
}

/// The error for a NaN or infinity at flat position `pos` of `vectors` (from
/// [`first_non_finite`]), naming the vector and the component.
pub(super) fn non_finite_error(vectors: &[f32], pos: usize, dim: usize) -> Error {
    Error::InvalidInput {
        reason: format!(
            "component {} is {} (NaN and infinity cannot be searched)",
            pos % dim,
            vectors[pos]
        ),
        index: Some(pos / dim),
    }
}

/// How many queries of `dim` components `queries` holds back to back; a length that is not a
/// multiple of `dim` is a dimension mismatch.
pub(super) fn batch_len(dim: u32, queries: &[f32]) -> Result<usize> {
    if !queries.len().is_multiple_of(dim as usize) {
        return Err(Error::DimensionMismatch {
            expected: dim,
            got: queries.len(),
            index: None,
        });
    }
    Ok(queries.len() / dim as usize)
}

/// `queries` must be `n` finite vectors of `dim` components.
pub(super) fn check_queries(dim: u32, queries: &[f32], n: usize) -> Result<()> {
    let d = dim as usize;
    if queries.len() != n * d {
        return Err(dimension_mismatch(dim, queries, n));
    }
    if let Some(pos) = queries.iter().position(|x| !x.is_finite()) {
        return Err(Error::InvalidInput {
            reason: format!("query component {} is {}", pos % d, queries[pos]),
            index: Some(pos / d),
        });
    }
    Ok(())
}

pub(super) use crate::types::check_dimension;

/// Rejects metadata and documents larger than the store takes, before anything is written: a
/// value redb refused at commit would poison the handle and drop every pending batch with it.
pub(super) fn check_documents_and_metadata<D: AsRef<str>>(
    metadatas: &[Option<Metadata>],
    documents: &[Option<D>],
) -> Result<()> {
    let metadata = metadatas
        .iter()
        .map(|m| m.as_ref().map(|m| m.as_str().len()));
    check_sizes(
        metadata,
        "metadata",
        MAX_METADATA_BYTES,
        "keep large content in the document, or outside the database",
    )?;
    let document = documents
        .iter()
        .map(|d| d.as_ref().map(|d| d.as_ref().len()));
    check_sizes(
        document,
        "document",
        MAX_DOCUMENT_BYTES,
        "split it into chunks, one record each",
    )
}

/// The first of `sizes` (one per record, `None` for no value) over `limit` bytes, as an error
/// naming `what`, the limit and `advice`.
fn check_sizes(
    sizes: impl Iterator<Item = Option<usize>>,
    what: &str,
    limit: usize,
    advice: &str,
) -> Result<()> {
    for (i, len) in sizes.enumerate() {
        if let Some(len) = len.filter(|&len| len > limit) {
            return Err(Error::InvalidInput {
                reason: format!("{what} is {len} bytes; the limit is {limit} ({advice})"),
                index: Some(i),
            });
        }
    }
    Ok(())
}

pub(super) fn check_id(id: &str, index: usize) -> Result<()> {
    if id.is_empty() {
        return Err(Error::InvalidInput {
            reason: "empty id".into(),
            index: Some(index),
        });
    }
    if id.len() > MAX_ID_BYTES {
        return Err(Error::InvalidInput {
            reason: format!("id is {} bytes; the limit is {MAX_ID_BYTES}", id.len()),
            index: Some(index),
        });
    }
    Ok(())
}
