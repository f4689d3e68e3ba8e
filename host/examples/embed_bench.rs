//! Embedding throughput, native against sandboxed, back to back in one process:
//! `make component`, then `cargo run --release -p srvdb-host --example embed_bench -- MODEL_DIR
//! SENTENCES.txt`. Each side embeds every line of the file, best of 3 runs after a warm-up:
//! the built-in embedder on every core, then the same code inside the WASI component (one
//! thread). `tests/text_reference.py --bench` times sentence-transformers on the same file.

use srvdb::embed::{Embed, Embedder};
use srvdb_host::sandbox::SandboxConfig;
use srvdb_host::Sandbox;
use std::time::Instant;

type AnyError = Box<dyn std::error::Error>;

/// Seconds and sentences per second: the best of 3 runs over all of `sentences`, after a
/// warm-up.
fn throughput(
    sentences: &[&str],
    embed: impl Fn(&[&str]) -> Result<Vec<f32>, AnyError>,
) -> Result<(f64, f64), AnyError> {
    embed(&sentences[..sentences.len().min(64)])?;
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let start = Instant::now();
        std::hint::black_box(embed(sentences)?);
        best = best.min(start.elapsed().as_secs_f64());
    }
    Ok((best, sentences.len() as f64 / best))
}

fn main() -> Result<(), AnyError> {
    let mut args = std::env::args().skip(1);
    let (Some(model), Some(file)) = (args.next(), args.next()) else {
        return Err("usage: embed_bench MODEL_DIR SENTENCES.txt".into());
    };
    let text = std::fs::read_to_string(&file)?;
    let sentences: Vec<&str> = text.lines().collect();
    let n = sentences.len();

    let start = Instant::now();
    let native = Embedder::from_dir(&model)?;
    println!(
        "native: {} loaded in {:.2} s",
        native.name(),
        start.elapsed().as_secs_f64()
    );
    let (secs, native_rate) = throughput(&sentences, |s| Ok(native.embed(s)?))?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "srvdb native ({threads} threads available): {n} sentences in {secs:.2} s = {native_rate:.1} sentences/s (best of 3, batch {})",
        srvdb::embed::BATCH_SIZE
    );
    drop(native);

    let config = SandboxConfig::new();
    let size = std::fs::metadata(&config.component)?.len();
    let start = Instant::now();
    let sandbox = Sandbox::new(config.clone())?;
    let compiled = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let sandboxed = sandbox.load_embedder(&model, "all-MiniLM-L6-v2")?;
    println!(
        "component {} ({size} bytes): compiled or loaded from the cache in {compiled:.2} s, model loaded in the guest in {:.2} s",
        config.component.display(),
        start.elapsed().as_secs_f64()
    );
    let (secs, sandboxed_rate) = throughput(&sentences, |s| Ok(sandboxed.embed(s)?))?;
    println!(
        "srvdb component (wasmtime, 1 thread): {n} sentences in {secs:.2} s = {sandboxed_rate:.1} sentences/s (best of 3) = {:.2}x native",
        sandboxed_rate / native_rate
    );
    Ok(())
}
