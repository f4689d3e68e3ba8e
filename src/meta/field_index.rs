//! Field indexes as redb stores them: table `field_indexes` names the indexed metadata fields,
//! and each field has a multimap table `field_index/<field>` from an encoded value
//! ([`IndexKey`]) to the rows holding it. They are written in the same transaction as the rows
//! whose metadata they index (commit, compaction), so a crash never leaves an index that
//! disagrees with the rows.
//!
//! What is indexed (the filter dialect's `$eq` / `$in`): the scalar at the field's dotted path
//! (a string, a number keyed by its value so `1` and `1.0` are one key, a boolean) and each
//! scalar element of a list there. Objects, null, a missing field and metadata that is not a
//! JSON object index nothing.

use super::{open_or_none, CompactedRow};
use crate::types::Metadata;
use redb::{
    MultimapTableDefinition, ReadableDatabase, ReadableMultimapTable, ReadableTable,
    TableDefinition,
};
use serde_json::{Map, Value};

/// The indexed fields (field -> nothing).
pub(super) const FIELDS: TableDefinition<&str, ()> = TableDefinition::new("field_indexes");

/// Prefix of each field's value -> rows table.
const TABLE_PREFIX: &str = "field_index/";

/// One field's index: each value with the rows holding it (sorted, ascending).
pub type IndexValues = Vec<(IndexKey, Vec<u64>)>;

/// The redb table name of `field`'s index.
fn table_name(field: &str) -> String {
    format!("{TABLE_PREFIX}{field}")
}

fn table(name: &str) -> MultimapTableDefinition<'_, &'static [u8], u64> {
    MultimapTableDefinition::new(name)
}

/// One indexed value. Numbers are keyed by their `f64` bits with `-0.0` folded into `0.0`, so
/// the keys of equal numbers are equal whether they were written as integers or floats.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IndexKey {
    /// A boolean.
    Bool(bool),
    /// A number, as the bits of its `f64` value (never NaN, never `-0.0`).
    Number(u64),
    /// A string.
    String(Box<str>),
}

impl IndexKey {
    /// The key of number `x`; `None` for NaN, which equals nothing.
    pub fn number(x: f64) -> Option<Self> {
        if x.is_nan() {
            return None;
        }
        let x = if x == 0.0 { 0.0 } else { x };
        Some(IndexKey::Number(x.to_bits()))
    }

    /// The key of a JSON scalar; `None` for null, lists and objects.
    fn of_json(value: &Value) -> Option<Self> {
        match value {
            Value::Bool(b) => Some(IndexKey::Bool(*b)),
            Value::Number(n) => n.as_f64().and_then(IndexKey::number),
            Value::String(s) => Some(IndexKey::String(s.as_str().into())),
            Value::Null | Value::Array(_) | Value::Object(_) => None,
        }
    }

    /// The bytes stored in redb: a type tag, then the value.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            IndexKey::Bool(b) => vec![b'b', u8::from(*b)],
            IndexKey::Number(bits) => {
                let mut out = Vec::with_capacity(9);
                out.push(b'n');
                out.extend_from_slice(&bits.to_be_bytes());
                out
            }
            IndexKey::String(s) => {
                let mut out = Vec::with_capacity(s.len() + 1);
                out.push(b's');
                out.extend_from_slice(s.as_bytes());
                out
            }
        }
    }

    /// The key `encode` wrote; `None` for bytes it never writes.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (tag, rest) = bytes.split_first()?;
        match tag {
            b'b' => match rest {
                [0] => Some(IndexKey::Bool(false)),
                [1] => Some(IndexKey::Bool(true)),
                _ => None,
            },
            b'n' => {
                let bits = u64::from_be_bytes(rest.try_into().ok()?);
                let key = IndexKey::number(f64::from_bits(bits))?;
                // Only the canonical form: a stored `-0.0` or NaN is not one this code wrote.
                (key == IndexKey::Number(bits)).then_some(key)
            }
            b's' => Some(IndexKey::String(std::str::from_utf8(rest).ok()?.into())),
            _ => None,
        }
    }
}

/// The JSON object of `metadata`, or `None` when there is none or it is not an object (plain
/// text, a JSON list or scalar): such metadata indexes nothing.
pub fn metadata_object(metadata: Option<&Metadata>) -> Option<Map<String, Value>> {
    match metadata? {
        Metadata::Json(text) => match serde_json::from_str(text) {
            Ok(Value::Object(map)) => Some(map),
            _ => None,
        },
        Metadata::Text(_) => None,
    }
}

/// The value at dotted path `field`: an exact top-level key wins, otherwise the path is followed
/// through nested objects (through anything else it is missing).
fn value_at<'m>(object: &'m Map<String, Value>, field: &str) -> Option<&'m Value> {
    if let Some(value) = object.get(field) {
        return Some(value);
    }
    let mut parts = field.split('.');
    let mut value = object.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

/// The keys under which a row with metadata `object` is indexed for `field`: sorted, without
/// repeats (a list holding `1` and `1.0` is one key).
pub fn keys_at(object: Option<&Map<String, Value>>, field: &str) -> Vec<IndexKey> {
    let Some(value) = object.and_then(|o| value_at(o, field)) else {
        return Vec::new();
    };
    let mut keys: Vec<IndexKey> = match value {
        Value::Array(items) => items.iter().filter_map(IndexKey::of_json).collect(),
        scalar => IndexKey::of_json(scalar).into_iter().collect(),
    };
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// The indexed fields as `txn` sees them, sorted.
pub(super) fn fields_in(txn: &redb::WriteTransaction) -> Result<Vec<String>, redb::Error> {
    let fields = txn.open_table(FIELDS)?;
    let mut out = Vec::new();
    for entry in fields.iter()? {
        out.push(entry?.0.value().to_owned());
    }
    Ok(out)
}

/// The open index tables of one write transaction, for keeping them in step with the rows it
/// writes. Holds nothing when no field is indexed, so commits without indexes pay nothing.
pub(super) struct IndexWriter<'t> {
    tables: Vec<(String, redb::MultimapTable<'t, &'static [u8], u64>)>,
}

impl<'t> IndexWriter<'t> {
    /// Opens every index table of `txn`.
    pub(super) fn open(txn: &'t redb::WriteTransaction) -> Result<Self, redb::Error> {
        let mut tables = Vec::new();
        for field in fields_in(txn)? {
            let name = table_name(&field);
            let t = txn.open_multimap_table(table(&name))?;
            tables.push((field, t));
        }
        Ok(IndexWriter { tables })
    }

    /// True when no field is indexed.
    pub(super) fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// Indexes `row` under the values of `metadata`.
    pub(super) fn add(&mut self, row: u64, metadata: Option<&Metadata>) -> Result<(), redb::Error> {
        self.change(row, metadata, true)
    }

    /// Removes `row` from the values of `metadata` (its metadata before the change).
    pub(super) fn remove(
        &mut self,
        row: u64,
        metadata: Option<&Metadata>,
    ) -> Result<(), redb::Error> {
        self.change(row, metadata, false)
    }

    fn change(
        &mut self,
        row: u64,
        metadata: Option<&Metadata>,
        add: bool,
    ) -> Result<(), redb::Error> {
        if self.tables.is_empty() {
            return Ok(());
        }
        let object = metadata_object(metadata);
        for (field, t) in &mut self.tables {
            for key in keys_at(object.as_ref(), field) {
                let key = key.encode();
                if add {
                    t.insert(key.as_slice(), row)?;
                } else {
                    t.remove(key.as_slice(), row)?;
                }
            }
        }
        Ok(())
    }
}

/// Records `field` as indexed in `txn` and indexes every row of `rows` (row, metadata);
/// returns the index built, value -> sorted rows. Nothing is done, and `None` returned, if
/// the field is indexed already.
pub(super) fn create<'m>(
    txn: &redb::WriteTransaction,
    field: &str,
    rows: impl Iterator<Item = (u64, &'m Metadata)>,
) -> Result<Option<IndexValues>, redb::Error> {
    let mut fields = txn.open_table(FIELDS)?;
    if fields.get(field)?.is_some() {
        return Ok(None);
    }
    fields.insert(field, ())?;
    let name = table_name(field);
    // A leftover table of an earlier index of this field is never reused.
    txn.delete_multimap_table(table(&name))?;
    let mut t = txn.open_multimap_table(table(&name))?;
    let mut built: std::collections::BTreeMap<IndexKey, Vec<u64>> = Default::default();
    for (row, metadata) in rows {
        let object = metadata_object(Some(metadata));
        for key in keys_at(object.as_ref(), field) {
            t.insert(key.encode().as_slice(), row)?;
            built.entry(key).or_default().push(row);
        }
    }
    let mut out: IndexValues = built.into_iter().collect();
    for (_, rows) in &mut out {
        rows.sort_unstable();
    }
    Ok(Some(out))
}

/// Forgets `field`'s index in `txn`; false if it was not indexed.
pub(super) fn drop(txn: &redb::WriteTransaction, field: &str) -> Result<bool, redb::Error> {
    let mut fields = txn.open_table(FIELDS)?;
    let existed = fields.remove(field)?.is_some();
    txn.delete_multimap_table(table(&table_name(field)))?;
    Ok(existed)
}

/// Rewrites every index of `txn` for the compacted rows `rows` (new row = position).
pub(super) fn rebuild_compacted(
    txn: &redb::WriteTransaction,
    rows: &[CompactedRow],
) -> Result<(), redb::Error> {
    let fields = fields_in(txn)?;
    if fields.is_empty() {
        return Ok(());
    }
    for field in &fields {
        txn.delete_multimap_table(table(&table_name(field)))?;
    }
    let mut writer = IndexWriter::open(txn)?;
    for (row, survivor) in rows.iter().enumerate() {
        writer.add(row as u64, survivor.metadata.as_ref())?;
    }
    Ok(())
}

/// One field's index as loaded: the field, and its values with their rows (sorted).
pub type LoadedIndex = (String, IndexValues);

/// Reads every index; a value that is not an encoded key, or a row at or past
/// `committed_rows`, is damage, reported as the message of an error.
pub(super) fn load(
    db: &impl ReadableDatabase,
    committed_rows: u64,
) -> Result<Result<Vec<LoadedIndex>, String>, redb::Error> {
    let txn = db.begin_read()?;
    let Some(fields) = open_or_none(&txn, FIELDS)? else {
        return Ok(Ok(Vec::new()));
    };
    let mut out = Vec::new();
    for entry in fields.iter()? {
        let field = entry?.0.value().to_owned();
        let name = table_name(&field);
        let t = match txn.open_multimap_table(table(&name)) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => {
                out.push((field, Vec::new()));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let mut values = Vec::new();
        for entry in t.iter()? {
            let (key, rows_of) = entry?;
            let Some(decoded) = IndexKey::decode(key.value()) else {
                return Ok(Err(format!("{name}: a key that is no encoded value")));
            };
            let mut rows = Vec::new();
            for row in rows_of {
                let row = row?.value();
                if row >= committed_rows {
                    return Ok(Err(format!(
                        "{name}: row {row} beyond the {committed_rows} committed rows"
                    )));
                }
                rows.push(row);
            }
            rows.sort_unstable();
            values.push((decoded, rows));
        }
        out.push((field, values));
    }
    Ok(Ok(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_only_canonical_bytes_decode() {
        let keys = [
            IndexKey::Bool(false),
            IndexKey::Bool(true),
            IndexKey::String("".into()),
            IndexKey::String("héllo".into()),
        ];
        for key in keys {
            assert_eq!(IndexKey::decode(&key.encode()), Some(key));
        }
        for x in [0.0, 1.0, -1.5, 1e300, f64::MIN_POSITIVE] {
            let key = IndexKey::number(x).expect("a number");
            assert_eq!(IndexKey::decode(&key.encode()), Some(key));
        }
        assert_eq!(IndexKey::number(-0.0), IndexKey::number(0.0));
        assert_eq!(IndexKey::number(f64::NAN), None);
        let raw = |x: f64| [&[b'n'][..], &x.to_bits().to_be_bytes()].concat();
        assert_eq!(IndexKey::decode(&raw(-0.0)), None, "-0.0 is never written");
        assert_eq!(IndexKey::decode(&raw(f64::NAN)), None);
        for bad in [&b""[..], b"b", b"b\x02", b"n\x00", b"s\xff", b"x1"] {
            assert_eq!(IndexKey::decode(bad), None, "{bad:?}");
        }
    }
}
