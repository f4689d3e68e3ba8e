//! The on-disk layout of `vectors.bin`: a 64-byte header, then fixed-size rows.
//!
//! ```text
//! offset  size  field
//!      0     8  magic "SRVDBVEC"
//!      8     4  format version (u32 LE) = 1
//!     12     4  dimension d (u32 LE)
//!     16     1  metric (1 cosine, 2 dot, 3 l2)
//!     17     1  element type (1 = f32 LE)
//!     18     2  reserved, zero
//!     20     4  row stride in bytes (u32 LE)
//!     24     4  header size in bytes (u32 LE) = 64
//!     28     4  FNV-1a 32 of bytes 0..28
//!     32    32  reserved, zero
//! row r at 64 + r * stride: d f32 components, the f32 L2 norm, zero padding to 64 bytes.
//! ```
//!
//! The norm is stored in the row so cosine search reads it from the cache line it already
//! fetched, and reopening a database never recomputes norms. All integers are fixed-width
//! little-endian: the same file serves 64-bit native and 32-bit wasm.

use crate::error::{Error, Result};
use crate::types::{Metric, MAX_DIMENSION};
use std::path::Path;

/// Size of the header, and the alignment of every row.
pub const HEADER_BYTES: usize = 64;
/// Rows are padded to a multiple of this many bytes (one cache line; AVX-512 loads).
pub const ROW_ALIGN_BYTES: usize = 64;
const MAGIC: &[u8; 8] = b"SRVDBVEC";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
const ELEMENT_F32: u8 = 1;

/// The shape of one stored row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowLayout {
    /// Number of vector components.
    pub dim: u32,
    /// Row length in f32 units: `dim` components, the norm, and padding.
    pub stride_f32: usize,
}

impl RowLayout {
    /// The layout for vectors of `dim` components.
    pub fn new(dim: u32) -> Self {
        let per_line = ROW_ALIGN_BYTES / 4;
        let stride_f32 = (dim as usize + 1).div_ceil(per_line) * per_line;
        RowLayout { dim, stride_f32 }
    }

    /// Row length in bytes.
    pub fn stride_bytes(&self) -> usize {
        self.stride_f32 * 4
    }

    /// Byte offset of row `row` in `vectors.bin`. Saturates at `u64::MAX` for a row count no
    /// file can hold (one read from a damaged `metadata.db`), so a length check against it
    /// fails instead of wrapping to a small length that would pass, or cut the file.
    pub fn row_offset(&self, row: u64) -> u64 {
        row.saturating_mul(self.stride_bytes() as u64)
            .saturating_add(HEADER_BYTES as u64)
    }

    /// Length `vectors.bin` has when it holds exactly `rows` rows (saturating, as
    /// [`RowLayout::row_offset`]).
    pub fn file_len(&self, rows: u64) -> u64 {
        self.row_offset(rows)
    }

    /// Writes `vector` as a row (components, norm, zero padding) into `out`.
    /// `out.len()` must be `stride_f32` and `vector.len()` must be `dim`.
    pub fn encode_row(&self, vector: &[f32], norm: f32, out: &mut [f32]) {
        let dim = self.dim as usize;
        out[..dim].copy_from_slice(vector);
        out[dim] = norm;
        out[dim + 1..].fill(0.0);
    }
}

/// What the header of a `vectors.bin` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Row layout.
    pub layout: RowLayout,
    /// The metric the database was created with.
    pub metric: Metric,
}

/// FNV-1a 32 of `bytes`: the header checksum of `vectors.bin` and `index.codes`.
pub(crate) fn fnv1a32(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for &b in bytes {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

impl Header {
    /// Serialises the header.
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut h = [0u8; HEADER_BYTES];
        h[0..8].copy_from_slice(MAGIC);
        h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&self.layout.dim.to_le_bytes());
        h[16] = self.metric.code();
        h[17] = ELEMENT_F32;
        let stride = u32::try_from(self.layout.stride_bytes()).unwrap_or(u32::MAX);
        h[20..24].copy_from_slice(&stride.to_le_bytes());
        h[24..28].copy_from_slice(&(HEADER_BYTES as u32).to_le_bytes());
        let check = fnv1a32(&h[0..28]);
        h[28..32].copy_from_slice(&check.to_le_bytes());
        h
    }

    /// Parses and checks a header read from `file` (named in errors).
    pub fn decode(bytes: &[u8], file: &Path) -> Result<Self> {
        let corrupt = |reason: &str| Error::corrupt(file, reason);
        if bytes.len() < HEADER_BYTES {
            return Err(corrupt(
                "shorter than the 64-byte header (truncated or not a SrvDB file)",
            ));
        }
        if &bytes[0..8] != MAGIC {
            return Err(corrupt("bad magic: not a SrvDB vectors file"));
        }
        let u32_at = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        if u32_at(28) != fnv1a32(&bytes[0..28]) {
            return Err(corrupt("header checksum mismatch (the header is damaged)"));
        }
        let version = u32_at(8);
        if version != FORMAT_VERSION {
            return Err(corrupt(&format!(
                "format version {version}, this build reads version {FORMAT_VERSION}: use a matching SrvDB release"
            )));
        }
        let dim = u32_at(12);
        if dim == 0 || dim > MAX_DIMENSION {
            return Err(corrupt(&format!("dimension {dim} out of range")));
        }
        let metric = Metric::from_code(bytes[16])
            .ok_or_else(|| corrupt(&format!("unknown metric code {}", bytes[16])))?;
        if bytes[17] != ELEMENT_F32 {
            return Err(corrupt(&format!("unknown element type {}", bytes[17])));
        }
        let layout = RowLayout::new(dim);
        if u32_at(20) as usize != layout.stride_bytes() || u32_at(24) as usize != HEADER_BYTES {
            return Err(corrupt(
                "row stride or header size disagrees with the dimension",
            ));
        }
        Ok(Header { layout, metric })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stride_is_aligned_and_holds_the_norm() {
        for dim in 1..200u32 {
            let l = RowLayout::new(dim);
            assert_eq!(l.stride_bytes() % ROW_ALIGN_BYTES, 0, "dim {dim}");
            assert!(l.stride_f32 > dim as usize, "dim {dim}");
            assert!(l.stride_f32 <= dim as usize + 16, "dim {dim}");
        }
        assert_eq!(RowLayout::new(1536).stride_bytes(), 6208);
        assert_eq!(RowLayout::new(384).stride_bytes(), 1600);
    }

    /// A row count read from a damaged metadata.db (2^58 rows of 128 bytes) wrapped to a
    /// 64-byte "file length", which `check_and_cut` would then cut the file to.
    #[test]
    fn file_len_saturates_instead_of_wrapping() {
        let layout = RowLayout::new(20);
        assert_eq!(layout.file_len(3), 64 + 3 * 128);
        assert_eq!(layout.file_len(1 << 58), u64::MAX);
        assert_eq!(layout.file_len(u64::MAX), u64::MAX);
        assert_eq!(layout.row_offset(u64::MAX / 128 + 1), u64::MAX);
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let h = Header {
            layout: RowLayout::new(384),
            metric: Metric::Dot,
        };
        let bytes = h.encode();
        let p = Path::new("vectors.bin");
        assert_eq!(Header::decode(&bytes, p).unwrap(), h);
        for i in 0..32 {
            let mut bad = bytes;
            bad[i] ^= 0x40;
            assert!(
                matches!(Header::decode(&bad, p), Err(Error::Corrupt { .. })),
                "byte {i}"
            );
        }
        assert!(Header::decode(&bytes[..10], p).is_err());
    }
}
