//! Range reads of rows' metadata and documents, in one read transaction each: what the filter
//! column caches are built from and what `records` returns.

use super::{open_or_none, to_redb, MetaStore, ROW_DOC, ROW_META};
use crate::error::{Error, Result};
use crate::types::Metadata;
use std::ops::Range;

impl MetaStore {
    /// The metadata of each committed row of `rows`, in order (`None` for rows without, or
    /// not committed).
    pub fn metadata_range(&self, rows: Range<u64>) -> Result<Vec<Option<Metadata>>> {
        let ctx = format!("reading metadata from {}", self.path.display());
        let len = usize::try_from(rows.end.saturating_sub(rows.start)).unwrap_or(0);
        let run = || -> std::result::Result<Vec<(u64, Vec<u8>)>, redb::Error> {
            let txn = self.db.begin_read().map_err(to_redb)?;
            let Some(table) = open_or_none(&txn, ROW_META)? else {
                return Ok(Vec::new());
            };
            let mut out = Vec::new();
            for entry in table.range(rows.clone())? {
                let (k, v) = entry?;
                out.push((k.value(), v.value().to_vec()));
            }
            Ok(out)
        };
        let mut out = vec![None; len];
        for (row, bytes) in self.guarded(&ctx, run)? {
            let meta = Metadata::decode(&bytes).ok_or_else(|| {
                Error::corrupt(&self.path, format!("undecodable metadata for row {row}"))
            })?;
            if let Some(slot) = out.get_mut((row - rows.start) as usize) {
                *slot = Some(meta);
            }
        }
        Ok(out)
    }

    /// The document of each committed row of `rows`, in order.
    pub fn documents_range(&self, rows: Range<u64>) -> Result<Vec<Option<String>>> {
        let ctx = format!("reading documents from {}", self.path.display());
        let len = usize::try_from(rows.end.saturating_sub(rows.start)).unwrap_or(0);
        let run = || -> std::result::Result<Vec<Option<String>>, redb::Error> {
            let mut out = vec![None; len];
            let txn = self.db.begin_read().map_err(to_redb)?;
            let Some(table) = open_or_none(&txn, ROW_DOC)? else {
                return Ok(out);
            };
            for entry in table.range(rows.clone())? {
                let (k, v) = entry?;
                if let Some(slot) = out.get_mut((k.value() - rows.start) as usize) {
                    *slot = Some(v.value().to_owned());
                }
            }
            Ok(out)
        };
        self.guarded(&ctx, run)
    }

    /// The metadata and document of each of `rows` (committed rows), in order, from one read
    /// transaction.
    pub fn metadata_and_documents(
        &self,
        rows: &[u64],
    ) -> Result<Vec<(Option<Metadata>, Option<String>)>> {
        let ctx = format!("reading records from {}", self.path.display());
        type Raw = Vec<(Option<Vec<u8>>, Option<String>)>;
        let run = || -> std::result::Result<Raw, redb::Error> {
            let txn = self.db.begin_read().map_err(to_redb)?;
            let metas = match txn.open_table(ROW_META) {
                Ok(t) => Some(t),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(e.into()),
            };
            let docs = match txn.open_table(ROW_DOC) {
                Ok(t) => Some(t),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(e.into()),
            };
            let mut out = Vec::with_capacity(rows.len());
            for &row in rows {
                let m = match &metas {
                    Some(t) => t.get(row)?.map(|v| v.value().to_vec()),
                    None => None,
                };
                let d = match &docs {
                    Some(t) => t.get(row)?.map(|v| v.value().to_owned()),
                    None => None,
                };
                out.push((m, d));
            }
            Ok(out)
        };
        self.guarded(&ctx, run)?
            .into_iter()
            .zip(rows)
            .map(|((m, d), row)| {
                let m = match m {
                    Some(bytes) => Some(Metadata::decode(&bytes).ok_or_else(|| {
                        Error::corrupt(&self.path, format!("undecodable metadata for row {row}"))
                    })?),
                    None => None,
                };
                Ok((m, d))
            })
            .collect()
    }
}
