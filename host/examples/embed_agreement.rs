//! Agreement of the built-in embedder with sentence-transformers on a data set of sentences
//! and their reference vectors: `cargo run --release -p srvdb-host --example embed_agreement --
//! MODEL_DIR DATA_DIR [LIMIT]`, where DATA_DIR holds `base.txt` (one sentence a line) and
//! `base.npy` (row i: sentence-transformers' vector of line i). Prints the minimum and mean
//! cosine over the first LIMIT sentences (all by default), and the embedding rate.

use srvdb::embed::Embedder;
use std::path::Path;
use std::time::Instant;

type AnyError = Box<dyn std::error::Error>;

fn main() -> Result<(), AnyError> {
    let mut args = std::env::args().skip(1);
    let (Some(model), Some(data)) = (args.next(), args.next()) else {
        return Err("usage: embed_agreement MODEL_DIR DATA_DIR [LIMIT]".into());
    };
    let limit: Option<usize> = args.next().map(|s| s.parse()).transpose()?;
    let data = Path::new(&data);
    let text = std::fs::read_to_string(data.join("base.txt"))?;
    let mut sentences: Vec<&str> = text.lines().collect();
    if let Some(limit) = limit {
        sentences.truncate(limit);
    }
    let reference = srvdb::npy::read::<f32>(&data.join("base.npy"))?;
    if reference.rows < sentences.len() {
        return Err("base.npy has fewer rows than base.txt has lines".into());
    }
    let embedder = Embedder::from_dir(&model)?;
    let dim = embedder.dimension() as usize;
    let start = Instant::now();
    let vectors = embedder.embed(&sentences)?;
    let secs = start.elapsed().as_secs_f64();
    let (mut min, mut total, mut at) = (f64::INFINITY, 0.0, 0);
    for (i, v) in vectors.chunks_exact(dim).enumerate() {
        let r = reference.row(i).ok_or("short base.npy")?;
        let dot: f64 = v
            .iter()
            .zip(r)
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum();
        let na: f64 = v.iter().map(|a| f64::from(*a).powi(2)).sum::<f64>().sqrt();
        let nb: f64 = r.iter().map(|b| f64::from(*b).powi(2)).sum::<f64>().sqrt();
        let cos = dot / (na * nb);
        if cos < min {
            (min, at) = (cos, i);
        }
        total += cos;
    }
    let n = sentences.len();
    println!(
        "{n} sentences in {secs:.1} s ({:.1}/s): cosine to the reference min {min:.8} (line {}), mean {:.8}",
        n as f64 / secs,
        at + 1,
        total / n as f64
    );
    Ok(())
}
