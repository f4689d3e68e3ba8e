//! Text in, text out (cargo feature `text`): a [`Database`] paired with an [`Embedder`], so a
//! caller adds documents and queries with text and never sees a vector.
//!
//! The database records the embedder's name and dimension when it is created, and refuses
//! another embedder on reopen ([`Error::EmbedderMismatch`]). Each document is stored with its
//! row in `metadata.db` and comes back with the hits.

use crate::embed::Embedder;
use crate::error::{Error, Result};
use crate::store::{str_refs, Store, Write};
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

/// A database that embeds its documents and queries itself.
#[derive(Debug)]
pub struct TextDatabase {
    db: Database,
    embedder: Arc<Embedder>,
}

impl TextDatabase {
    /// Opens (or creates) the database in `path` for `embedder`. A new database records the
    /// embedder's name and dimension; an existing one must have recorded the same.
    pub fn open(
        path: impl AsRef<Path>,
        embedder: Arc<Embedder>,
        options: OpenOptions,
    ) -> Result<Self> {
        let db = Database::open(path, options.with_embedder(embedder.spec()))?;
        Ok(TextDatabase { db, embedder })
    }

    /// Wraps an open database, which must have recorded `embedder`.
    pub fn new(db: Database, embedder: Arc<Embedder>) -> Result<Self> {
        let spec = embedder.spec();
        match db.embedder() {
            Some(stored) if *stored == spec => Ok(TextDatabase { db, embedder }),
            stored => Err(Error::EmbedderMismatch {
                stored: stored.map_or_else(
                    || "no recorded embedder (open it with the embedder to record one)".into(),
                    ToString::to_string,
                ),
                asked: spec.to_string(),
            }),
        }
    }

    /// The underlying database (vector search, get, delete, persist, compact, ...).
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The embedder.
    pub fn embedder(&self) -> &Arc<Embedder> {
        &self.embedder
    }

    /// Embeds `documents` and adds them under `ids`, each stored with its text; `metadatas` is
    /// empty or one per id. Atomic, like [`Database::add`].
    pub fn add<S: AsRef<str>, D: AsRef<str>>(
        &self,
        ids: &[S],
        documents: &[D],
        metadatas: &[Option<Metadata>],
    ) -> Result<()> {
        let (vectors, docs) = self.prepare(ids.len(), documents)?;
        let ids = str_refs(ids);
        let write = Write::add(&ids, &vectors).metadatas(metadatas);
        self.db.write(&write.documents(&docs))
    }

    /// Like [`TextDatabase::add`], replacing existing ids.
    pub fn upsert<S: AsRef<str>, D: AsRef<str>>(
        &self,
        ids: &[S],
        documents: &[D],
        metadatas: &[Option<Metadata>],
    ) -> Result<()> {
        let (vectors, docs) = self.prepare(ids.len(), documents)?;
        let ids = str_refs(ids);
        let write = Write::upsert(&ids, &vectors).metadatas(metadatas);
        self.db.write(&write.documents(&docs))
    }

    fn prepare<'d, D: AsRef<str>>(
        &self,
        n: usize,
        documents: &'d [D],
    ) -> Result<(Vec<f32>, Vec<Option<&'d str>>)> {
        if documents.len() != n {
            return Err(Error::invalid(format!(
                "{} documents for {n} ids: pass one per id",
                documents.len()
            )));
        }
        let vectors = self.embedder.embed(documents)?;
        let docs = documents.iter().map(|d| Some(d.as_ref())).collect();
        Ok((vectors, docs))
    }

    /// The `k` best records for each of `texts`, best first, with their documents.
    pub fn query<S: AsRef<str>>(&self, texts: &[S], k: usize) -> Result<Vec<Vec<TextHit>>> {
        let queries = self.embedder.embed(texts)?;
        let found = self.db.search_batch(&queries, k)?;
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

    /// Commits and closes, reporting any error.
    pub fn close(self) -> Result<()> {
        self.db.close()
    }
}
