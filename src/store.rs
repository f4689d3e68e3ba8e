//! The database API, written once. Every target implements [`Store`]: the native engine
//! ([`crate::Database`]) and the sandboxed one (`srvdb_host::SandboxedDatabase`, the WASI
//! component in wasmtime). Python holds a `Box<dyn Store>` and the text layer is generic over
//! it, so a new operation is added here, in the WIT file, the guest adapter, the host and
//! Python's surface, and nowhere in between.
//!
//! Requests that will grow (a filter, index parameters) are structs with constructors rather
//! than positional arguments, so growing them does not change every layer's signatures.

use crate::coalesce::CoalesceStats;
use crate::error::Result;
use crate::types::{EmbedderSpec, Metadata, Metric, Record, SearchHit};

/// Whether a write inserts new records or replaces existing ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteMode {
    /// Insert; an id that exists (or repeats in the batch) rejects the whole batch.
    #[default]
    Add,
    /// Insert or replace: an existing id's old record is deleted.
    Upsert,
}

/// One batch write: `ids.len()` vectors back to back in `vectors`, and optional per-id
/// metadata and documents (each empty, or one entry per id). Atomic: any bad entry rejects the
/// whole batch and writes nothing.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Write<'a> {
    /// Add or upsert.
    pub mode: WriteMode,
    /// The records' ids.
    pub ids: &'a [&'a str],
    /// The vectors, row-major.
    pub vectors: &'a [f32],
    /// Empty, or one metadata per id.
    pub metadatas: &'a [Option<Metadata>],
    /// Empty, or one document (the text the vector was embedded from) per id.
    pub documents: &'a [Option<&'a str>],
}

impl<'a> Write<'a> {
    /// A write of `ids` with `vectors` in `mode`, without metadata or documents.
    pub fn new(mode: WriteMode, ids: &'a [&'a str], vectors: &'a [f32]) -> Self {
        Write {
            mode,
            ids,
            vectors,
            metadatas: &[],
            documents: &[],
        }
    }

    /// An add (existing ids are an error).
    pub fn add(ids: &'a [&'a str], vectors: &'a [f32]) -> Self {
        Self::new(WriteMode::Add, ids, vectors)
    }

    /// An upsert (existing ids are replaced).
    pub fn upsert(ids: &'a [&'a str], vectors: &'a [f32]) -> Self {
        Self::new(WriteMode::Upsert, ids, vectors)
    }

    /// With metadata: empty or one per id.
    pub fn metadatas(mut self, metadatas: &'a [Option<Metadata>]) -> Self {
        self.metadatas = metadatas;
        self
    }

    /// With documents: empty or one per id.
    pub fn documents(mut self, documents: &'a [Option<&'a str>]) -> Self {
        self.documents = documents;
        self
    }
}

/// What a delete does with an id that is not in the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Missing {
    /// An unknown id rejects the whole call with [`crate::Error::NotFound`].
    #[default]
    Reject,
    /// Unknown ids are skipped (the check and the delete are one step, so a concurrent delete
    /// cannot make the call fail).
    Skip,
}

/// One delete: records by id.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Delete<'a> {
    /// The ids to delete; repeats count once.
    pub ids: &'a [&'a str],
    /// Whether unknown ids are an error.
    pub missing: Missing,
}

impl<'a> Delete<'a> {
    /// A delete of `ids` where an unknown id is an error.
    pub fn ids(ids: &'a [&'a str]) -> Self {
        Delete {
            ids,
            missing: Missing::Reject,
        }
    }

    /// The same delete, skipping unknown ids.
    pub fn skip_missing(mut self) -> Self {
        self.missing = Missing::Skip;
        self
    }
}

/// The query vectors of a [`Query`].
#[derive(Debug, Clone, Copy)]
pub enum Queries<'a> {
    /// One query vector. Concurrent single queries on one native handle are coalesced into
    /// one scan.
    One(&'a [f32]),
    /// Any number of query vectors back to back, answered by one scan.
    Batch(&'a [f32]),
}

/// One nearest-neighbour request: query vectors and how many hits each.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Query<'a> {
    /// The query vector(s).
    pub queries: Queries<'a>,
    /// Hits per query; larger than the count returns every live record.
    pub k: usize,
}

impl<'a> Query<'a> {
    /// The `k` best matches for one query vector.
    pub fn one(query: &'a [f32], k: usize) -> Self {
        Query {
            queries: Queries::One(query),
            k,
        }
    }

    /// The `k` best matches for each query of `queries` (back to back).
    pub fn batch(queries: &'a [f32], k: usize) -> Self {
        Query {
            queries: Queries::Batch(queries),
            k,
        }
    }
}

/// An open database, wherever its engine runs. Every method can fail, because a sandboxed
/// engine answers through a runtime that can (its failures are [`crate::Error::Sandbox`]).
pub trait Store: Send + Sync {
    /// Inserts or replaces a batch (see [`Write`]).
    fn write(&self, request: &Write<'_>) -> Result<()>;
    /// Deletes records (see [`Delete`]); returns how many were deleted.
    fn remove(&self, request: &Delete<'_>) -> Result<usize>;
    /// The best matches, best first: one list per query vector (see [`Query`]); no lists while
    /// the database has no dimension yet (nothing added), since flat queries cannot be split.
    fn query(&self, request: &Query<'_>) -> Result<Vec<Vec<SearchHit>>>;
    /// The record stored under `id`, if any.
    fn get(&self, id: &str) -> Result<Option<Record>>;
    /// The stored documents of `ids`, in order (`None` for unknown ids and records without).
    fn documents(&self, ids: &[&str]) -> Result<Vec<Option<String>>>;
    /// True when `id` is live.
    fn contains(&self, id: &str) -> Result<bool>;
    /// Live records.
    fn count(&self) -> Result<u64>;
    /// Live ids in insertion order.
    fn ids(&self) -> Result<Vec<String>>;
    /// The dimension, once fixed.
    fn dimension(&self) -> Result<Option<u32>>;
    /// The metric.
    fn metric(&self) -> Result<Metric>;
    /// The text embedder the database recorded, if any.
    fn embedder(&self) -> Result<Option<EmbedderSpec>>;
    /// Which kernels the engine uses (for reports).
    fn kernel(&self) -> Result<String>;
    /// Makes every change durable: fsync the rows, then commit.
    fn persist(&self) -> Result<()>;
    /// Rewrites the files without deleted rows (crash-safe).
    fn compact(&self) -> Result<()>;
    /// Searches answered and scans run by query coalescing, where the engine coalesces.
    fn coalesce_stats(&self) -> Option<CoalesceStats> {
        None
    }

    /// Inserts a batch; an existing or repeated id rejects it. `metadatas`: empty or one per id.
    fn add<S: AsRef<str>>(
        &self,
        ids: &[S],
        vectors: &[f32],
        metadatas: &[Option<Metadata>],
    ) -> Result<()>
    where
        Self: Sized,
    {
        let ids = str_refs(ids);
        self.write(&Write::add(&ids, vectors).metadatas(metadatas))
    }

    /// Like [`Store::add`], but an existing id is replaced.
    fn upsert<S: AsRef<str>>(
        &self,
        ids: &[S],
        vectors: &[f32],
        metadatas: &[Option<Metadata>],
    ) -> Result<()>
    where
        Self: Sized,
    {
        let ids = str_refs(ids);
        self.write(&Write::upsert(&ids, vectors).metadatas(metadatas))
    }

    /// Deletes `ids`; an unknown id rejects the whole call with [`crate::Error::NotFound`].
    fn delete<S: AsRef<str>>(&self, ids: &[S]) -> Result<usize>
    where
        Self: Sized,
    {
        self.remove(&Delete::ids(&str_refs(ids)))
    }

    /// The `k` best matches for `query`, best first.
    fn search(&self, query: &[f32], k: usize) -> Result<Vec<SearchHit>> {
        Ok(self
            .query(&Query::one(query, k))?
            .into_iter()
            .next()
            .unwrap_or_default())
    }

    /// The `k` best matches for each query of `queries` (back to back).
    fn search_batch(&self, queries: &[f32], k: usize) -> Result<Vec<Vec<SearchHit>>> {
        self.query(&Query::batch(queries, k))
    }
}

/// Borrows each id as `&str`, for the request types.
pub fn str_refs<S: AsRef<str>>(ids: &[S]) -> Vec<&str> {
    ids.iter().map(AsRef::as_ref).collect()
}
