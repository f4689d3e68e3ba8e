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
use crate::filter::Filter;
use crate::quant::index::ScanOptions;
use crate::quant::{IndexInfo, IndexSpec};
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

/// One delete: records by id, by filter, or ids that also match a filter.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Delete<'a> {
    /// The ids to delete (repeats count once); `None` deletes every record the filter matches.
    pub ids: Option<&'a [&'a str]>,
    /// Only records matching this are deleted (with `ids`: only those of the ids that match).
    pub filter: Option<&'a Filter>,
    /// Whether unknown ids are an error.
    pub missing: Missing,
}

impl<'a> Delete<'a> {
    /// A delete of `ids` where an unknown id is an error.
    pub fn ids(ids: &'a [&'a str]) -> Self {
        Delete {
            ids: Some(ids),
            filter: None,
            missing: Missing::Reject,
        }
    }

    /// A delete of every record `filter` matches.
    pub fn matching(filter: &'a Filter) -> Self {
        Delete {
            ids: None,
            filter: Some(filter),
            missing: Missing::Reject,
        }
    }

    /// Restricts the delete to records matching `filter`.
    pub fn filter(mut self, filter: &'a Filter) -> Self {
        self.filter = Some(filter);
        self
    }

    /// The same delete, skipping unknown ids.
    pub fn skip_missing(mut self) -> Self {
        self.missing = Missing::Skip;
        self
    }
}

/// One in-place change of existing records: only what is given changes. A metadata- or
/// document-only update rewrites no vector (the row keeps its number); a new vector is
/// appended as a new row and the old one deleted, as an upsert does. Atomic: an unknown id
/// ([`crate::Error::NotFound`]) or a bad entry changes nothing.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Update<'a> {
    /// The records to change; each must exist, and appear once.
    pub ids: &'a [&'a str],
    /// New vectors, back to back, one per id.
    pub vectors: Option<&'a [f32]>,
    /// New metadata, one per id (`None` entries remove the metadata).
    pub metadatas: Option<&'a [Option<Metadata>]>,
    /// New documents, one per id (`None` entries remove the document).
    pub documents: Option<&'a [Option<&'a str>]>,
}

impl<'a> Update<'a> {
    /// An update of `ids` that changes nothing yet.
    pub fn ids(ids: &'a [&'a str]) -> Self {
        Update {
            ids,
            vectors: None,
            metadatas: None,
            documents: None,
        }
    }

    /// Replaces the vectors.
    pub fn vectors(mut self, vectors: &'a [f32]) -> Self {
        self.vectors = Some(vectors);
        self
    }

    /// Replaces the metadata.
    pub fn metadatas(mut self, metadatas: &'a [Option<Metadata>]) -> Self {
        self.metadatas = Some(metadatas);
        self
    }

    /// Replaces the documents.
    pub fn documents(mut self, documents: &'a [Option<&'a str>]) -> Self {
        self.documents = Some(documents);
        self
    }
}

/// Which records [`Store::records`] returns: those matching `filter` (all without one), in
/// insertion order, skipping `offset` and returning at most `limit`.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct Select<'a> {
    /// Only records matching this.
    pub filter: Option<&'a Filter>,
    /// At most this many.
    pub limit: Option<usize>,
    /// Skip this many matching records first.
    pub offset: usize,
}

impl<'a> Select<'a> {
    /// Every record.
    pub fn all() -> Self {
        Select::default()
    }

    /// Only records matching `filter`.
    pub fn filter(mut self, filter: &'a Filter) -> Self {
        self.filter = Some(filter);
        self
    }

    /// At most `limit` records.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Skips the first `offset` matching records.
    pub fn offset(mut self, offset: usize) -> Self {
        self.offset = offset;
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

/// One nearest-neighbour request: query vectors, how many hits each, and an optional filter
/// (the hits are then exactly the `k` best of the matching records).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Query<'a> {
    /// The query vector(s).
    pub queries: Queries<'a>,
    /// Hits per query; larger than the count returns every live record.
    pub k: usize,
    /// Only records matching this are candidates (one filter for the whole batch).
    pub filter: Option<&'a Filter>,
    /// With a quantized index: candidates kept per hit before exact rescoring (`None`: the
    /// quantization's default). Ignored by the exact scan, but a value outside
    /// `1..=`[`crate::quant::MAX_OVERSAMPLE`] is an error either way, so a query that runs
    /// without an index still runs once one is created.
    pub oversample: Option<usize>,
    /// Forces the exact f32 scan even when a quantized index or a graph exists.
    pub exact: bool,
    /// With an HNSW index: candidates kept during the traversal (`None`:
    /// [`crate::hnsw::DEFAULT_EF`]; raised to `k`). A value outside
    /// `1..=`[`crate::hnsw::MAX_EF`] is an error with an index or without.
    pub ef: Option<usize>,
}

impl<'a> Query<'a> {
    /// The `k` best matches for one query vector.
    pub fn one(query: &'a [f32], k: usize) -> Self {
        Query {
            queries: Queries::One(query),
            k,
            filter: None,
            oversample: None,
            exact: false,
            ef: None,
        }
    }

    /// The `k` best matches for each query of `queries` (back to back).
    pub fn batch(queries: &'a [f32], k: usize) -> Self {
        Query {
            queries: Queries::Batch(queries),
            k,
            filter: None,
            oversample: None,
            exact: false,
            ef: None,
        }
    }

    /// Restricts the candidates to records matching `filter`.
    pub fn filter(mut self, filter: &'a Filter) -> Self {
        self.filter = Some(filter);
        self
    }

    /// Keeps `oversample * k` candidates from the code scan for exact rescoring.
    pub fn oversample(mut self, oversample: usize) -> Self {
        self.oversample = Some(oversample);
        self
    }

    /// Forces (or not) the exact f32 scan.
    pub fn exact(mut self, exact: bool) -> Self {
        self.exact = exact;
        self
    }

    /// Keeps `ef` candidates during an HNSW traversal (more: higher recall, slower).
    pub fn ef(mut self, ef: usize) -> Self {
        self.ef = Some(ef);
        self
    }

    /// Takes all of a search's index options at once (`oversample`, `exact`, `ef`), as the
    /// bindings and the command line collect them.
    pub fn options(mut self, options: ScanOptions) -> Self {
        self.oversample = options.oversample;
        self.exact = options.exact;
        self.ef = options.ef;
        self
    }
}

/// An open database, wherever its engine runs. Every method can fail, because a sandboxed
/// engine answers through a runtime that can (its failures are [`crate::Error::Sandbox`]).
pub trait Store: Send + Sync {
    /// Inserts or replaces a batch (see [`Write`]).
    fn write(&self, request: &Write<'_>) -> Result<()>;
    /// Deletes records (see [`Delete`]); returns how many were deleted.
    fn remove(&self, request: &Delete<'_>) -> Result<usize>;
    /// Changes existing records in place (see [`Update`]).
    fn update(&self, request: &Update<'_>) -> Result<()>;
    /// Records matching a filter, in insertion order (see [`Select`]).
    fn records(&self, request: &Select<'_>) -> Result<Vec<Record>>;
    /// Live records matching `filter`.
    fn count_matching(&self, filter: &Filter) -> Result<u64>;
    /// Keeps a value -> rows index of metadata field `field` (a dotted path), committed with
    /// the rows, so filters on it touch only the matching rows. Creating an existing index is
    /// a no-op.
    fn create_field_index(&self, field: &str) -> Result<()>;
    /// Drops the index of `field`; returns false if there was none.
    fn drop_field_index(&self, field: &str) -> Result<bool>;
    /// The indexed fields, sorted.
    fn field_indexes(&self) -> Result<Vec<String>>;
    /// Builds the vector index `spec` (today: a flat scan over int8 or binary codes, rescored
    /// exactly) from the rows present, commits it, and keeps it in step with every later
    /// write, delete and compaction. The same spec again is a no-op; another replaces it.
    fn create_index(&self, spec: &IndexSpec) -> Result<IndexInfo>;
    /// Drops the vector index (searches go back to the exact scan); false if there was none.
    fn drop_index(&self) -> Result<bool>;
    /// What the vector index is and holds.
    fn index_info(&self) -> Result<IndexInfo>;
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

    /// The `k` best matches for `query` among the records `filter` matches, best first.
    fn search_filtered(&self, query: &[f32], k: usize, filter: &Filter) -> Result<Vec<SearchHit>> {
        Ok(self
            .query(&Query::one(query, k).filter(filter))?
            .into_iter()
            .next()
            .unwrap_or_default())
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
