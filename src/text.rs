//! Text in, text out: a [`Store`] paired with an [`Embed`], so a caller adds documents and
//! queries with text and never sees a vector. Written once for every engine and embedder: the
//! native [`Database`] with the built-in embedder, or the sandboxed database and embedder of
//! `srvdb-host`.
//!
//! The database records the embedder's name and dimension when it is created, and refuses
//! another embedder on reopen ([`Error::EmbedderMismatch`]). Each document is stored with its
//! row and comes back with the hits.

use crate::embed::Embed;
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::quant::index::ScanOptions;
use crate::store::{str_refs, Query, Store, Write, WriteMode};
use crate::types::{Metadata, OpenOptions};
use crate::Database;
use std::path::Path;
use std::sync::Arc;

/// Texts per embedding call in [`TextDatabase::embed_with_progress`] and the writes: the
/// progress callback runs after each. A sandboxed embedder pays a crossing into the guest per
/// call, so not too few; the embedders batch inside (32 texts per forward pass). Chunking
/// changes no vector: a text embeds the same whatever the batch around it.
pub const EMBED_CHUNK: usize = 256;

/// One query result: the id, its score (cosine similarity for the default metric) and the
/// stored document.
#[derive(Debug, Clone, PartialEq)]
pub struct TextHit {
    /// The record's id.
    pub id: String,
    /// Its score, per the database's metric.
    pub score: f32,
    /// The text it was added with (`None` for a record added as a bare vector).
    pub document: Option<String>,
}

/// A database that embeds its documents and queries itself. `S` is the engine: the native
/// [`Database`] by default, or `dyn Store` for any.
pub struct TextDatabase<S: Store + ?Sized = Database> {
    db: Box<S>,
    embedder: Arc<dyn Embed>,
}

impl<S: Store + ?Sized> std::fmt::Debug for TextDatabase<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextDatabase")
            .field("embedder", &self.embedder.spec())
            .finish_non_exhaustive()
    }
}

impl TextDatabase<Database> {
    /// Opens (or creates) the native database in `path` for `embedder`. A new database records
    /// the embedder's name and dimension; an existing one must have recorded the same.
    pub fn open(
        path: impl AsRef<Path>,
        embedder: Arc<dyn Embed>,
        options: OpenOptions,
    ) -> Result<Self> {
        let db = Database::open(path, options.with_embedder(embedder.spec()))?;
        Ok(TextDatabase {
            db: Box::new(db),
            embedder,
        })
    }

    /// Commits and closes, reporting any error.
    pub fn close(self) -> Result<()> {
        self.db.close()
    }
}

impl<S: Store + ?Sized> TextDatabase<S> {
    /// Wraps an open database, which must have recorded `embedder` (open it with
    /// `OpenOptions::with_embedder`).
    pub fn new(db: Box<S>, embedder: Arc<dyn Embed>) -> Result<Self> {
        let spec = embedder.spec();
        match db.embedder()? {
            Some(stored) if stored == spec => Ok(TextDatabase { db, embedder }),
            stored => Err(Error::EmbedderMismatch {
                stored: stored.map_or_else(
                    || "no recorded embedder (open it with the embedder to record one)".into(),
                    |s| s.to_string(),
                ),
                asked: spec.to_string(),
            }),
        }
    }

    /// The underlying database (vector search, get, delete, persist, compact, ...).
    pub fn database(&self) -> &S {
        &self.db
    }

    /// The database, unwrapped (to close it, for one).
    pub fn into_database(self) -> Box<S> {
        self.db
    }

    /// The embedder.
    pub fn embedder(&self) -> &Arc<dyn Embed> {
        &self.embedder
    }

    /// Embeds `documents` and adds them under `ids`, each stored with its text; `metadatas` is
    /// empty or one per id. Atomic, like [`Store::write`].
    pub fn add<I: AsRef<str>, D: AsRef<str>>(
        &self,
        ids: &[I],
        documents: &[D],
        metadatas: &[Option<Metadata>],
    ) -> Result<()> {
        self.write_with_progress(WriteMode::Add, ids, documents, metadatas, &mut |_| {})
    }

    /// Like [`TextDatabase::add`], replacing existing ids.
    pub fn upsert<I: AsRef<str>, D: AsRef<str>>(
        &self,
        ids: &[I],
        documents: &[D],
        metadatas: &[Option<Metadata>],
    ) -> Result<()> {
        self.write_with_progress(WriteMode::Upsert, ids, documents, metadatas, &mut |_| {})
    }

    /// [`TextDatabase::add`] or [`TextDatabase::upsert`] as `mode` says, calling
    /// `progress(done)` with the number of documents embedded so far after each
    /// [`EMBED_CHUNK`] (for a progress bar). Every document is embedded before anything is
    /// written, and the write is one atomic batch: a failure anywhere writes nothing.
    pub fn write_with_progress<I: AsRef<str>, D: AsRef<str>>(
        &self,
        mode: WriteMode,
        ids: &[I],
        documents: &[D],
        metadatas: &[Option<Metadata>],
        progress: &mut dyn FnMut(usize),
    ) -> Result<()> {
        // Checked before embedding, so a wrong batch costs no model time.
        if documents.len() != ids.len() {
            return Err(Error::invalid(format!(
                "{} documents for {} ids: pass one per id",
                documents.len(),
                ids.len()
            )));
        }
        let texts = str_refs(documents);
        let vectors = self.embed_with_progress(&texts, progress)?;
        let ids = str_refs(ids);
        let docs: Vec<Option<&str>> = texts.iter().copied().map(Some).collect();
        let write = Write::new(mode, &ids, &vectors)
            .metadatas(metadatas)
            .documents(&docs);
        self.db.write(&write)
    }

    /// The embedder's vectors for `texts`, back to back (what a write stores), embedded
    /// [`EMBED_CHUNK`] at a time with `progress(done)` after each chunk.
    pub fn embed_with_progress<T: AsRef<str>>(
        &self,
        texts: &[T],
        progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<f32>> {
        let texts = str_refs(texts);
        let mut vectors = Vec::new();
        let mut done = 0;
        for chunk in texts.chunks(EMBED_CHUNK) {
            vectors.extend(self.embedder.embed(chunk)?);
            done += chunk.len();
            progress(done);
        }
        Ok(vectors)
    }

    /// The `k` best records for each of `texts`, best first, with their documents: one list
    /// per text, also when the database is empty.
    pub fn query<T: AsRef<str>>(&self, texts: &[T], k: usize) -> Result<Vec<Vec<TextHit>>> {
        self.query_where(texts, k, None)
    }

    /// [`TextDatabase::query`] among the records `filter` matches (one filter for every text).
    pub fn query_where<T: AsRef<str>>(
        &self,
        texts: &[T],
        k: usize,
        filter: Option<&Filter>,
    ) -> Result<Vec<Vec<TextHit>>> {
        self.query_with(texts, k, filter, ScanOptions::default())
    }

    /// [`TextDatabase::query_where`] with the vector index's search options: `oversample`
    /// candidates per hit before exact rescoring, `ef` candidates during a graph traversal, or
    /// `exact` to force the f32 scan (see [`Query`]).
    pub fn query_with<T: AsRef<str>>(
        &self,
        texts: &[T],
        k: usize,
        filter: Option<&Filter>,
        options: ScanOptions,
    ) -> Result<Vec<Vec<TextHit>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let queries = self.embedder.embed(&str_refs(texts))?;
        let mut request = Query::batch(&queries, k).options(options);
        if let Some(filter) = filter {
            request = request.filter(filter);
        }
        let mut found = self.db.query(&request)?;
        // One list per text from any Store: an empty engine of unknown dimension answers none.
        found.resize_with(texts.len(), Vec::new);
        // One documents call for every list: a sandboxed store answers it in one guest call.
        let ids: Vec<&str> = found.iter().flatten().map(|h| h.id.as_str()).collect();
        let mut docs = self.db.documents(&ids)?.into_iter();
        Ok(found
            .into_iter()
            .map(|hits| {
                hits.into_iter()
                    .zip(docs.by_ref())
                    .map(|(h, document)| TextHit {
                        id: h.id,
                        score: h.score,
                        document,
                    })
                    .collect()
            })
            .collect())
    }
}
