//! Field indexes: for each indexed metadata field, value -> the rows holding it, kept in
//! memory beside the snapshot and in redb (`crate::meta`'s field-index tables), committed in
//! the same transaction as the rows. Filters read them to touch only the matching rows of a
//! selective `$eq` / `$in`.
//!
//! Copy-on-write: a snapshot shares its indexes by `Arc`, and a write copies only the map of
//! the fields it touches (value -> `Arc` of rows) and the row lists of the values it changes.

use crate::filter::Scalar;
use crate::meta::{keys_at, metadata_object, IndexKey, IndexValues, LoadedIndex};
use crate::types::Metadata;
use std::collections::HashMap;
use std::sync::Arc;

/// One field's index: value -> rows (sorted, ascending).
type Values = HashMap<IndexKey, Arc<Vec<u64>>>;

/// The indexed fields of one snapshot. Cheap to share (`Arc`) and copied on write.
#[derive(Debug, Clone, Default)]
pub(crate) struct FieldIndexes {
    fields: HashMap<String, Arc<Values>>,
}

impl FieldIndexes {
    /// The indexes as loaded from redb.
    pub(super) fn from_loaded(loaded: Vec<LoadedIndex>) -> Self {
        let mut out = FieldIndexes::default();
        for (field, values) in loaded {
            out.add_field(field, values);
        }
        out
    }

    /// The rows (sorted, ascending, tombstoned rows possibly included) whose field `field`
    /// equals `value`, or any element of it does for a list-valued field; `None` when `field`
    /// is not indexed. Numbers are keyed by value, so `1` and `1.0` are one key.
    pub(crate) fn rows_equal(&self, field: &str, value: &Scalar) -> Option<&[u64]> {
        let values = self.fields.get(field)?;
        let key = match value {
            Scalar::Bool(b) => Some(IndexKey::Bool(*b)),
            Scalar::Number(x) => IndexKey::number(*x),
            Scalar::String(s) => Some(IndexKey::String(s.as_str().into())),
        };
        Some(
            key.and_then(|key| values.get(&key))
                .map_or(&[][..], |rows| rows.as_slice()),
        )
    }

    /// The indexed fields, sorted.
    pub(crate) fn fields(&self) -> Vec<String> {
        let mut out: Vec<String> = self.fields.keys().cloned().collect();
        out.sort_unstable();
        out
    }

    /// True when `field` is indexed.
    pub(super) fn contains(&self, field: &str) -> bool {
        self.fields.contains_key(field)
    }

    /// True when no field is indexed (writes then skip the index work).
    pub(super) fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Adds `field`'s index, built as value -> sorted rows.
    pub(super) fn add_field(&mut self, field: String, values: IndexValues) {
        let values = values
            .into_iter()
            .map(|(key, rows)| (key, Arc::new(rows)))
            .collect();
        self.fields.insert(field, Arc::new(values));
    }

    /// Removes `field`'s index.
    pub(super) fn remove_field(&mut self, field: &str) {
        self.fields.remove(field);
    }

    /// Indexes `row` under the values of `metadata`.
    pub(super) fn add_row(&mut self, row: u64, metadata: Option<&Metadata>) {
        self.change_row(row, metadata, true);
    }

    /// Removes `row` from the values of `metadata` (its metadata before a change).
    pub(super) fn remove_row(&mut self, row: u64, metadata: Option<&Metadata>) {
        self.change_row(row, metadata, false);
    }

    fn change_row(&mut self, row: u64, metadata: Option<&Metadata>, add: bool) {
        if self.fields.is_empty() {
            return;
        }
        let object = metadata_object(metadata);
        if object.is_none() {
            return;
        }
        for (field, values) in &mut self.fields {
            let keys = keys_at(object.as_ref(), field);
            if keys.is_empty() {
                continue;
            }
            let values = Arc::make_mut(values);
            for key in keys {
                if add {
                    let rows = Arc::make_mut(values.entry(key).or_default());
                    // Appended rows come last; an updated row goes to its place.
                    match rows.last() {
                        Some(&last) if last >= row => {
                            if let Err(at) = rows.binary_search(&row) {
                                rows.insert(at, row);
                            }
                        }
                        _ => rows.push(row),
                    }
                } else if let Some(rows) = values.get_mut(&key) {
                    if let Ok(at) = rows.binary_search(&row) {
                        if rows.len() == 1 {
                            values.remove(&key);
                        } else {
                            Arc::make_mut(rows).remove(at);
                        }
                    }
                }
            }
        }
    }
}

/// One indexed value as the tests read it: the value, and for each row listed under it (in
/// the listed order) the row, its id and whether it is live.
#[cfg(feature = "testing")]
pub type IndexedValue = (IndexKey, Vec<(u64, String, bool)>);

#[cfg(feature = "testing")]
impl super::Database {
    /// For tests (feature `testing`): the current snapshot's index of `field`, every value with
    /// its rows; `None` when `field` is not indexed. Sorted by value.
    pub fn field_index_contents(&self, field: &str) -> Option<Vec<IndexedValue>> {
        let snap = self.published.load_full();
        let values = snap.field_indexes.fields.get(field)?;
        let mut out: Vec<IndexedValue> = values
            .iter()
            .map(|(key, rows)| {
                let rows = rows
                    .iter()
                    .map(|&row| {
                        let id = snap
                            .row_ids
                            .get(row as usize)
                            .map(|id| id.to_string())
                            .unwrap_or_default();
                        (row, id, !snap.tombstones.contains(row))
                    })
                    .collect();
                (key.clone(), rows)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Some(out)
    }

    /// For tests (feature `testing`): what the filter planner reads, `rows_equal(field, value)`
    /// of the current snapshot.
    pub fn field_index_rows(&self, field: &str, value: &Scalar) -> Option<Vec<u64>> {
        let snap = self.published.load_full();
        snap.field_indexes
            .rows_equal(field, value)
            .map(<[u64]>::to_vec)
    }
}
