//! `srvdb-host`: the SrvDB command line, with the engine running inside the wasmtime sandbox.
//!
//! ```text
//! srvdb-host info DB
//! srvdb-host ingest DB FILE [--dim D] [--batch N]    FILE: .npy (float32, 2-D) or raw f32 (needs --dim)
//! srvdb-host search DB (--query 0.1,0.2,... | --query-file Q.npy [--row R]) [-k K]
//! srvdb-host compact DB
//! srvdb-host add-text DB FILE [--model M] [--batch N]  FILE: UTF-8, one document per line
//! srvdb-host query DB TEXT [-k K] [--model M]
//! ```
//! `add-text` and `query` embed inside the sandbox too, so they need a component built with the
//! embedder (`make component`). `--model` is a model name in the cache (`SRVDB_MODEL_DIR`,
//! default `all-MiniLM-L6-v2`) or a sentence-transformers folder; the sandbox sees it read-only.
//! Common flags: `--component PATH` (default: `SRVDB_COMPONENT` or the `make component` output),
//! `--memory-mib N` (the guest's memory cap), `--fuel N` (fuel per call), `--deadline-secs S`
//! (wall-clock time per call before it is stopped; default 60, 0 for none).

mod npy;

use srvdb::embed::locate;
use srvdb::{OpenOptions, Store};
use srvdb_host::sandbox::SandboxConfig;
use srvdb_host::{Sandbox, SandboxedEmbedder};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

type AnyError = Box<dyn std::error::Error>;

const USAGE: &str = "usage:
  srvdb-host info DB
  srvdb-host ingest DB FILE [--dim D] [--batch N]
  srvdb-host search DB (--query 0.1,0.2,... | --query-file Q.npy [--row R]) [-k K]
  srvdb-host compact DB
  srvdb-host add-text DB FILE [--model M] [--batch N]
  srvdb-host query DB TEXT [-k K] [--model M]
flags: --component PATH  --memory-mib N  --fuel N  --deadline-secs S (0: none)";

struct Args {
    positional: Vec<String>,
    flags: std::collections::HashMap<String, String>,
}

fn parse(args: impl Iterator<Item = String>) -> Result<Args, AnyError> {
    let mut positional = Vec::new();
    let mut flags = std::collections::HashMap::new();
    let mut it = args.peekable();
    while let Some(a) = it.next() {
        if let Some(name) = a
            .strip_prefix("--")
            .or_else(|| a.strip_prefix('-').filter(|s| s.len() == 1))
        {
            let value = it
                .next()
                .ok_or_else(|| format!("flag {a} needs a value\n{USAGE}"))?;
            flags.insert(name.to_owned(), value);
        } else {
            positional.push(a);
        }
    }
    Ok(Args { positional, flags })
}

impl Args {
    fn flag<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, AnyError> {
        match self.flags.get(name) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| format!("bad value for --{name}: {v:?}").into()),
        }
    }
}

/// Reads a little-endian float32 NumPy array (1-D or 2-D): (rows, cols, data). See [`npy`]:
/// nothing in the file is trusted.
fn read_npy(path: &std::path::Path) -> Result<(usize, usize, Vec<f32>), AnyError> {
    let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let v = npy::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((v.rows, v.cols, v.data))
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

/// Redraws the progress bar on stderr: `done` of `total` `unit`.
fn progress(done: usize, total: usize, unit: &str) {
    let pct = done * 100 / total.max(1);
    let bar = "#".repeat(pct / 4);
    eprint!("\r[{bar:<25}] {pct:>3}%  {done}/{total} {unit}");
    let _ = std::io::stderr().flush();
}

fn sandbox(args: &Args) -> Result<Sandbox, AnyError> {
    let mut config = SandboxConfig::new();
    if let Some(p) = args.flag::<PathBuf>("component")? {
        config.component = p;
    }
    if let Some(mib) = args.flag::<usize>("memory-mib")? {
        config.memory_limit_bytes = mib
            .checked_mul(1 << 20)
            .ok_or_else(|| format!("--memory-mib {mib} is too large"))?;
    }
    config.fuel_per_call = args.flag("fuel")?;
    if let Some(secs) = args.flag::<f64>("deadline-secs")? {
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

/// Loads the embedder named by `--model` (default all-MiniLM-L6-v2) inside its own sandbox.
fn embedder(sb: &Sandbox, args: &Args) -> Result<SandboxedEmbedder, AnyError> {
    let model = args
        .flags
        .get("model")
        .map_or(locate::DEFAULT_MODEL, String::as_str);
    let (dir, name) = locate::resolve(model)?;
    Ok(sb.load_embedder(dir, &name)?)
}

/// The first `chars` characters of `text` on one line.
fn one_line(text: &str, chars: usize) -> String {
    cut(
        &text.split_whitespace().collect::<Vec<_>>().join(" "),
        chars,
    )
}

fn run() -> Result<(), AnyError> {
    let args = parse(std::env::args().skip(1))?;
    let (Some(cmd), Some(db_path)) = (args.positional.first(), args.positional.get(1)) else {
        return Err(USAGE.into());
    };
    let sb = sandbox(&args)?;
    match cmd.as_str() {
        "info" => {
            let db = sb.open(db_path, OpenOptions::default())?;
            let dim = db
                .dimension()?
                .map_or("not fixed yet".to_owned(), |d| d.to_string());
            println!("database  {db_path}");
            println!("records   {}", db.count()?);
            println!("dimension {dim}");
            println!("metric    {}", db.metric()?);
            println!("kernel    {} (inside the sandbox)", db.kernel()?);
            db.close()?;
        }
        "ingest" => {
            let file = PathBuf::from(args.positional.get(2).ok_or(USAGE)?);
            let batch: usize = args.flag("batch")?.unwrap_or(5000);
            let (rows, dim, data) = if file.extension().is_some_and(|e| e == "npy") {
                read_npy(&file)?
            } else {
                let dim: usize = args.flag("dim")?.ok_or("raw f32 input needs --dim")?;
                let bytes =
                    std::fs::read(&file).map_err(|e| format!("reading {}: {e}", file.display()))?;
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
                (floats.len() / dim, dim, floats)
            };
            if let Some(d) = args.flag::<usize>("dim")? {
                if d != dim {
                    return Err(format!("--dim {d} but the file holds {dim}-d vectors").into());
                }
            }
            let db = sb.open(db_path, OpenOptions::default())?;
            let first = db.count()? as usize;
            let started = Instant::now();
            let mut done = 0;
            while done < rows {
                let n = batch.min(rows - done);
                let ids: Vec<String> = (first + done..first + done + n)
                    .map(|i| i.to_string())
                    .collect();
                db.add(&ids, &data[done * dim..(done + n) * dim], &[])?;
                done += n;
                progress(done, rows, "vectors");
            }
            db.persist()?;
            let secs = started.elapsed().as_secs_f64();
            eprintln!();
            println!("ingested {rows} x {dim} in {secs:.2} s ({:.0} vectors/s), durable; ids {first}..{}", rows as f64 / secs.max(1e-9), first + rows);
            db.close()?;
        }
        "search" => {
            let k: usize = args.flag("k")?.unwrap_or(10);
            let query: Vec<f32> = if let Some(q) = args.flags.get("query") {
                q.split(',')
                    .map(|x| x.trim().parse::<f32>())
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("bad --query: {e}"))?
            } else if let Some(f) = args.flags.get("query-file") {
                let (rows, dim, data) = read_npy(std::path::Path::new(f))?;
                let row: usize = args.flag("row")?.unwrap_or(0);
                if row >= rows {
                    return Err(format!("--row {row} but {f} has {rows} rows").into());
                }
                data[row * dim..(row + 1) * dim].to_vec()
            } else {
                return Err(format!("search needs --query or --query-file\n{USAGE}").into());
            };
            let db = sb.open(db_path, OpenOptions::default())?;
            let started = Instant::now();
            let hits = db.search(&query, k)?;
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
        "add-text" => {
            let file = PathBuf::from(args.positional.get(2).ok_or(USAGE)?);
            let batch: usize = args.flag("batch")?.unwrap_or(256).max(1);
            let text = std::fs::read_to_string(&file)
                .map_err(|e| format!("reading {} (UTF-8 text expected): {e}", file.display()))?;
            let docs: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            let loading = Instant::now();
            let embedder = embedder(&sb, &args)?;
            let spec = embedder.spec().clone();
            let db = sb.open(db_path, OpenOptions::default().with_embedder(spec.clone()))?;
            let first = db.count()? as usize;
            eprintln!(
                "{spec} loaded in the sandbox in {:.2} s; embedding {} documents",
                loading.elapsed().as_secs_f64(),
                docs.len()
            );
            let started = Instant::now();
            for (i, chunk) in docs.chunks(batch).enumerate() {
                let at = first + i * batch;
                let ids: Vec<String> = (at..at + chunk.len()).map(|i| i.to_string()).collect();
                let vectors = embedder.embed(chunk)?;
                let ids = srvdb::store::str_refs(&ids);
                let documents: Vec<Option<&str>> = chunk.iter().copied().map(Some).collect();
                db.write(&srvdb::Write::add(&ids, &vectors).documents(&documents))?;
                progress(i * batch + chunk.len(), docs.len(), "documents");
            }
            db.persist()?;
            let secs = started.elapsed().as_secs_f64();
            eprintln!();
            println!(
                "embedded and stored {} documents with {spec} in {secs:.2} s ({:.1} documents/s, sandboxed), durable; ids {first}..{}",
                docs.len(),
                docs.len() as f64 / secs.max(1e-9),
                first + docs.len()
            );
            db.close()?;
        }
        "query" => {
            let text = args.positional.get(2).ok_or(USAGE)?;
            let k: usize = args.flag("k")?.unwrap_or(10);
            let embedder = embedder(&sb, &args)?;
            let db = sb.open(
                db_path,
                OpenOptions::default().with_embedder(embedder.spec().clone()),
            )?;
            let started = Instant::now();
            let query = embedder.embed(&[text])?;
            let hits = db.search(&query, k)?;
            let ms = started.elapsed().as_secs_f64() * 1e3;
            let ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
            let documents = db.documents(&ids)?;
            for (rank, (h, doc)) in hits.iter().zip(&documents).enumerate() {
                let doc = doc.as_deref().map_or(String::new(), |d| one_line(d, 80));
                println!("{:>3}  {:<12} {:.4}  {doc}", rank + 1, h.id, h.score);
            }
            eprintln!(
                "{} hits in {ms:.2} ms, embedding included (sandboxed)",
                hits.len()
            );
            db.close()?;
        }
        "compact" => {
            let db = sb.open(db_path, OpenOptions::default())?;
            let before = db.count()?;
            db.compact()?;
            println!("compacted {db_path}: {before} live records kept");
            db.close()?;
        }
        other => return Err(format!("unknown command {other:?}\n{USAGE}").into()),
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("srvdb-host: {e}");
            ExitCode::FAILURE
        }
    }
}
