//! `srvdb-host`: the SrvDB command line, with the engine running inside the wasmtime sandbox.
//! `srvdb-host --help` lists the commands, `srvdb-host COMMAND --help` their flags.
//!
//! ```text
//! srvdb-host info DB
//! srvdb-host ingest DB FILE [--dim D] [--batch N]    FILE: .npy (float32, 2-D) or raw f32 (needs --dim)
//! srvdb-host search DB (--query 0.1,0.2,... | --query-file Q.npy [--row R]) [-k K]
//!                       [--where JSON] [--where-document JSON] [--oversample N] [--ef N] [--exact]
//! srvdb-host compact DB
//! srvdb-host index create DB [--kind flat|hnsw] [--quantization int8|binary] [--m N] [--ef-construction N]
//! srvdb-host index drop DB
//! srvdb-host index info DB
//! srvdb-host add-text DB FILE [--model M] [--batch N]  FILE: UTF-8, one document per line
//! srvdb-host query DB TEXT [-k K] [--model M] [--oversample N] [--ef N] [--exact]
//! ```
//! `index create` (flat, the default kind) keeps compressed codes of the vectors (int8: 4x
//! smaller, binary: 32x) that searches scan before rescoring their best `k * oversample`
//! candidates exactly. `--kind hnsw` builds a graph that searches traverse (on int8 codes with
//! `--quantization int8`, else on the f32 vectors), keeping `--ef` candidates, and rescore
//! exactly. `--exact` scans the f32 vectors instead.
//! `add-text` and `query` embed inside the sandbox too, so they need a component built with the
//! embedder (`make component`). `--model` is a model name in the cache (`SRVDB_MODEL_DIR`,
//! default `all-MiniLM-L6-v2`) or a sentence-transformers folder; the sandbox sees it read-only.
//! Flags of every command, before or after it: `--component PATH` (default: `SRVDB_COMPONENT` or
//! the `make component` output), `--memory-mib N` (the guest's memory cap), `--fuel N` (fuel per
//! call), `--deadline-secs S` (wall-clock time per call before it is stopped; default 60, 0 for
//! none), `--quiet` (no progress bars; they are also hidden when stderr is not a terminal).

use clap::builder::TypedValueParser;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use srvdb::embed::{locate, Embed};
use srvdb::quant::index::ScanOptions;
use srvdb::quant::{HnswParams, IndexInfo, IndexKind, IndexSpec, Quantization};
use srvdb::text::TextDatabase;
use srvdb::{npy, OpenOptions, Query, Store};
use srvdb_host::sandbox::SandboxConfig;
use srvdb_host::{Sandbox, SandboxedDatabase};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

type AnyError = Box<dyn std::error::Error>;

/// The SrvDB command line: the engine runs inside the wasmtime sandbox.
#[derive(Parser, Debug)]
#[command(name = "srvdb-host", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    sandbox: SandboxFlags,
    /// No progress bars (they are hidden anyway when stderr is not a terminal).
    #[arg(long, short, global = true)]
    quiet: bool,
}

/// How the sandbox runs: flags every command takes.
#[derive(Args, Debug)]
struct SandboxFlags {
    /// The WASI component (default: SRVDB_COMPONENT, else the `make component` output).
    #[arg(long, global = true, value_name = "PATH")]
    component: Option<PathBuf>,
    /// The guest's memory cap, in MiB.
    #[arg(long, global = true, value_name = "N")]
    memory_mib: Option<usize>,
    /// Fuel (instructions, roughly) per call; unlimited if not given.
    #[arg(long, global = true, value_name = "N")]
    fuel: Option<u64>,
    /// Wall-clock seconds per call before it is stopped (default 60; 0: no deadline).
    #[arg(long, global = true, value_name = "S")]
    deadline_secs: Option<f64>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Record count, dimension, metric and kernel of a database.
    Info {
        /// The database directory.
        db: PathBuf,
    },
    /// Adds vectors from a .npy file (float32, 1-D or 2-D) or raw little-endian f32 (--dim).
    Ingest {
        /// The database directory (created if missing).
        db: PathBuf,
        /// The vectors: a .npy file, or raw f32 with --dim.
        file: PathBuf,
        /// Components per vector: needed for raw f32, checked against a .npy file.
        #[arg(long, value_name = "D")]
        dim: Option<usize>,
        /// Vectors per call into the sandbox.
        #[arg(long, value_name = "N", default_value_t = 5000,
              value_parser = clap::value_parser!(u64).range(1..).map(|n| n as usize))]
        batch: usize,
    },
    /// The k nearest records to one vector.
    Search {
        /// The database directory.
        db: PathBuf,
        #[command(flatten)]
        query: VectorQuery,
        /// Row of --query-file to search with.
        #[arg(long, value_name = "R", requires = "query_file", default_value_t = 0)]
        row: usize,
        /// Hits to return.
        #[arg(short = 'k', long = "k", value_name = "K", default_value_t = 10)]
        k: usize,
        #[command(flatten)]
        filter: FilterFlags,
        #[command(flatten)]
        scan: ScanFlags,
    },
    /// Rewrites the database without its deleted records.
    Compact {
        /// The database directory.
        db: PathBuf,
    },
    /// Embeds and stores a UTF-8 text file, one document per line (needs the embedder).
    AddText {
        /// The database directory (created if missing).
        db: PathBuf,
        /// UTF-8 text, one document per line; blank lines are skipped.
        file: PathBuf,
        #[command(flatten)]
        model: ModelFlag,
        /// Documents per embedding call.
        #[arg(long, value_name = "N", default_value_t = 256,
              value_parser = clap::value_parser!(u64).range(1..).map(|n| n as usize))]
        batch: usize,
    },
    /// The k nearest documents to a text (needs the embedder).
    Query {
        /// The database directory.
        db: PathBuf,
        /// The question or text to search for.
        text: String,
        /// Hits to return.
        #[arg(short = 'k', long = "k", value_name = "K", default_value_t = 10)]
        k: usize,
        #[command(flatten)]
        filter: FilterFlags,
        #[command(flatten)]
        scan: ScanFlags,
        #[command(flatten)]
        model: ModelFlag,
    },
    /// Creates, drops or describes the vector index (compressed codes or an HNSW graph,
    /// rescored exactly).
    Index {
        #[command(subcommand)]
        action: IndexAction,
    },
}

#[derive(Subcommand, Debug)]
enum IndexAction {
    /// Builds a vector index over the vectors present, committed durably and kept in step
    /// with every later write (the same index again is a no-op; another replaces it).
    Create {
        /// The database directory.
        db: PathBuf,
        /// flat (scan compressed codes; needs --quantization) or hnsw (traverse a graph).
        #[arg(long, value_name = "KIND", default_value = "flat", value_parser = parse_kind)]
        kind: IndexKind,
        /// int8 (one byte per component, 4x smaller) or binary (one bit, 32x smaller; flat
        /// only). An hnsw graph without it traverses the f32 vectors.
        #[arg(long, value_name = "Q", value_parser = parse_quantization)]
        quantization: Option<Quantization>,
        /// hnsw: links per node on the upper layers, twice this on the bottom one (default 16).
        #[arg(long, value_name = "N")]
        m: Option<usize>,
        /// hnsw: candidates kept while a node's links are chosen (default 200).
        #[arg(long, value_name = "N")]
        ef_construction: Option<usize>,
    },
    /// Drops the vector index: searches go back to the exact scan.
    Drop {
        /// The database directory.
        db: PathBuf,
    },
    /// What the vector index is and holds.
    Info {
        /// The database directory.
        db: PathBuf,
    },
}

/// `--kind` with the engine's names and message.
fn parse_kind(text: &str) -> Result<IndexKind, String> {
    text.parse().map_err(|e: srvdb::Error| e.to_string())
}

/// `--quantization` with the engine's names and message.
fn parse_quantization(text: &str) -> Result<Quantization, String> {
    text.parse().map_err(|e: srvdb::Error| e.to_string())
}

/// How a search uses the vector index, if there is one.
#[derive(Args, Debug)]
struct ScanFlags {
    /// Candidates kept per hit before exact rescoring (default: the index's, 3 for int8 and
    /// 10 for binary).
    #[arg(long, value_name = "N", conflicts_with = "exact")]
    oversample: Option<usize>,
    /// With an hnsw index: candidates kept during the graph traversal (default 128, raised
    /// to k); more is slower and finds more of the true neighbours.
    #[arg(long, value_name = "N", conflicts_with = "exact")]
    ef: Option<usize>,
    /// Scan the f32 vectors even when there is a vector index.
    #[arg(long)]
    exact: bool,
}

impl ScanFlags {
    fn options(&self) -> ScanOptions {
        ScanOptions {
            oversample: self.oversample,
            exact: self.exact,
            ef: self.ef,
        }
    }
}

/// One line on the vector index, as `info` and `index` print it.
fn describe_index(info: &IndexInfo) -> String {
    let over = match info.quantization {
        Some(q) => format!("{} codes", q.name()),
        None => "f32 vectors".to_owned(),
    };
    match (info.kind, info.hnsw) {
        (IndexKind::Flat, _) if info.quantization.is_none() => {
            format!("{} (exact scan; no index)", info.kind.name())
        }
        (_, Some(p)) => format!(
            "{} over {over} (m {}, ef_construction {}): {} rows, {} bytes",
            info.kind.name(),
            p.m,
            p.ef_construction,
            info.rows,
            info.bytes
        ),
        (_, None) => format!(
            "{} over {over}: {} rows, {} bytes",
            info.kind.name(),
            info.rows,
            info.bytes
        ),
    }
}

/// The vector `search` looks for: given inline or as a row of a .npy file.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
struct VectorQuery {
    /// The query vector, comma-separated: 0.1,-0.2,...
    #[arg(
        long,
        value_name = "V,V,...",
        allow_hyphen_values = true,
        value_delimiter = ','
    )]
    query: Option<Vec<f32>>,
    /// A .npy file (float32) holding the query vector (see --row).
    #[arg(long, value_name = "Q.npy")]
    query_file: Option<PathBuf>,
}

/// A filter on the candidates, in Chroma's dialect (the hits are the k best matching records).
#[derive(Args, Debug)]
struct FilterFlags {
    /// Only records whose JSON metadata matches, e.g. '{"year": {"$gt": 2000}}'.
    #[arg(long = "where", value_name = "JSON")]
    where_: Option<String>,
    /// Only records whose document matches, e.g. '{"$contains": "rust"}'.
    #[arg(long, value_name = "JSON")]
    where_document: Option<String>,
}

impl FilterFlags {
    /// The parsed filter, if either flag was given; a malformed one fails before the database
    /// is opened, naming the offending part.
    fn parse(&self) -> Result<Option<srvdb::Filter>, AnyError> {
        if self.where_.is_none() && self.where_document.is_none() {
            return Ok(None);
        }
        Ok(Some(srvdb::Filter::parse(
            self.where_.as_deref(),
            self.where_document.as_deref(),
        )?))
    }
}

#[derive(Args, Debug)]
struct ModelFlag {
    /// A model name in the model cache (SRVDB_MODEL_DIR) or a sentence-transformers folder.
    #[arg(long, value_name = "M", default_value = locate::DEFAULT_MODEL)]
    model: String,
}

/// Reads a little-endian float32 NumPy array (1-D or 2-D) with [`srvdb::npy`], which trusts
/// nothing in the file; errors name the file.
fn read_npy(path: &Path) -> Result<npy::Matrix<f32>, AnyError> {
    npy::read(path).map_err(|e| format!("{}: {e}", path.display()).into())
}

/// A one-line view of a record's metadata: its "text" field if it has one, else the string.
fn summary(m: &srvdb::Metadata) -> String {
    let text = match m.to_json() {
        serde_json::Value::Object(o) => match o.get("text") {
            Some(serde_json::Value::String(t)) => t.clone(),
            _ => m.as_str().to_owned(),
        },
        _ => m.as_str().to_owned(),
    };
    cut(&text, 80)
}

/// The first `chars` characters of `text`, with an ellipsis if there were more.
fn cut(text: &str, chars: usize) -> String {
    let mut line: String = text.chars().take(chars).collect();
    if text.chars().count() > chars {
        line.push('…');
    }
    line
}

/// A progress bar on stderr for `total` `unit`: hidden with `--quiet`, and by indicatif when
/// stderr is not a terminal (CI logs, pipes), so only a person watching sees it.
fn progress(total: usize, unit: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total as u64);
    let template =
        format!("[{{bar:25}}] {{percent:>3}}%  {{human_pos}}/{{human_len}} {unit}, {{eta}} left");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("#>-"));
    }
    bar
}

/// The sandbox the flags describe.
fn sandbox(flags: &SandboxFlags) -> Result<Sandbox, AnyError> {
    let mut config = SandboxConfig::new();
    if let Some(p) = &flags.component {
        config.component.clone_from(p);
    }
    if let Some(mib) = flags.memory_mib {
        config.memory_limit_bytes = mib
            .checked_mul(1 << 20)
            .ok_or_else(|| format!("--memory-mib {mib} is too large"))?;
    }
    config.fuel_per_call = flags.fuel;
    if let Some(secs) = flags.deadline_secs {
        config.deadline_per_call = if secs == 0.0 {
            None
        } else {
            Some(
                std::time::Duration::try_from_secs_f64(secs)
                    .map_err(|_| format!("bad --deadline-secs {secs}: give seconds, 0 for none"))?,
            )
        };
    }
    Ok(Sandbox::new(config)?)
}

/// The text layer over the database in `db_path` and the embedder named by `--model`, each in
/// its own sandbox. A new database records the embedder; an existing one must have recorded it.
fn text_database(
    sb: &Sandbox,
    db_path: &Path,
    model: &ModelFlag,
) -> Result<TextDatabase<SandboxedDatabase>, AnyError> {
    let (dir, name) = locate::resolve(&model.model)?;
    let embedder = sb.load_embedder(dir, &name)?;
    let db = sb.open(
        db_path,
        OpenOptions::default().with_embedder(embedder.spec()),
    )?;
    Ok(TextDatabase::new(Box::new(db), Arc::new(embedder))?)
}

/// The first `chars` characters of `text` on one line.
fn one_line(text: &str, chars: usize) -> String {
    cut(
        &text.split_whitespace().collect::<Vec<_>>().join(" "),
        chars,
    )
}

/// Reads raw little-endian f32 vectors of `dim` components: (rows, data).
fn read_raw_f32(file: &Path, dim: usize) -> Result<(usize, Vec<f32>), AnyError> {
    let bytes = std::fs::read(file).map_err(|e| format!("reading {}: {e}", file.display()))?;
    let row_bytes = dim.checked_mul(4).filter(|&b| b > 0);
    if row_bytes.is_none_or(|b| bytes.len() % b != 0) {
        return Err(format!(
            "{} bytes is not a whole number of {dim}-d f32 vectors",
            bytes.len()
        )
        .into());
    }
    let floats: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((floats.len() / dim, floats))
}

fn run(cli: Cli) -> Result<(), AnyError> {
    let sb = sandbox(&cli.sandbox)?;
    let quiet = cli.quiet;
    match cli.command {
        Command::Info { db: db_path } => {
            let db = sb.open(&db_path, OpenOptions::default())?;
            let dim = db
                .dimension()?
                .map_or("not fixed yet".to_owned(), |d| d.to_string());
            println!("database  {}", db_path.display());
            println!("records   {}", db.count()?);
            println!("dimension {dim}");
            println!("metric    {}", db.metric()?);
            println!("kernel    {} (inside the sandbox)", db.kernel()?);
            println!("index     {}", describe_index(&db.index_info()?));
            db.close()?;
        }
        Command::Ingest {
            db: db_path,
            file,
            dim: want_dim,
            batch,
        } => {
            let (rows, dim, data) = if file.extension().is_some_and(|e| e == "npy") {
                let m = read_npy(&file)?;
                (m.rows, m.cols, m.data)
            } else {
                let dim = want_dim.ok_or("raw f32 input needs --dim")?;
                let (rows, data) = read_raw_f32(&file, dim)?;
                (rows, dim, data)
            };
            if let Some(d) = want_dim {
                if d != dim {
                    return Err(format!("--dim {d} but the file holds {dim}-d vectors").into());
                }
            }
            let db = sb.open(&db_path, OpenOptions::default())?;
            let first = db.count()? as usize;
            let started = Instant::now();
            let bar = progress(rows, "vectors", quiet);
            let mut done = 0;
            while done < rows {
                let n = batch.min(rows - done);
                let ids: Vec<String> = (first + done..first + done + n)
                    .map(|i| i.to_string())
                    .collect();
                db.add(&ids, &data[done * dim..(done + n) * dim], &[])?;
                done += n;
                bar.inc(n as u64);
            }
            db.persist()?;
            bar.finish_and_clear();
            let secs = started.elapsed().as_secs_f64();
            println!("ingested {rows} x {dim} in {secs:.2} s ({:.0} vectors/s), durable; ids {first}..{}", rows as f64 / secs.max(1e-9), first + rows);
            db.close()?;
        }
        Command::Search {
            db: db_path,
            query,
            row,
            k,
            filter,
            scan,
        } => {
            let filter = filter.parse()?;
            let query: Vec<f32> = match (query.query, query.query_file) {
                (Some(q), _) => q,
                (None, Some(f)) => {
                    let m = read_npy(&f)?;
                    m.row(row)
                        .ok_or_else(|| {
                            format!("--row {row} but {} has {} rows", f.display(), m.rows)
                        })?
                        .to_vec()
                }
                // clap requires exactly one of the two.
                (None, None) => return Err("search needs --query or --query-file".into()),
            };
            let db = sb.open(&db_path, OpenOptions::default())?;
            let started = Instant::now();
            let mut request = Query::one(&query, k).options(scan.options());
            if let Some(filter) = &filter {
                request = request.filter(filter);
            }
            let hits = db.query(&request)?.pop().unwrap_or_default();
            let ms = started.elapsed().as_secs_f64() * 1e3;
            for (rank, h) in hits.iter().enumerate() {
                let meta = db
                    .get(&h.id)?
                    .and_then(|r| r.metadata)
                    .map(|m| summary(&m))
                    .unwrap_or_default();
                println!("{:>3}  {:<12} {:.4}  {meta}", rank + 1, h.id, h.score);
            }
            eprintln!("{} hits in {ms:.2} ms (sandboxed)", hits.len());
            db.close()?;
        }
        Command::AddText {
            db: db_path,
            file,
            model,
            batch,
        } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| format!("reading {} (UTF-8 text expected): {e}", file.display()))?;
            let docs: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            let loading = Instant::now();
            let text = text_database(&sb, &db_path, &model)?;
            let spec = text.embedder().spec();
            let first = text.database().count()? as usize;
            eprintln!(
                "{spec} loaded in the sandbox in {:.2} s; embedding {} documents",
                loading.elapsed().as_secs_f64(),
                docs.len()
            );
            let started = Instant::now();
            let bar = progress(docs.len(), "documents", quiet);
            for (i, chunk) in docs.chunks(batch).enumerate() {
                let at = first + i * batch;
                let ids: Vec<String> = (at..at + chunk.len()).map(|i| i.to_string()).collect();
                text.add(&ids, chunk, &[])?;
                bar.inc(chunk.len() as u64);
            }
            text.database().persist()?;
            bar.finish_and_clear();
            let secs = started.elapsed().as_secs_f64();
            println!(
                "embedded and stored {} documents with {spec} in {secs:.2} s ({:.1} documents/s, sandboxed), durable; ids {first}..{}",
                docs.len(),
                docs.len() as f64 / secs.max(1e-9),
                first + docs.len()
            );
            text.into_database().close()?;
        }
        Command::Query {
            db: db_path,
            text: question,
            k,
            filter,
            scan,
            model,
        } => {
            let filter = filter.parse()?;
            let text = text_database(&sb, &db_path, &model)?;
            let started = Instant::now();
            let hits = text
                .query_with(&[question], k, filter.as_ref(), scan.options())?
                .pop()
                .unwrap_or_default();
            let ms = started.elapsed().as_secs_f64() * 1e3;
            for (rank, h) in hits.iter().enumerate() {
                let doc = h
                    .document
                    .as_deref()
                    .map_or(String::new(), |d| one_line(d, 80));
                println!("{:>3}  {:<12} {:.4}  {doc}", rank + 1, h.id, h.score);
            }
            eprintln!(
                "{} hits in {ms:.2} ms, embedding included (sandboxed)",
                hits.len()
            );
            text.into_database().close()?;
        }
        Command::Index { action } => match action {
            IndexAction::Create {
                db: db_path,
                kind,
                quantization,
                m,
                ef_construction,
            } => {
                let db = sb.open(&db_path, OpenOptions::default())?;
                let started = Instant::now();
                let info = db.create_index(&IndexSpec {
                    kind,
                    quantization,
                    hnsw: HnswParams::given(m, ef_construction),
                })?;
                let secs = started.elapsed().as_secs_f64();
                println!(
                    "index {} (built in {secs:.2} s, durable)",
                    describe_index(&info)
                );
                db.close()?;
            }
            IndexAction::Drop { db: db_path } => {
                let db = sb.open(&db_path, OpenOptions::default())?;
                let dropped = db.drop_index()?;
                println!(
                    "{}",
                    if dropped {
                        "index dropped: searches scan the f32 vectors"
                    } else {
                        "no index to drop"
                    }
                );
                db.close()?;
            }
            IndexAction::Info { db: db_path } => {
                let db = sb.open(&db_path, OpenOptions::default())?;
                println!("index {}", describe_index(&db.index_info()?));
                db.close()?;
            }
        },
        Command::Compact { db: db_path } => {
            let db = sb.open(&db_path, OpenOptions::default())?;
            let before = db.count()?;
            db.compact()?;
            println!(
                "compacted {}: {before} live records kept",
                db_path.display()
            );
            db.close()?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    // Usage errors (an unknown flag, a missing argument) and --help/--version exit here, with
    // clap's message and exit code (2 for errors, 0 for help).
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("srvdb-host: {e}");
            ExitCode::FAILURE
        }
    }
}
