//! Searches through the sandbox: concurrent single queries on one handle are coalesced into
//! one guest batch call (the guest is single-threaded, so without this sixteen callers cost
//! sixteen full scans, one after the other).
//!
//! The coalescer is the native engine's ([`srvdb::coalesce::Coalescer`]), with one scan at a
//! time: a call that arrives while the guest is busy queues, and the queue is answered by the
//! next guest call. A lone call runs at once, as before. Queries share a guest call only with
//! queries of the same `k`, filter and options (then the call is the batch those queries make;
//! a batch answers each query as a single query does).

use super::{hits, saturating_u32, wit, SandboxedDatabase, Touches};
use srvdb::coalesce::Request;
use srvdb::store::{Queries, Query};
use srvdb::{Result, SearchHit};
use std::sync::Arc;

/// What a query asks besides its vector: queries share a guest call only when these are equal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Shape {
    k: usize,
    where_json: Option<String>,
    document_json: Option<String>,
    oversample: Option<usize>,
    exact: bool,
    ef: Option<usize>,
}

impl Shape {
    fn of(request: &Query<'_>) -> Self {
        Shape {
            k: request.k,
            where_json: request
                .filter
                .and_then(|f| f.where_json().map(str::to_owned)),
            document_json: request
                .filter
                .and_then(|f| f.document_json().map(str::to_owned)),
            oversample: request.oversample,
            exact: request.exact,
            ef: request.ef,
        }
    }

    /// Whether the query carries a filter.
    pub(crate) fn filtered(&self) -> bool {
        self.where_json.is_some() || self.document_json.is_some()
    }

    /// The request as it crosses into the guest.
    pub(crate) fn request<'a>(&'a self, queries: &'a [f32], batch: bool) -> wit::QueryRequest<'a> {
        wit::QueryRequest {
            queries,
            batch,
            k: saturating_u32(self.k),
            filter: self.filtered().then_some(wit::Filter {
                where_: self.where_json.as_deref(),
                where_document: self.document_json.as_deref(),
            }),
            oversample: self.oversample.map(saturating_u32),
            exact: self.exact,
            ef: self.ef.map(saturating_u32),
        }
    }
}

/// One queued single query.
pub(crate) struct Single {
    vector: Vec<f32>,
    shape: Shape,
}

impl SandboxedDatabase {
    /// `Store::query` through the sandbox: a single query coalesced with the others arriving
    /// meanwhile (unless [`srvdb::OpenOptions::coalesce_searches`] is off), a batch as one call.
    pub(crate) fn search(&self, request: &Query<'_>) -> Result<Vec<Vec<SearchHit>>> {
        let shape = Shape::of(request);
        match request.queries {
            Queries::Batch(queries) => self.query_batch(&shape, queries),
            Queries::One(query) if !self.options.coalesce_searches => {
                self.query_single(&shape, query).map(|hits| vec![hits])
            }
            Queries::One(query) => {
                let single = Single {
                    vector: query.to_vec(),
                    shape,
                };
                // One guest call at a time: the guest is single-threaded.
                let hits = self
                    .coalescer
                    .search(single, 1, |group| self.answer_group(group))?;
                Ok(vec![hits])
            }
        }
    }

    /// One single query, as its own guest call.
    fn query_single(&self, shape: &Shape, query: &[f32]) -> Result<Vec<SearchHit>> {
        let request = shape.request(query, false);
        let found = self.call(Touches::Nothing, |g, s, h| g.call_query(s, h, request))?;
        Ok(found.into_iter().next().map(hits).unwrap_or_default())
    }

    /// A batch of queries of one shape, as one guest call.
    pub(crate) fn query_batch(
        &self,
        shape: &Shape,
        queries: &[f32],
    ) -> Result<Vec<Vec<SearchHit>>> {
        let request = shape.request(queries, true);
        let found = self.call(Touches::Nothing, |g, s, h| g.call_query(s, h, request))?;
        Ok(found.into_iter().map(hits).collect())
    }

    /// The answers of a coalesced group, one per request in order: a guest batch call per
    /// shape. If a batch fails (a query of the wrong dimension, say), each of its queries is
    /// asked alone, so each gets its own answer or error.
    fn answer_group(&self, group: &[Arc<Request<Single>>]) -> Vec<Result<Vec<SearchHit>>> {
        let mut answers: Vec<Option<Result<Vec<SearchHit>>>> = group.iter().map(|_| None).collect();
        let mut done = vec![false; group.len()];
        for first in 0..group.len() {
            if done[first] {
                continue;
            }
            let shape = &group[first].query.shape;
            let members: Vec<usize> = (first..group.len())
                .filter(|&i| !done[i] && group[i].query.shape == *shape)
                .collect();
            for &i in &members {
                done[i] = true;
            }
            if members.len() > 1 {
                let mut queries =
                    Vec::with_capacity(members.len() * group[first].query.vector.len());
                for &i in &members {
                    queries.extend_from_slice(&group[i].query.vector);
                }
                if let Ok(lists) = self.query_batch(shape, &queries) {
                    if lists.len() == members.len() {
                        for (&i, hits) in members.iter().zip(lists) {
                            answers[i] = Some(Ok(hits));
                        }
                        continue;
                    }
                }
            }
            for &i in &members {
                let r = &group[i].query;
                answers[i] = Some(self.query_single(&r.shape, &r.vector));
            }
        }
        answers
            .into_iter()
            .map(|a| {
                a.unwrap_or_else(|| {
                    Err(srvdb::Error::Poisoned {
                        reason: "a coalesced sandboxed search lost a query's answer".into(),
                    })
                })
            })
            .collect()
    }
}
