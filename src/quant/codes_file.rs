//! `index.codes`: the quantized index's codes on disk, so a reopen reads them instead of
//! re-encoding every row. A 64-byte header, then one code per row in row order (row `r` at
//! `64 + r * code_len`), like `vectors.bin`.
//!
//! The header names what the codes were made with: quantization, metric, dimension, code
//! length, a fingerprint of the codebook and the index's generation (a number `metadata.db`'s
//! index record holds too, and which changes whenever the codes are remade: a new index,
//! a compaction). Codes are derived data, so a file that does not match the record is never
//! trusted: open rebuilds it from `vectors.bin` (see `crate::db`).
//!
//! Durability follows the rows': codes of appended rows are written and fsynced before the
//! redb commit that commits those rows, so the file holds at least the committed rows' codes
//! unless it was damaged; a whole new file is written under a temporary name, synced and
//! renamed into place ([`crate::storage::create_durably`]).

use super::codes::CodeTable;
use super::{Codebook, Quantization};
use crate::error::{Error, Result};
use crate::format::fnv1a32;
use crate::storage::{create_durably, ByteFile, Location};
use crate::types::Metric;
use std::path::PathBuf;
use std::sync::Arc;

/// The codes file's name in the database directory.
pub const CODES: &str = "index.codes";
/// The name a new codes file is written under before it is renamed to [`CODES`].
pub const CODES_TEMP: &str = "index.codes.tmp";
/// Bytes before the first code.
pub const HEADER_BYTES: usize = 64;

const MAGIC: &[u8; 8] = b"SRVDBIDX";
const VERSION: u32 = 1;
/// Bytes of codes written per `write_at` when a whole file is written or read.
const IO_BYTES: usize = 1 << 20;

/// What a codes file says it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodesHeader {
    /// The quantization.
    pub quantization: Quantization,
    /// The metric the codes serve.
    pub metric: Metric,
    /// Components per row.
    pub dim: u32,
    /// Bytes per code.
    pub code_len: u32,
    /// The index generation the file was written for.
    pub generation: u64,
    /// [`fingerprint`] of the codebook.
    pub fingerprint: u64,
}

/// A 64-bit FNV-1a hash of the codebook's bytes: a file made with another codebook (of the
/// same shape) does not match.
pub fn fingerprint(codebook: &Codebook) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in codebook.to_bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

impl CodesHeader {
    /// The header of codes made by `codebook` for index generation `generation`.
    pub fn of(codebook: &Codebook, generation: u64) -> Self {
        CodesHeader {
            quantization: codebook.quantization(),
            metric: codebook.metric(),
            dim: u32::try_from(codebook.dim()).unwrap_or(u32::MAX),
            code_len: u32::try_from(codebook.code_len()).unwrap_or(u32::MAX),
            generation,
            fingerprint: fingerprint(codebook),
        }
    }

    /// The header's bytes (checksummed).
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut h = [0u8; HEADER_BYTES];
        h[0..8].copy_from_slice(MAGIC);
        h[8..12].copy_from_slice(&VERSION.to_le_bytes());
        h[12] = match self.quantization {
            Quantization::Int8 => 1,
            Quantization::Binary => 2,
        };
        h[13] = self.metric.code();
        h[16..20].copy_from_slice(&self.dim.to_le_bytes());
        h[20..24].copy_from_slice(&self.code_len.to_le_bytes());
        h[24..32].copy_from_slice(&self.generation.to_le_bytes());
        h[32..40].copy_from_slice(&self.fingerprint.to_le_bytes());
        h[40..44].copy_from_slice(&(HEADER_BYTES as u32).to_le_bytes());
        let check = fnv1a32(&h[0..44]);
        h[44..48].copy_from_slice(&check.to_le_bytes());
        h
    }

    /// Parses a header; `Err` says why the bytes are not one this build writes.
    pub fn decode(h: &[u8]) -> std::result::Result<Self, String> {
        if h.len() < HEADER_BYTES {
            return Err("shorter than its 64-byte header".into());
        }
        if &h[0..8] != MAGIC {
            return Err("bad magic: not a SrvDB codes file".into());
        }
        let u32_at = |at: usize| u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[at..at + 8]);
            u64::from_le_bytes(b)
        };
        if u32_at(44) != fnv1a32(&h[0..44]) {
            return Err("header checksum mismatch (the header is damaged)".into());
        }
        if u32_at(8) != VERSION {
            return Err(format!(
                "format version {}, this build writes {VERSION}",
                u32_at(8)
            ));
        }
        let quantization = match h[12] {
            1 => Quantization::Int8,
            2 => Quantization::Binary,
            q => return Err(format!("unknown quantization code {q}")),
        };
        let metric = Metric::from_code(h[13]).ok_or("unknown metric code")?;
        if u32_at(40) as usize != HEADER_BYTES {
            return Err("unexpected header length".into());
        }
        Ok(CodesHeader {
            quantization,
            metric,
            dim: u32_at(16),
            code_len: u32_at(20),
            generation: u64_at(24),
            fingerprint: u64_at(32),
        })
    }
}

/// The writer's handle on `index.codes`: appends the codes of new rows and syncs them.
#[derive(Debug)]
pub struct CodesFile {
    file: Arc<dyn ByteFile>,
    path: PathBuf,
    code_len: usize,
    generation: u64,
    /// Rows whose codes the file holds (written; durable after [`CodesFile::sync`]).
    rows: u64,
}

/// What [`CodesFile::open`] found.
#[derive(Debug)]
pub enum Opened {
    /// No codes file.
    Missing,
    /// A file that cannot serve the index (why): it must be rebuilt.
    Unusable(String),
    /// A matching file, cut to at most the committed rows.
    Usable(CodesFile),
}

impl CodesFile {
    /// Writes a complete codes file for `table` (all its rows) under generation `generation`,
    /// durably (temporary name, sync, rename, directory sync), replacing any file there.
    pub fn create(loc: &dyn Location, table: &CodeTable, generation: u64) -> Result<CodesFile> {
        let header = CodesHeader::of(table.codebook(), generation);
        let temp_path = loc.path_of(CODES_TEMP);
        create_durably(loc, CODES, CODES_TEMP, |file| {
            let ctx = || format!("writing {}", temp_path.display());
            file.write_at(0, &header.encode())
                .map_err(Error::io_ctx(ctx()))?;
            write_codes(file.as_ref(), table, 0, table.rows(), table.code_len())
                .map_err(Error::io_ctx(ctx()))
        })?;
        let path = loc.path_of(CODES);
        let Some(file) = loc.open(CODES)? else {
            return Err(Error::corrupt(path, "vanished right after it was written"));
        };
        Ok(CodesFile {
            file,
            path,
            code_len: table.code_len(),
            generation,
            rows: table.rows(),
        })
    }

    /// Opens `index.codes` if it holds codes of `codebook` for generation `generation`, and
    /// cuts it to at most `committed_rows` rows (codes past them are of rows never committed,
    /// or a torn tail), durably.
    pub fn open(
        loc: &dyn Location,
        codebook: &Codebook,
        generation: u64,
        committed_rows: u64,
    ) -> Result<Opened> {
        let Some(file) = loc.open(CODES)? else {
            return Ok(Opened::Missing);
        };
        let path = loc.path_of(CODES);
        let ctx = |what: &str| format!("{what} {}", path.display());
        let len = file
            .len()
            .map_err(Error::io_ctx(ctx("reading the length of")))?;
        if len < HEADER_BYTES as u64 {
            return Ok(Opened::Unusable("shorter than its header".into()));
        }
        let mut h = [0u8; HEADER_BYTES];
        file.read_at(0, &mut h)
            .map_err(Error::io_ctx(ctx("reading the header of")))?;
        let header = match CodesHeader::decode(&h) {
            Ok(header) => header,
            Err(why) => return Ok(Opened::Unusable(why)),
        };
        let want = CodesHeader::of(codebook, generation);
        if header != want {
            return Ok(Opened::Unusable(format!(
                "made for another index (file {header:?}, metadata.db {want:?})"
            )));
        }
        let code_len = codebook.code_len();
        let whole = (len - HEADER_BYTES as u64) / code_len as u64;
        let rows = whole.min(committed_rows);
        let keep = HEADER_BYTES as u64 + rows * code_len as u64;
        if len > keep {
            file.set_len(keep)
                .map_err(Error::io_ctx(ctx("cutting the tail of")))?;
            file.sync_data().map_err(Error::io_ctx(ctx("syncing")))?;
        }
        Ok(Opened::Usable(CodesFile {
            file,
            path,
            code_len,
            generation,
            rows,
        }))
    }

    /// Rows whose codes the file holds.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The index generation the file was written for.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Appends to `table` the codes of rows `table.rows()..self.rows()` read from the file.
    pub fn read_into(&self, table: &mut CodeTable) -> Result<()> {
        let per_read = (IO_BYTES / self.code_len).max(1) as u64;
        let mut buf = Vec::new();
        let mut row = table.rows();
        while row < self.rows {
            let n = per_read.min(self.rows - row);
            buf.resize(n as usize * self.code_len, 0);
            let offset = HEADER_BYTES as u64 + row * self.code_len as u64;
            self.file
                .read_at(offset, &mut buf)
                .map_err(Error::io_ctx(format!("reading {}", self.path.display())))?;
            table.push_codes(&buf);
            row += n;
        }
        Ok(())
    }

    /// Writes the codes of rows `self.rows()..upto` from `table` (not yet durable: see
    /// [`CodesFile::sync`]).
    pub fn append(&mut self, table: &CodeTable, upto: u64) -> Result<()> {
        if upto <= self.rows {
            return Ok(());
        }
        write_codes(self.file.as_ref(), table, self.rows, upto, self.code_len)
            .map_err(Error::io_ctx(format!("writing {}", self.path.display())))?;
        self.rows = upto;
        Ok(())
    }

    /// Makes every code written so far durable.
    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(Error::io_ctx(format!("syncing {}", self.path.display())))
    }
}

/// Writes the codes of rows `from..to` of `table` at their places in `file`.
fn write_codes(
    file: &dyn ByteFile,
    table: &CodeTable,
    from: u64,
    to: u64,
    code_len: usize,
) -> std::io::Result<()> {
    for (first, bytes) in table.runs(from, to) {
        let start = HEADER_BYTES as u64 + first * code_len as u64;
        for (i, piece) in bytes.chunks(IO_BYTES).enumerate() {
            file.write_at(start + (i * IO_BYTES) as u64, piece)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let codebook = Codebook::train(Quantization::Int8, Metric::L2, 5, std::iter::empty());
        let header = CodesHeader::of(&codebook, 7);
        let bytes = header.encode();
        assert_eq!(CodesHeader::decode(&bytes), Ok(header));
        for at in [0, 9, 12, 17, 25, 33, 45] {
            let mut bad = bytes;
            bad[at] ^= 0x40;
            assert!(CodesHeader::decode(&bad).is_err(), "byte {at} flipped");
        }
        assert!(CodesHeader::decode(&bytes[..40]).is_err());
    }

    #[test]
    fn another_codebook_has_another_fingerprint() {
        let rows: Vec<f32> = vec![0.0, 1.0, 2.0, -1.0];
        let a = Codebook::train(Quantization::Int8, Metric::L2, 2, std::iter::empty());
        let b = Codebook::train(
            Quantization::Int8,
            Metric::L2,
            2,
            rows.chunks(2).map(|r| (r, 1.0)),
        );
        assert_ne!(fingerprint(&a), fingerprint(&b));
    }
}
