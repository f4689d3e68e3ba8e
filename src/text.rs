//! Text in, text out: a [`Store`] paired with an [`Embed`], so a caller adds documents and
//! queries with text and never sees a vector. Written once for every engine and embedder: the
//! native [`Database`] with candle's embedder, or the sandboxed database and embedder of
//! `srvdb-host`.
//!
//! The database records the embedder's name and dimension when it is created, and refuses
//! another embedder on reopen ([`Error::EmbedderMismatch`]). Each document is stored with its
//! row and comes back with the hits.

use crate::embed::Embed;
use crate::error::{Error, Result};
use crate::store::{str_refs, Query, Store, Write};
use crate::types::{Metadata, OpenOptions};
use crate::Database;
use std::path::Path;
use std::sync::Arc;

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
        self.write(false, ids, documents, metadatas)
    }

    /// Like [`TextDatabase::add`], replacing existing ids.
    pub fn upsert<I: AsRef<str>, D: AsRef<str>>(
        &self,
        ids: &[I],
        documents: &[D],
        metadatas: &[Option<Metadata>],
    ) -> Result<()> {
        self.write(true, ids, documents, metadatas)
    }

    fn write<I: AsRef<str>, D: AsRef<str>>(
        &self,
        upsert: bool,
        ids: &[I],
        documents: &[D],
        metadatas: &[Option<Metadata>],
    ) -> Result<()> {
        if documents.len() != ids.len() {
            return Err(Error::invalid(format!(
                "{} documents for {} ids: pass one per id",
                documents.len(),
                ids.len()
            )));
        }
        let texts = str_refs(documents);
        let vectors = self.embedder.embed(&texts)?;
        let ids = str_refs(ids);
        let docs: Vec<Option<&str>> = texts.iter().copied().map(Some).collect();
        let write = if upsert {
            Write::upsert(&ids, &vectors)
        } else {
            Write::add(&ids, &vectors)
        };
        self.db.write(&write.metadatas(metadatas).documents(&docs))
    }

    /// The `k` best records for each of `texts`, best first, with their documents.
    pub fn query<T: AsRef<str>>(&self, texts: &[T], k: usize) -> Result<Vec<Vec<TextHit>>> {
        let queries = self.embedder.embed(&str_refs(texts))?;
        let found = self.db.query(&Query::batch(&queries, k))?;
        found
            .into_iter()
            .map(|hits| self.with_documents(hits))
            .collect()
    }

    fn with_documents(&self, hits: Vec<crate::SearchHit>) -> Result<Vec<TextHit>> {
        let ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
        let docs = self.db.documents(&ids)?;
        Ok(hits
            .into_iter()
            .zip(docs)
            .map(|(h, document)| TextHit {
                id: h.id,
                score: h.score,
                document,
            })
            .collect())
    }
}
