//! Field indexes: for each indexed metadata field, value -> the rows holding it, kept in
//! memory beside the snapshot and in redb, committed in the same transaction as the rows.
//! Filters read them to touch only the matching rows of a selective `$eq` / `$in`.

use crate::filter::Scalar;

/// The indexed fields of one snapshot. Cheap to share (`Arc`) and copied on write.
#[derive(Debug, Clone, Default)]
pub(crate) struct FieldIndexes {}

impl FieldIndexes {
    /// The rows (sorted, ascending, tombstoned rows possibly included) whose field `field`
    /// equals `value`, or any element of it does for a list-valued field; `None` when `field`
    /// is not indexed. Numbers are keyed by value, so `1` and `1.0` are one key.
    #[allow(dead_code)] // read by the filter planner (issue 15, landing next)
    pub(crate) fn rows_equal(&self, field: &str, value: &Scalar) -> Option<&[u64]> {
        let _ = (field, value);
        None
    }

    /// The indexed fields, sorted.
    pub(crate) fn fields(&self) -> Vec<String> {
        Vec::new()
    }
}
