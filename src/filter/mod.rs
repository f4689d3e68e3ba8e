//! Filters: Chroma's `where` / `where_document` dialect over the JSON metadata and the stored
//! documents, parsed once per query into a tree and evaluated as a row bitmap the scan reads
//! together with the tombstones, so a filtered search is exact at every selectivity.
//!
//! Filters cross every boundary (WIT, Python) as JSON text, because WIT has no recursive types:
//! [`Filter::parse`] is the one parser, with the same limits everywhere.
//!
//! The dialect (Chroma's):
//! - `where` is an object; `{}` matches everything. `$and` / `$or` take a non-empty list of
//!   `where` objects, `$not` one. Other keys are fields (dotted paths: `"a.b"` is
//!   `metadata["a"]["b"]`, but an exact top-level key `"a.b"` wins); several keys are an
//!   implicit `$and`. A field takes a scalar (`$eq`) or an object of operators
//!   (`$eq $ne $gt $gte $lt $lte` with a scalar, `$in $nin` with a list of scalars; several
//!   are an implicit `$and`). Orderings take a number or a string.
//! - Numbers compare numerically (`1 == 1.0`), strings only with strings (by bytes), booleans
//!   only with booleans. A type mismatch fails `$eq $gt $gte $lt $lte $in` and passes `$ne`
//!   and `$nin`, and so does a missing field (or JSON null). **A list-valued field matches
//!   `$eq`, `$in` and the orderings if any element does, and `$ne` / `$nin` if no element
//!   equals.** An object-valued field equals no scalar.
//! - Metadata that is not a JSON object (plain text, an array, a scalar) matches no field
//!   predicate, not even `$ne`; a record without metadata is an empty object.
//! - `where_document`: exactly one of `$contains` / `$not_contains` (a string; exact,
//!   case-sensitive substring) or `$and` / `$or` (a non-empty list). A record without a
//!   document fails `$contains` and passes `$not_contains`.
//! - Limits: 64 KiB of text per part, 32 levels of nesting; a violation, an unknown operator or
//!   a wrong operand is [`crate::Error::InvalidFilter`] naming the place
//!   (`where.$and[1].year.$gt`).
//!
//! Evaluation: [`Filter::matches`] for one record; searches compile the filter into loops
//! over typed column caches (`columns`) producing a row bitmap (`bitmap`) that the scan reads
//! together with the tombstones, or a field index for `$eq` / `$in` on an indexed field.

pub(crate) mod bitmap;
pub(crate) mod columns;
mod eval;
mod parse;

use crate::error::Result;
use crate::types::Metadata;

/// Largest filter text accepted (`where` and `where_document` each).
pub const MAX_FILTER_BYTES: usize = 64 << 10;
/// Deepest nesting of `$and` / `$or` / `$not` (and objects) accepted.
pub const MAX_FILTER_DEPTH: usize = 32;

/// A value a field is compared with. Numbers compare numerically whether written as integers
/// or floats; strings compare only with strings; booleans are not numbers.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// `true` / `false`.
    Bool(bool),
    /// Any JSON number (compared as `f64`).
    Number(f64),
    /// A string.
    String(String),
}

/// A comparison of one field.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldOp {
    /// `$eq` (or a bare value).
    Eq(Scalar),
    /// `$ne`: also matches a missing field.
    Ne(Scalar),
    /// `$gt`.
    Gt(Scalar),
    /// `$gte`.
    Gte(Scalar),
    /// `$lt`.
    Lt(Scalar),
    /// `$lte`.
    Lte(Scalar),
    /// `$in`.
    In(Vec<Scalar>),
    /// `$nin`: also matches a missing field.
    Nin(Vec<Scalar>),
}

/// A parsed `where` tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Where {
    /// One field's comparison; `path` is the dotted path split at the dots.
    Field {
        /// The dotted path as written (`"a.b"`), for messages and index lookups.
        name: String,
        /// `name` split at the dots.
        path: Vec<String>,
        /// The comparison.
        op: FieldOp,
    },
    /// All must match (`$and`, or several keys at one level).
    And(Vec<Where>),
    /// Any must match.
    Or(Vec<Where>),
    /// Must not match.
    Not(Box<Where>),
}

/// A parsed `where_document` tree.
#[derive(Debug, Clone, PartialEq)]
pub enum WhereDocument {
    /// The document contains the text.
    Contains(String),
    /// The document does not contain the text (a record without a document matches).
    NotContains(String),
    /// All must match.
    And(Vec<WhereDocument>),
    /// Any must match.
    Or(Vec<WhereDocument>),
}

/// A filter on records: a `where` on the metadata, a `where_document` on the document, or both
/// (a record must match both). Keeps the JSON it was parsed from, which is how it crosses the
/// sandbox and Python boundaries.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    where_json: Option<String>,
    document_json: Option<String>,
    /// The parsed `where`, if any. Private (read through [`Filter::where_tree`]): the JSON
    /// text is what crosses the sandbox, so the tree must stay the one parsed from it.
    where_: Option<Where>,
    /// The parsed `where_document`, if any (see `where_`).
    document: Option<WhereDocument>,
}

impl Filter {
    /// The parsed `where` tree, if any.
    pub fn where_tree(&self) -> Option<&Where> {
        self.where_.as_ref()
    }

    /// The parsed `where_document` tree, if any.
    pub fn document_tree(&self) -> Option<&WhereDocument> {
        self.document.as_ref()
    }

    /// Parses Chroma-dialect JSON: `where_json` over the metadata, `document_json` over the
    /// documents. Malformed input is [`Error::InvalidFilter`] naming the offending part.
    pub fn parse(where_json: Option<&str>, document_json: Option<&str>) -> Result<Filter> {
        let where_ = match where_json {
            Some(text) => Some(parse::where_(&parse::json("where", text)?, "where", 1)?),
            None => None,
        };
        let document = match document_json {
            Some(text) => Some(parse::document(
                &parse::json("where_document", text)?,
                "where_document",
                1,
            )?),
            None => None,
        };
        Ok(Filter {
            where_json: where_json.map(str::to_owned),
            document_json: document_json.map(str::to_owned),
            where_,
            document,
        })
    }

    /// True when a record with this metadata and document matches: the dialect's semantics
    /// for one record, parsing the metadata on each call (searches use column caches instead).
    pub fn matches(&self, metadata: Option<&Metadata>, document: Option<&str>) -> bool {
        if let Some(w) = &self.where_ {
            let parsed = match metadata {
                Some(Metadata::Json(text)) => serde_json::from_str(text).ok(),
                _ => None,
            };
            let object = match (metadata, &parsed) {
                // A record without metadata is an empty object.
                (None, _) => Some(serde_json::Map::new()),
                (Some(_), Some(serde_json::Value::Object(m))) => Some(m.clone()),
                _ => None,
            };
            if !eval::where_matches(w, object.as_ref()) {
                return false;
            }
        }
        match &self.document {
            Some(d) => eval::document_matches(d, document),
            None => true,
        }
    }

    /// The `where` JSON as given.
    pub fn where_json(&self) -> Option<&str> {
        self.where_json.as_deref()
    }

    /// The `where_document` JSON as given.
    pub fn document_json(&self) -> Option<&str> {
        self.document_json.as_deref()
    }

    /// True when the filter matches every record (neither part given).
    pub fn is_empty(&self) -> bool {
        self.where_.is_none() && self.document.is_none()
    }
}

#[cfg(test)]
mod tests;
