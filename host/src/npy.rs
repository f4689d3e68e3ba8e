//! Reads NumPy `.npy` files holding little-endian float32 vectors (`numpy.save` of a 1-D or
//! 2-D `float32` array), trusting nothing in them: every length in the header is checked
//! against the file before it is used, with checked arithmetic, and the header's dictionary is
//! parsed as the Python literal it is (not searched for substrings).
//!
//! Format (NumPy's `format.py`): the magic `\x93NUMPY`, a major and a minor version byte, the
//! header's length (u16 little-endian in version 1, u32 in versions 2 and 3), the header (an
//! ASCII, or in version 3 UTF-8, Python dict literal with exactly the keys `descr`,
//! `fortran_order` and `shape`, padded with spaces and a newline), then the data.

use std::fmt;

/// The magic string every `.npy` file starts with.
const MAGIC: &[u8] = b"\x93NUMPY";

/// Longest header accepted. NumPy itself refuses headers over 10,000 bytes by default
/// (`max_header_size`); a float32 vector array's header is under 128.
pub const MAX_HEADER_BYTES: usize = 65_536;

/// Why a `.npy` file was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NpyError {
    /// The file does not start with `\x93NUMPY`.
    NotNpy,
    /// The file ends before the part its own header announces.
    Truncated {
        /// What was being read.
        part: &'static str,
        /// Bytes that part needs (from the start of the file).
        needed: u64,
        /// Bytes the file has.
        have: u64,
    },
    /// A format version this reader does not know.
    Version(u8, u8),
    /// The header length is over [`MAX_HEADER_BYTES`].
    HeaderTooLong(u64),
    /// The header is not the dict literal NumPy writes.
    BadHeader(String),
    /// The array's element type is not little-endian float32.
    Dtype(String),
    /// The array is stored in Fortran (column-major) order.
    FortranOrder,
    /// The shape is not that of a 1-D or 2-D array of non-empty vectors.
    Shape(String),
    /// The data section's length is not what the shape says.
    DataLength {
        /// Bytes the shape needs.
        expected: u64,
        /// Bytes present after the header.
        got: u64,
    },
}

const HOW: &str = "save the vectors with numpy.save(path, np.ascontiguousarray(a, dtype='<f4'))";

impl fmt::Display for NpyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NpyError::NotNpy => write!(f, "not a .npy file (no \\x93NUMPY magic): {HOW}"),
            NpyError::Truncated { part, needed, have } => write!(
                f,
                "truncated .npy file: its {part} needs {needed} bytes, the file has {have}: \
                 the file was cut short; write it again"
            ),
            NpyError::Version(major, minor) => write!(
                f,
                ".npy format version {major}.{minor} is not supported (1.0, 2.0 and 3.0 are): {HOW}"
            ),
            NpyError::HeaderTooLong(n) => write!(
                f,
                ".npy header of {n} bytes is over the {MAX_HEADER_BYTES}-byte limit: {HOW}"
            ),
            NpyError::BadHeader(why) => write!(f, "malformed .npy header: {why}: {HOW}"),
            NpyError::Dtype(d) => write!(
                f,
                ".npy dtype {d:?} is not little-endian float32 ('<f4'): convert with \
                 a.astype('<f4') before numpy.save"
            ),
            NpyError::FortranOrder => write!(
                f,
                ".npy array is in Fortran order: save np.ascontiguousarray(a) instead"
            ),
            NpyError::Shape(why) => write!(f, ".npy shape {why}: {HOW}"),
            NpyError::DataLength { expected, got } => write!(
                f,
                ".npy data is {got} bytes but its shape needs {expected}: the file is cut \
                 short or has trailing bytes; write it again"
            ),
        }
    }
}

impl std::error::Error for NpyError {}

/// A float32 array read from a `.npy` file: `rows` vectors of `cols` components, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Vectors {
    /// Number of vectors (1 for a 1-D array).
    pub rows: usize,
    /// Components per vector.
    pub cols: usize,
    /// `rows * cols` values.
    pub data: Vec<f32>,
}

/// Parses a whole `.npy` file.
pub fn parse(bytes: &[u8]) -> Result<Vectors, NpyError> {
    let have = bytes.len() as u64;
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(NpyError::NotNpy);
    }
    let truncated = |part, needed: usize| NpyError::Truncated {
        part,
        needed: needed as u64,
        have,
    };
    let (major, minor) = match bytes.get(6..8) {
        Some(&[major, minor]) => (major, minor),
        _ => return Err(truncated("version", 8)),
    };
    let (header_len, start) = match major {
        1 => match bytes.get(8..10) {
            Some(&[a, b]) => (u64::from(u16::from_le_bytes([a, b])), 10usize),
            _ => return Err(truncated("header length", 10)),
        },
        2 | 3 => match bytes.get(8..12) {
            Some(&[a, b, c, d]) => (u64::from(u32::from_le_bytes([a, b, c, d])), 12),
            _ => return Err(truncated("header length", 12)),
        },
        _ => return Err(NpyError::Version(major, minor)),
    };
    if header_len > MAX_HEADER_BYTES as u64 {
        return Err(NpyError::HeaderTooLong(header_len));
    }
    // Cannot overflow: both are small (checked above).
    let data_at = start + header_len as usize;
    let header = bytes
        .get(start..data_at)
        .ok_or_else(|| truncated("header", data_at))?;
    let header = std::str::from_utf8(header)
        .map_err(|_| NpyError::BadHeader("the header is not UTF-8 text".into()))?;
    let (rows, cols) = parse_header(header)?;
    let expected = rows
        .checked_mul(cols)
        .and_then(|n| n.checked_mul(4))
        .ok_or_else(|| NpyError::Shape(format!("({rows}, {cols}) is too large to hold")))?;
    let data = &bytes[data_at..];
    if data.len() as u64 != expected {
        return Err(NpyError::DataLength {
            expected,
            got: data.len() as u64,
        });
    }
    let too_large = || NpyError::Shape(format!("({rows}, {cols}) is too large for this machine"));
    let rows = usize::try_from(rows).map_err(|_| too_large())?;
    let cols = usize::try_from(cols).map_err(|_| too_large())?;
    let data = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(Vectors { rows, cols, data })
}

/// Checks the header dict and returns the shape as (rows, cols).
fn parse_header(header: &str) -> Result<(u64, u64), NpyError> {
    let bad = |why: &str| NpyError::BadHeader(why.to_owned());
    let mut p = Parser {
        rest: header.trim_end_matches([' ', '\n', '\0']),
    };
    p.expect('{')
        .map_err(|()| bad("it does not start with '{'"))?;
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    loop {
        p.skip_space();
        if p.eat('}') {
            break;
        }
        let key = p
            .string()
            .ok_or_else(|| bad("a key is not a quoted string"))?;
        p.expect(':').map_err(|()| bad("a key has no ':'"))?;
        p.skip_space();
        let duplicate = match key.as_str() {
            "descr" => descr
                .replace(p.string().ok_or_else(|| bad("'descr' is not a string"))?)
                .is_some(),
            "fortran_order" => fortran
                .replace(
                    p.boolean()
                        .ok_or_else(|| bad("'fortran_order' is not True/False"))?,
                )
                .is_some(),
            "shape" => shape.replace(p.tuple()?).is_some(),
            other => return Err(NpyError::BadHeader(format!("unexpected key {other:?}"))),
        };
        if duplicate {
            return Err(NpyError::BadHeader(format!("key {key:?} appears twice")));
        }
        p.skip_space();
        if !p.eat(',') {
            p.skip_space();
            p.expect('}')
                .map_err(|()| bad("entries are not separated by ','"))?;
            break;
        }
    }
    if !p.rest.trim().is_empty() {
        return Err(bad("text after the closing '}'"));
    }
    let descr = descr.ok_or_else(|| bad("no 'descr' key"))?;
    let fortran = fortran.ok_or_else(|| bad("no 'fortran_order' key"))?;
    let shape = shape.ok_or_else(|| bad("no 'shape' key"))?;
    if descr != "<f4" {
        return Err(NpyError::Dtype(descr));
    }
    if fortran {
        return Err(NpyError::FortranOrder);
    }
    match shape.as_slice() {
        [_, 0] | [0] => Err(NpyError::Shape(format!(
            "{shape:?} has vectors of 0 components"
        ))),
        [rows, cols] => Ok((*rows, *cols)),
        [cols] => Ok((1, *cols)),
        _ => Err(NpyError::Shape(format!(
            "{shape:?} is not 1-D or 2-D (one vector, or one per row)"
        ))),
    }
}

/// A cursor over the header's text.
struct Parser<'a> {
    rest: &'a str,
}

impl Parser<'_> {
    fn skip_space(&mut self) {
        self.rest = self.rest.trim_start_matches([' ', '\t', '\n']);
    }

    fn eat(&mut self, c: char) -> bool {
        match self.rest.strip_prefix(c) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    fn expect(&mut self, c: char) -> Result<(), ()> {
        self.skip_space();
        if self.eat(c) {
            Ok(())
        } else {
            Err(())
        }
    }

    /// A single- or double-quoted string without escapes (NumPy writes none in these keys).
    fn string(&mut self) -> Option<String> {
        let quote = self
            .rest
            .chars()
            .next()
            .filter(|c| *c == '\'' || *c == '"')?;
        let body = &self.rest[1..];
        let end = body.find(quote)?;
        let s = &body[..end];
        if s.contains('\\') {
            return None;
        }
        self.rest = &body[end + 1..];
        Some(s.to_owned())
    }

    fn boolean(&mut self) -> Option<bool> {
        if let Some(rest) = self.rest.strip_prefix("True") {
            self.rest = rest;
            Some(true)
        } else if let Some(rest) = self.rest.strip_prefix("False") {
            self.rest = rest;
            Some(false)
        } else {
            None
        }
    }

    /// A tuple of non-negative integers: `()`, `(3,)`, `(3, 4)`, ...
    fn tuple(&mut self) -> Result<Vec<u64>, NpyError> {
        let bad = |why: &str| NpyError::BadHeader(format!("'shape' {why}"));
        if !self.eat('(') {
            return Err(bad("is not a tuple"));
        }
        let mut dims = Vec::new();
        loop {
            self.skip_space();
            if self.eat(')') {
                return Ok(dims);
            }
            let digits = self.rest.len()
                - self
                    .rest
                    .trim_start_matches(|c: char| c.is_ascii_digit())
                    .len();
            if digits == 0 {
                return Err(bad("holds something other than non-negative integers"));
            }
            let n = self.rest[..digits]
                .parse::<u64>()
                .map_err(|_| bad("holds a dimension too large to represent"))?;
            self.rest = &self.rest[digits..];
            dims.push(n);
            if dims.len() > 32 {
                return Err(bad("has more than 32 dimensions"));
            }
            self.skip_space();
            if !self.eat(',') {
                self.skip_space();
                if self.eat(')') {
                    return Ok(dims);
                }
                return Err(bad("is not a well-formed tuple"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A `.npy` file as NumPy writes it (version 1, padded so the data starts at a multiple
    /// of 64), with `header` as its dict and `data` after it.
    fn npy_v1(header: &str, data: &[u8]) -> Vec<u8> {
        let mut h = header.to_owned();
        while !(10 + h.len() + 1).is_multiple_of(64) {
            h.push(' ');
        }
        h.push('\n');
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(h.len() as u16).to_le_bytes());
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn floats(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    const GOOD_2X3: &str = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";

    #[test]
    fn reads_what_numpy_writes() {
        let values = [1.0, 2.0, 3.0, 4.0, 5.0, -6.5];
        let v = parse(&npy_v1(GOOD_2X3, &floats(&values))).expect("valid file");
        assert_eq!((v.rows, v.cols, v.data.as_slice()), (2, 3, &values[..]));
        let one = "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }";
        let v = parse(&npy_v1(one, &floats(&values[..3]))).expect("1-D");
        assert_eq!((v.rows, v.cols), (1, 3));
        // Version 2: a u32 header length.
        let mut v2 = npy_v1(GOOD_2X3, &floats(&values));
        let header_len = u16::from_le_bytes([v2[8], v2[9]]) as u32;
        v2[6] = 2;
        v2.splice(8..10, header_len.to_le_bytes());
        assert_eq!(parse(&v2).expect("v2").data, values);
    }

    #[test]
    fn short_files_are_refused_not_indexed_past() {
        let whole = npy_v1(GOOD_2X3, &floats(&[0.0; 6]));
        for cut in 0..whole.len() {
            let err = parse(&whole[..cut]).expect_err("a cut file");
            assert!(
                matches!(
                    err,
                    NpyError::NotNpy | NpyError::Truncated { .. } | NpyError::DataLength { .. }
                ),
                "cut at {cut}: {err}"
            );
        }
        // Version 2 magic with only 10 bytes: the old reader indexed bytes[10] and bytes[11].
        let mut v2 = MAGIC.to_vec();
        v2.extend_from_slice(&[2, 0, 5, 0]);
        assert!(matches!(parse(&v2), Err(NpyError::Truncated { .. })));
    }

    #[test]
    fn lying_headers_are_refused() {
        let data = floats(&[0.0; 6]);
        let cases: &[(&str, &str)] = &[
            // rows * cols * 4 overflows u64 (and wrapped to a small number in the old reader).
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4), }", "large"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999, 1), }", "too large"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 3), }", "data is 24 bytes"),
            ("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }", "dtype"),
            ("{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }", "dtype"),
            ("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", "Fortran"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 3), }", "not 1-D or 2-D"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (), }", "not 1-D or 2-D"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (6, 0), }", "0 components"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (-2, 3), }", "integers"),
            ("{'descr': '<f4', 'fortran_order': False, }", "no 'shape'"),
            ("{'descr': '<f4', 'shape': (2, 3), }", "no 'fortran_order'"),
            // The old reader matched substrings: a decoy in another key passed its check.
            ("{'descr': '<f8', 'x': \"'descr': '<f4'\", 'fortran_order': False, 'shape': (2, 3), }", "unexpected key"),
            ("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", "twice"),
            ("{'descr': '<f4' 'fortran_order': False, 'shape': (2, 3), }", "separated"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)} trailing", "after"),
            ("'descr': '<f4'", "start"),
        ];
        for (header, says) in cases {
            let err = parse(&npy_v1(header, &data)).expect_err(header);
            assert!(err.to_string().contains(says), "{header}: {err}");
        }
        // A header length past the end of the file, and one over the limit.
        let mut lying = npy_v1(GOOD_2X3, &data);
        lying[8..10].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(matches!(parse(&lying), Err(NpyError::Truncated { .. })));
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&[2, 0]);
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(parse(&huge), Err(NpyError::HeaderTooLong(u32::MAX as u64)));
        let mut v9 = npy_v1(GOOD_2X3, &data);
        v9[6] = 9;
        assert_eq!(parse(&v9), Err(NpyError::Version(9, 0)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any bytes at all: an error or a consistent array, never a panic.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(v) = parse(&bytes) {
                prop_assert_eq!(v.rows * v.cols, v.data.len());
            }
        }

        /// A valid file with random bytes overwritten and a random cut: the same.
        #[test]
        fn mutated_valid_files_never_panic(
            edits in proptest::collection::vec((0usize..200, any::<u8>()), 0..6),
            cut in 0usize..200,
        ) {
            let mut bytes = npy_v1(GOOD_2X3, &floats(&[1.5; 6]));
            for (at, value) in edits {
                if let Some(b) = bytes.get_mut(at % 150) {
                    *b = value;
                }
            }
            bytes.truncate(bytes.len().saturating_sub(cut % 30));
            if let Ok(v) = parse(&bytes) {
                prop_assert_eq!(v.rows * v.cols, v.data.len());
            }
        }
    }
}
