//! Embedding throughput of the built-in embedder: `cargo run --release --features text
//! --example embed_bench -- MODEL_DIR SENTENCES.txt` embeds every line of the file (best of 3
//! runs after a warm-up) and prints sentences per second. `tests/text_reference.py --bench`
//! times sentence-transformers on the same file, and `sandbox_embed_bench` (srvdb-host) the component.

use srvdb::embed::Embedder;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(model), Some(file)) = (args.next(), args.next()) else {
        return Err("usage: embed_bench MODEL_DIR SENTENCES.txt".into());
    };
    let start = Instant::now();
    let embedder = Embedder::from_dir(&model)?;
    println!(
        "loaded {} in {:.2} s",
        embedder.name(),
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
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "srvdb native (candle, {threads} threads available): {} sentences in {best:.2} s = {:.1} sentences/s (best of 3, batch {})",
        sentences.len(),
        sentences.len() as f64 / best,
        srvdb::embed::BATCH_SIZE
    );
    Ok(())
}
