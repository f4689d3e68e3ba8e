//! NumPy `.npy` files of vectors: the one reader (and writer) the CLI, the tests, the benches and
//! the examples share. It reads a 1-D or 2-D, C-order array of little-endian `float32` (`<f4`)
//! or `int32` (`<i4`), as `numpy.save` writes it, trusting nothing in the file: the header's
//! dictionary is parsed as the Python literal it is (not searched for substrings), every length
//! it announces is checked against the file with checked arithmetic before anything is
//! allocated, and the data is read once, straight into the returned `Vec`.
//!
//! Format (NumPy's `format.py`): the magic `\x93NUMPY`, a major and a minor version byte, the
//! header's length (u16 little-endian in version 1, u32 in versions 2 and 3), the header (an
//! ASCII, or in version 3 UTF-8, Python dict literal with exactly the keys `descr`,
//! `fortran_order` and `shape`, padded with spaces and a newline), then the data.

use std::io::Read;
use std::path::Path;

/// The magic string every `.npy` file starts with.
const MAGIC: &[u8] = b"\x93NUMPY";

/// Longest header accepted. NumPy itself refuses headers over 10,000 bytes by default
/// (`max_header_size`); a vector array's header is under 128.
pub const MAX_HEADER_BYTES: usize = 65_536;

/// How to write a file this module reads; the end of most error messages.
const HOW: &str = "save the array with numpy.save(path, np.ascontiguousarray(a))";

/// An element type this module reads: 4 bytes, little-endian, the same on disk as in memory
/// (big-endian targets do not build, see `lib.rs`).
pub trait Element: bytemuck::Pod + private::Sealed {
    /// The NumPy `descr` of this type, e.g. `<f4`.
    const DESCR: &'static str;
}

impl Element for f32 {
    const DESCR: &'static str = "<f4";
}

impl Element for i32 {
    const DESCR: &'static str = "<i4";
}

mod private {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for i32 {}
}

/// Why a `.npy` file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NpyError {
    /// Opening or reading the file failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The file does not start with `\x93NUMPY`.
    #[error("not a .npy file (no \\x93NUMPY magic): {HOW}")]
    NotNpy,
    /// The file ends before the part its own header announces.
    #[error("truncated .npy file: its {part} needs {needed} bytes, the file has {have}: {HOW}")]
    Truncated {
        /// What was being read.
        part: &'static str,
        /// Bytes that part needs (from the start of the file).
        needed: u64,
        /// Bytes the file has.
        have: u64,
    },
    /// A format version this reader does not know.
    #[error(".npy format version {0}.{1} is not supported (1.0, 2.0 and 3.0 are): {HOW}")]
    Version(u8, u8),
    /// The header length is over [`MAX_HEADER_BYTES`].
    #[error(".npy header of {0} bytes is over the {MAX_HEADER_BYTES}-byte limit: {HOW}")]
    HeaderTooLong(u64),
    /// The header is not the dict literal NumPy writes.
    #[error("malformed .npy header: {0}: {HOW}")]
    BadHeader(String),
    /// The array's element type is not the one asked for.
    #[error(
        ".npy dtype {found:?} is not the expected {expected:?}: convert with \
         a.astype('{expected}') before numpy.save"
    )]
    Dtype {
        /// The file's `descr`.
        found: String,
        /// The `descr` the caller reads (see [`Element::DESCR`]).
        expected: &'static str,
    },
    /// The array is stored in Fortran (column-major) order.
    #[error(".npy array is in Fortran order: save np.ascontiguousarray(a) instead")]
    FortranOrder,
    /// The shape is not that of a 1-D or 2-D array of non-empty rows.
    #[error(".npy shape {0}: {HOW}")]
    Shape(String),
    /// The data section's length is not what the shape says.
    #[error(
        ".npy data is {got} bytes but its shape needs {expected}: the file is cut short or has \
         trailing bytes; write it again"
    )]
    DataLength {
        /// Bytes the shape needs.
        expected: u64,
        /// Bytes present after the header.
        got: u64,
    },
}

/// A 2-D array read from a `.npy` file: `rows` rows of `cols` values, row-major. A 1-D file is
/// one row.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix<T> {
    /// Number of rows (1 for a 1-D array).
    pub rows: usize,
    /// Values per row.
    pub cols: usize,
    /// `rows * cols` values.
    pub data: Vec<T>,
}

impl<T> Matrix<T> {
    /// Row `i`, or `None` past the end.
    pub fn row(&self, i: usize) -> Option<&[T]> {
        let start = i.checked_mul(self.cols)?;
        self.data.get(start..start.checked_add(self.cols)?)
    }
}

/// Reads the `.npy` file at `path`, whose elements must be of type `T`.
pub fn read<T: Element>(path: &Path) -> Result<Matrix<T>, NpyError> {
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    from_reader(std::io::BufReader::new(file), len)
}

/// Parses a whole `.npy` file held in memory.
pub fn from_bytes<T: Element>(bytes: &[u8]) -> Result<Matrix<T>, NpyError> {
    from_reader(bytes, bytes.len() as u64)
}

/// Reads a `.npy` file of `len_bytes` bytes from `reader`. The data's length is checked against
/// `len_bytes` before its buffer is allocated, so a lying header cannot claim memory the file
/// does not back.
pub fn from_reader<T: Element>(
    mut reader: impl Read,
    len_bytes: u64,
) -> Result<Matrix<T>, NpyError> {
    let have = len_bytes;
    let truncated = |part, needed: u64| NpyError::Truncated { part, needed, have };
    // Reads exactly `buf.len()` bytes, which end at `end` in the file.
    let mut read_part = |buf: &mut [u8], part, end: u64| -> Result<(), NpyError> {
        if end > have {
            return Err(truncated(part, end));
        }
        reader.read_exact(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => truncated(part, end),
            _ => NpyError::Io(e),
        })
    };

    let mut magic = [0u8; 8];
    if have < 6 {
        return Err(NpyError::NotNpy);
    }
    let magic_len = have.min(8) as usize;
    read_part(&mut magic[..magic_len], "magic", magic_len as u64)?;
    if &magic[..6] != MAGIC {
        return Err(NpyError::NotNpy);
    }
    if magic_len < 8 {
        return Err(truncated("version", 8));
    }
    let (major, minor) = (magic[6], magic[7]);
    let (header_len, start) = match major {
        1 => {
            let mut b = [0u8; 2];
            read_part(&mut b, "header length", 10)?;
            (u64::from(u16::from_le_bytes(b)), 10u64)
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            read_part(&mut b, "header length", 12)?;
            (u64::from(u32::from_le_bytes(b)), 12)
        }
        _ => return Err(NpyError::Version(major, minor)),
    };
    if header_len > MAX_HEADER_BYTES as u64 {
        return Err(NpyError::HeaderTooLong(header_len));
    }
    let data_at = start + header_len;
    // At most MAX_HEADER_BYTES (checked above).
    let mut header = vec![0u8; header_len as usize];
    read_part(&mut header, "header", data_at)?;
    let header = std::str::from_utf8(&header)
        .map_err(|_| NpyError::BadHeader("the header is not UTF-8 text".into()))?;
    let (rows, cols) = parse_header(header, T::DESCR)?;

    let elem_bytes = std::mem::size_of::<T>() as u64;
    let expected = rows
        .checked_mul(cols)
        .and_then(|n| n.checked_mul(elem_bytes))
        .ok_or_else(|| NpyError::Shape(format!("({rows}, {cols}) is too large to hold")))?;
    let got = have - data_at;
    if got != expected {
        return Err(NpyError::DataLength { expected, got });
    }
    let too_large = || NpyError::Shape(format!("({rows}, {cols}) is too large for this machine"));
    let rows = usize::try_from(rows).map_err(|_| too_large())?;
    let cols = usize::try_from(cols).map_err(|_| too_large())?;
    // Fits: `rows * cols * size_of::<T>()` is the data's length, which the file holds.
    let mut data = vec![T::zeroed(); rows * cols];
    read_part(bytemuck::cast_slice_mut(&mut data), "data", have)?;
    Ok(Matrix { rows, cols, data })
}

/// A `.npy` file (version 1.0, C order) holding `data` as `rows` rows of `cols` values, padded
/// as NumPy pads it (the data starts at a multiple of 64 bytes).
///
/// # Panics
/// If `data.len() != rows * cols`: a caller's bug, not input.
pub fn to_bytes<T: Element>(rows: usize, cols: usize, data: &[T]) -> Vec<u8> {
    assert_eq!(
        data.len(),
        rows * cols,
        "npy::to_bytes: data is not rows x cols"
    );
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': ({rows}, {cols}), }}",
        T::DESCR
    );
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&[1, 0]);
    // A 2-D shape's header is far under 64 KiB.
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(bytemuck::cast_slice(data));
    out
}

/// Writes [`to_bytes`] to `path`.
///
/// # Panics
/// If `data.len() != rows * cols`, as [`to_bytes`].
pub fn write<T: Element>(path: &Path, rows: usize, cols: usize, data: &[T]) -> std::io::Result<()> {
    std::fs::write(path, to_bytes(rows, cols, data))
}

/// Checks the header dict against `descr` and returns the shape as (rows, cols).
fn parse_header(header: &str, want_descr: &'static str) -> Result<(u64, u64), NpyError> {
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
    if descr != want_descr {
        return Err(NpyError::Dtype {
            found: descr,
            expected: want_descr,
        });
    }
    if fortran {
        return Err(NpyError::FortranOrder);
    }
    match shape.as_slice() {
        [_, 0] | [0] => Err(NpyError::Shape(format!("{shape:?} has rows of 0 values"))),
        [rows, cols] => Ok((*rows, *cols)),
        [cols] => Ok((1, *cols)),
        _ => Err(NpyError::Shape(format!(
            "{shape:?} is not 1-D or 2-D (one row, or a matrix)"
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
        let v = from_bytes::<f32>(&npy_v1(GOOD_2X3, &floats(&values))).expect("valid file");
        assert_eq!((v.rows, v.cols, v.data.as_slice()), (2, 3, &values[..]));
        assert_eq!(v.row(1), Some(&values[3..]));
        assert_eq!(v.row(2), None);
        let one = "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }";
        let v = from_bytes::<f32>(&npy_v1(one, &floats(&values[..3]))).expect("1-D");
        assert_eq!((v.rows, v.cols), (1, 3));
        // Version 2: a u32 header length.
        let mut v2 = npy_v1(GOOD_2X3, &floats(&values));
        let header_len = u16::from_le_bytes([v2[8], v2[9]]) as u32;
        v2[6] = 2;
        v2.splice(8..10, header_len.to_le_bytes());
        assert_eq!(from_bytes::<f32>(&v2).expect("v2").data, values);
        // Keys in another order, double quotes, no trailing comma: still the same dict.
        let reordered = "{\"shape\": (2, 3), 'fortran_order': False, 'descr': '<f4'}";
        let v = from_bytes::<f32>(&npy_v1(reordered, &floats(&values))).expect("reordered");
        assert_eq!(v.data, values);
    }

    #[test]
    fn writes_what_it_reads_for_each_element_type() {
        let f = [0.5f32, -1.0, 3.25, 7.0];
        assert_eq!(from_bytes::<f32>(&to_bytes(2, 2, &f)).unwrap().data, f);
        let i = [1i32, -2, 3, i32::MAX, i32::MIN, 0];
        let m = from_bytes::<i32>(&to_bytes(3, 2, &i)).unwrap();
        assert_eq!((m.rows, m.cols, m.data.as_slice()), (3, 2, &i[..]));
        // The same bytes asked for as the other type: a dtype error naming both.
        let err = from_bytes::<f32>(&to_bytes(3, 2, &i)).unwrap_err();
        assert!(
            matches!(&err, NpyError::Dtype { found, expected: "<f4" } if found == "<i4"),
            "{err}"
        );
        assert!(err
            .to_string()
            .contains("\"<i4\" is not the expected \"<f4\""));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.npy");
        write(&path, 2, 2, &f).unwrap();
        assert_eq!(read::<f32>(&path).unwrap().data, f);
        assert!(matches!(
            read::<f32>(&dir.path().join("absent.npy")),
            Err(NpyError::Io(_))
        ));
    }

    #[test]
    fn short_files_are_refused_not_indexed_past() {
        let whole = npy_v1(GOOD_2X3, &floats(&[0.0; 6]));
        for cut in 0..whole.len() {
            let err = from_bytes::<f32>(&whole[..cut]).expect_err("a cut file");
            assert!(
                matches!(
                    err,
                    NpyError::NotNpy | NpyError::Truncated { .. } | NpyError::DataLength { .. }
                ),
                "cut at {cut}: {err}"
            );
        }
        // Version 2 magic with only 10 bytes: an old reader indexed bytes[10] and bytes[11].
        let mut v2 = MAGIC.to_vec();
        v2.extend_from_slice(&[2, 0, 5, 0]);
        assert!(matches!(
            from_bytes::<f32>(&v2),
            Err(NpyError::Truncated { .. })
        ));
        // A reader that ends before the length it was announced with: truncated, not a panic.
        let short = &whole[..whole.len() - 4];
        assert!(matches!(
            from_reader::<f32>(short, whole.len() as u64),
            Err(NpyError::Truncated { part: "data", .. })
        ));
    }

    #[test]
    fn lying_headers_are_refused() {
        let data = floats(&[0.0; 6]);
        let cases: &[(&str, &str)] = &[
            // rows * cols * 4 overflows u64 (and wrapped to a small number in an old reader).
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4), }", "large"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999, 1), }", "too large"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 3), }", "data is 24 bytes"),
            ("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }", "dtype \"<f8\" is not the expected \"<f4\""),
            ("{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }", "dtype"),
            ("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", "Fortran"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 3), }", "not 1-D or 2-D"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (), }", "not 1-D or 2-D"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (6, 0), }", "0 values"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (-2, 3), }", "integers"),
            ("{'descr': '<f4', 'fortran_order': False, }", "no 'shape'"),
            ("{'descr': '<f4', 'shape': (2, 3), }", "no 'fortran_order'"),
            // A substring-matching reader let a decoy in another key pass its check.
            ("{'descr': '<f8', 'x': \"'descr': '<f4'\", 'fortran_order': False, 'shape': (2, 3), }", "unexpected key"),
            ("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", "twice"),
            ("{'descr': '<f4' 'fortran_order': False, 'shape': (2, 3), }", "separated"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)} trailing", "after"),
            ("'descr': '<f4'", "start"),
        ];
        for (header, says) in cases {
            let err = from_bytes::<f32>(&npy_v1(header, &data)).expect_err(header);
            assert!(err.to_string().contains(says), "{header}: {err}");
        }
        // A header length past the end of the file, and one over the limit.
        let mut lying = npy_v1(GOOD_2X3, &data);
        lying[8..10].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(matches!(
            from_bytes::<f32>(&lying),
            Err(NpyError::Truncated { .. })
        ));
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&[2, 0]);
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            from_bytes::<f32>(&huge),
            Err(NpyError::HeaderTooLong(n)) if n == u64::from(u32::MAX)
        ));
        let mut v9 = npy_v1(GOOD_2X3, &data);
        v9[6] = 9;
        assert!(matches!(
            from_bytes::<f32>(&v9),
            Err(NpyError::Version(9, 0))
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any bytes at all: an error or a consistent array, never a panic.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(v) = from_bytes::<f32>(&bytes) {
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
            if let Ok(v) = from_bytes::<f32>(&bytes) {
                prop_assert_eq!(v.rows * v.cols, v.data.len());
            }
        }
    }
}
