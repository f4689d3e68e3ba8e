//! Embedding throughput inside the sandbox: `make component`, then `cargo run --release -p
//! srvdb-host --example sandbox_embed_bench -- MODEL_DIR SENTENCES.txt`. The same measurement as srvdb's `embed_bench` example (best of 3
//! after a warm-up, every line of the file), with the model and the embedder inside the WASI
//! component (one thread), so the two figures compare directly.

use srvdb_host::sandbox::SandboxConfig;
use srvdb_host::Sandbox;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(model), Some(file)) = (args.next(), args.next()) else {
        return Err("usage: sandbox_embed_bench MODEL_DIR SENTENCES.txt".into());
    };
    let config = SandboxConfig::new();
    let size = std::fs::metadata(&config.component)?.len();
    let start = Instant::now();
    let sandbox = Sandbox::new(config.clone())?;
    let compiled = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let embedder = sandbox.load_embedder(&model, "all-MiniLM-L6-v2")?;
    println!(
        "component {} ({size} bytes): compiled/loaded in {compiled:.2} s, model loaded in the guest in {:.2} s",
        config.component.display(),
        start.elapsed().as_secs_f64()
    );
    let text = std::fs::read_to_string(&file)?;
    let sentences: Vec<&str> = text.lines().collect();
    embedder.embed(&sentences[..sentences.len().min(64)])?; // warm-up
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let start = Instant::now();
        let vectors = embedder.embed(&sentences)?;
        best = best.min(start.elapsed().as_secs_f64());
        std::hint::black_box(vectors);
    }
    println!(
        "srvdb component (wasmtime, 1 thread): {} sentences in {best:.2} s = {:.1} sentences/s (best of 3)",
        sentences.len(),
        sentences.len() as f64 / best
    );
    Ok(())
}
