//! The values users pass in and get back: metrics, options, hits, records, metadata.

use crate::error::{Error, Result};

/// How two vectors are compared. Fixed when a database is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Metric {
    /// Cosine similarity in `[-1, 1]`; higher is better. Row norms are stored at insert.
    #[default]
    Cosine,
    /// Inner product; higher is better.
    Dot,
    /// Squared Euclidean distance; lower is better.
    L2,
}

impl Metric {
    pub(crate) fn code(self) -> u8 {
        match self {
            Metric::Cosine => 1,
            Metric::Dot => 2,
            Metric::L2 => 3,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Metric::Cosine),
            2 => Some(Metric::Dot),
            3 => Some(Metric::L2),
            _ => None,
        }
    }

    /// The lowercase name used in the WIT interface and the Python API.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::Dot => "dot",
            Metric::L2 => "l2",
        }
    }

    /// True when a larger score is a better match.
    pub fn higher_is_better(self) -> bool {
        !matches!(self, Metric::L2)
    }
}

impl std::str::FromStr for Metric {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "cosine" | "cos" => Ok(Metric::Cosine),
            "dot" | "ip" | "inner" => Ok(Metric::Dot),
            "l2" | "euclidean" => Ok(Metric::L2),
            other => Err(Error::invalid(format!(
                "unknown metric {other:?}: use \"cosine\", \"dot\" or \"l2\""
            ))),
        }
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where the rows of `vectors.bin` are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StorageKind {
    /// Memory-mapped `vectors.bin` (native default): zero-copy reads, page cache shared.
    #[cfg_attr(not(target_arch = "wasm32"), default)]
    Mmap,
    /// Plain `std::fs` I/O with the rows cached in memory (the WASI backend; works natively too).
    #[cfg_attr(target_arch = "wasm32", default)]
    File,
    /// Plain `std::fs` I/O with nothing of the rows kept in memory: rows are read from the
    /// file when a search needs them. For a database larger than memory (the sandbox's linear
    /// memory is at most 4 GiB): give it a quantized index, so a search reads codes from memory
    /// and only its candidates' rows from the file.
    OnDemand,
}

/// Default write buffer: rows are written to `vectors.bin` in slabs of this many bytes.
pub const DEFAULT_BUFFER_BYTES: usize = 8 << 20;
/// Default number of uncommitted vectors after which `add` commits by itself.
pub const DEFAULT_AUTO_COMMIT_ROWS: usize = 1000;
/// Longest id accepted, in UTF-8 bytes.
pub const MAX_ID_BYTES: usize = 1024;
/// Largest metadata accepted per record, in UTF-8 bytes (16 MiB).
pub const MAX_METADATA_BYTES: usize = 16 << 20;
/// Largest document accepted per record, in UTF-8 bytes (64 MiB).
pub const MAX_DOCUMENT_BYTES: usize = 64 << 20;
/// Largest dimension accepted.
pub const MAX_DIMENSION: u32 = 65_536;

/// How to open or create a database.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// The dimension, if known up front; otherwise fixed by the first `add`.
    /// Must match an existing database's.
    pub dimension: Option<u32>,
    /// Metric for a new database; an existing database must have been created with the same
    /// one if this is `Some`.
    pub metric: Option<Metric>,
    /// Storage backend for `vectors.bin`.
    pub storage: StorageKind,
    /// Write-buffer size in bytes (`SRVDB_BUFFER_SIZE`).
    pub buffer_bytes: usize,
    /// Commit automatically once this many inserts and deletes are uncommitted
    /// (`SRVDB_AUTO_FLUSH_THRESHOLD`); 0 disables auto-commit.
    pub auto_commit_rows: usize,
    /// Answer concurrent `search` calls on one handle together, with one batch scan per round
    /// (on by default; off only to measure what it saves).
    pub coalesce_searches: bool,
    /// The text embedder the caller will use with this database. A new database records it;
    /// an existing one must have been created with the same name and dimension
    /// ([`crate::Error::EmbedderMismatch`] otherwise), so vectors of two models never mix.
    pub embedder: Option<EmbedderSpec>,
    /// Open an existing database for reading only: any number of readers, in any processes,
    /// each serving the last commit as of its open. The open is refused while a writer holds
    /// the directory, and takes a shared lock that keeps writers out only while it reads; the
    /// reader then holds a private copy of `metadata.db` in memory, and its rows mapped, so a
    /// writer may open, commit and close beside it (`Database::reopened` reads the newer
    /// commit). Nothing on disk is created or changed: a missing database, or one whose last
    /// writer did not close cleanly, is refused with an error that says to open it once for
    /// writing. Every write returns [`crate::Error::ReadOnly`].
    pub read_only: bool,
}

/// The identity of a text embedder as the database records it: vectors from models with
/// different names are not comparable, even at the same dimension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbedderSpec {
    /// The model's name, e.g. `all-MiniLM-L6-v2`.
    pub name: String,
    /// The dimension of its vectors.
    pub dimension: u32,
}

impl std::fmt::Display for EmbedderSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (dimension {})", self.name, self.dimension)
    }
}

impl Default for OpenOptions {
    /// Defaults, with `SRVDB_BUFFER_SIZE` and `SRVDB_AUTO_FLUSH_THRESHOLD` read from the
    /// environment when set to a number (or the original SrvDB's `SVDB_` names for either).
    fn default() -> Self {
        OpenOptions {
            dimension: None,
            metric: None,
            storage: StorageKind::default(),
            buffer_bytes: env_usize(BUFFER_SIZE_VARS).unwrap_or(DEFAULT_BUFFER_BYTES),
            auto_commit_rows: env_usize(AUTO_FLUSH_THRESHOLD_VARS)
                .unwrap_or(DEFAULT_AUTO_COMMIT_ROWS),
            coalesce_searches: true,
            embedder: None,
            read_only: false,
        }
    }
}

impl OpenOptions {
    /// Options with a fixed dimension.
    pub fn with_dimension(mut self, dimension: u32) -> Self {
        self.dimension = Some(dimension);
        self
    }

    /// Options with a metric.
    pub fn with_metric(mut self, metric: Metric) -> Self {
        self.metric = Some(metric);
        self
    }

    /// Options recording (or checking) the text embedder; also fixes the dimension.
    pub fn with_embedder(mut self, embedder: EmbedderSpec) -> Self {
        self.dimension = Some(embedder.dimension);
        self.embedder = Some(embedder);
        self
    }

    /// Options with a storage backend.
    pub fn with_storage(mut self, storage: StorageKind) -> Self {
        self.storage = storage;
        self
    }

    /// Options for a read-only open (see [`OpenOptions::read_only`]).
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// The options an open uses: the embedder's dimension filled in, then the dimension
    /// checked. Opens run this before they create anything, so options it refuses leave no
    /// directory and no `LOCK` behind.
    pub fn validated(mut self) -> Result<Self> {
        if let Some(embedder) = &self.embedder {
            match self.dimension {
                None => self.dimension = Some(embedder.dimension),
                Some(d) if d != embedder.dimension => {
                    return Err(Error::invalid(format!(
                        "dimension {d} given with embedder {embedder}: give no dimension, or the embedder's"
                    )))
                }
                Some(_) => {}
            }
        }
        if let Some(dim) = self.dimension {
            check_dimension(dim as usize)?;
        }
        Ok(self)
    }
}

/// Refuses a dimension outside `1..=MAX_DIMENSION` (an open's, or a first batch's).
pub(crate) fn check_dimension(dim: usize) -> Result<()> {
    if dim == 0 || dim > MAX_DIMENSION as usize {
        return Err(Error::invalid(format!(
            "dimension {dim} is out of range 1..={MAX_DIMENSION}"
        )));
    }
    Ok(())
}

/// The variables that set `OpenOptions::buffer_bytes`, in the order they are read: SrvDB's own
/// name, then the one the original SrvDB read (still honoured, so existing settings keep working).
const BUFFER_SIZE_VARS: &[&str] = &["SRVDB_BUFFER_SIZE", "SVDB_BUFFER_SIZE"];
/// The same for `OpenOptions::auto_commit_rows`.
const AUTO_FLUSH_THRESHOLD_VARS: &[&str] =
    &["SRVDB_AUTO_FLUSH_THRESHOLD", "SVDB_AUTO_FLUSH_THRESHOLD"];

/// The first of `names` set in the environment to a number; a value that is not a number is
/// ignored, as if unset.
fn env_usize(names: &[&str]) -> Option<usize> {
    first_usize(names, |name| std::env::var(name).ok())
}

/// [`env_usize`] over any `lookup` (a variable's name to its value), so tests need not touch
/// the process-wide environment.
fn first_usize(names: &[&str], lookup: impl Fn(&str) -> Option<String>) -> Option<usize> {
    names
        .iter()
        .find_map(|name| lookup(name)?.trim().parse().ok())
}

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    /// The record's id.
    pub id: String,
    /// Cosine similarity, inner product, or squared L2 distance, per the metric.
    pub score: f32,
}

/// Metadata as stored: the exact text given, and whether it was valid JSON.
///
/// Text that parses as JSON is kept verbatim (so `get` returns the same string); any other text
/// is kept as a JSON string value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Metadata {
    /// Valid JSON text, stored verbatim.
    Json(String),
    /// Plain text that is not JSON; as JSON it is a string value.
    Text(String),
}

impl Metadata {
    /// Classifies `text`: JSON if it parses, plain text otherwise.
    pub fn from_text(text: impl Into<String>) -> Self {
        let text = text.into();
        if serde_json::from_str::<serde_json::Value>(&text).is_ok() {
            Metadata::Json(text)
        } else {
            Metadata::Text(text)
        }
    }

    /// The exact string that was stored.
    pub fn as_str(&self) -> &str {
        match self {
            Metadata::Json(s) | Metadata::Text(s) => s,
        }
    }

    /// The metadata as a JSON value (plain text becomes a JSON string).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Metadata::Json(s) => {
                serde_json::from_str(s).unwrap_or_else(|_| serde_json::Value::String(s.clone()))
            }
            Metadata::Text(s) => serde_json::Value::String(s.clone()),
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let (tag, s) = match self {
            Metadata::Json(s) => (b'j', s),
            Metadata::Text(s) => (b't', s),
        };
        let mut out = Vec::with_capacity(s.len() + 1);
        out.push(tag);
        out.extend_from_slice(s.as_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let (tag, rest) = bytes.split_first()?;
        let text = std::str::from_utf8(rest).ok()?.to_owned();
        match tag {
            b'j' => Some(Metadata::Json(text)),
            b't' => Some(Metadata::Text(text)),
            _ => None,
        }
    }
}

impl From<serde_json::Value> for Metadata {
    fn from(value: serde_json::Value) -> Self {
        Metadata::Json(value.to_string())
    }
}

impl From<&str> for Metadata {
    fn from(text: &str) -> Self {
        Metadata::from_text(text)
    }
}

impl From<String> for Metadata {
    fn from(text: String) -> Self {
        Metadata::from_text(text)
    }
}

/// A stored record, as `get` returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The id.
    pub id: String,
    /// The vector exactly as given.
    pub vector: Vec<f32>,
    /// Its metadata, if any was given.
    pub metadata: Option<Metadata>,
    /// The text the vector was embedded from, if it was stored with it.
    pub document: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::{first_usize, AUTO_FLUSH_THRESHOLD_VARS, BUFFER_SIZE_VARS};

    /// A lookup over a fixed list of variables, standing in for the environment.
    fn lookup<'a>(vars: &'a [(&str, &str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    /// Issue 14 renamed the variables to the `SRVDB_` prefix; a user of the original SrvDB
    /// who set `SVDB_AUTO_FLUSH_THRESHOLD=0` must not silently get auto-commits back.
    #[test]
    fn settings_read_the_srvdb_names_first_and_the_original_svdb_names_as_fallback() {
        let both = [("SRVDB_BUFFER_SIZE", "4096"), ("SVDB_BUFFER_SIZE", "512")];
        assert_eq!(first_usize(BUFFER_SIZE_VARS, lookup(&both)), Some(4096));
        let old_only = [("SVDB_AUTO_FLUSH_THRESHOLD", " 0 ")];
        assert_eq!(
            first_usize(AUTO_FLUSH_THRESHOLD_VARS, lookup(&old_only)),
            Some(0)
        );
        let new_not_a_number = [("SRVDB_BUFFER_SIZE", "8 MiB"), ("SVDB_BUFFER_SIZE", "512")];
        assert_eq!(
            first_usize(BUFFER_SIZE_VARS, lookup(&new_not_a_number)),
            Some(512)
        );
        assert_eq!(
            first_usize(BUFFER_SIZE_VARS, lookup(&[("SRVDB_BUFFER_SIZE", "-1")])),
            None
        );
        assert_eq!(first_usize(BUFFER_SIZE_VARS, lookup(&[])), None);
    }
}
