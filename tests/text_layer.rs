//! The text layer (`srvdb::text::TextDatabase`) that the CLI, Python and Rust share, with no
//! model: a hash embedder stands in, so what is checked is the layer's own logic (embed,
//! write with documents, query, documents back), against a brute-force reference computed
//! from the same hash vectors. Also its contracts: one answer list per text, progress after
//! every chunk up to the total, and a bad batch refused before any embedding, writing nothing.

use srvdb::embed::Embed;
use srvdb::store::WriteMode;
use srvdb::text::{TextDatabase, EMBED_CHUNK};
use srvdb::{EmbedderSpec, Error, OpenOptions, Store};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const DIM: usize = 8;
const SEED: u64 = 0x5eed_7e27;

/// Unit vectors from an FNV-1a hash of the text, and a log of how many texts each call got.
struct HashEmbedder {
    calls: Mutex<Vec<usize>>,
}

impl HashEmbedder {
    fn new() -> Arc<Self> {
        Arc::new(HashEmbedder {
            calls: Mutex::new(Vec::new()),
        })
    }

    fn calls(&self) -> Vec<usize> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn hash_vector(text: &str) -> Vec<f32> {
    let mut state = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64 ^ SEED, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let mut v: Vec<f32> = (0..DIM)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

impl Embed for HashEmbedder {
    fn spec(&self) -> EmbedderSpec {
        EmbedderSpec {
            name: "hash-8".into(),
            dimension: DIM as u32,
        }
    }

    fn embed(&self, texts: &[&str]) -> srvdb::Result<Vec<f32>> {
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(texts.len());
        Ok(texts.iter().flat_map(|t| hash_vector(t)).collect())
    }
}

fn open(dir: &std::path::Path, embedder: Arc<HashEmbedder>) -> TextDatabase {
    TextDatabase::open(dir, embedder, OpenOptions::default()).expect("open")
}

#[test]
fn queries_rank_as_brute_force_and_return_the_documents() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path(), HashEmbedder::new());
    let docs: Vec<String> = (0..300).map(|i| format!("document number {i}")).collect();
    let ids: Vec<String> = (0..docs.len()).map(|i| format!("d{i}")).collect();
    db.add(&ids, &docs, &[]).expect("add");
    // Upserting replaces the vector and the document.
    db.upsert(&["d7"], &["a replaced document"], &[])
        .expect("upsert");
    let mut model: HashMap<&str, &str> = ids
        .iter()
        .map(String::as_str)
        .zip(docs.iter().map(String::as_str))
        .collect();
    model.insert("d7", "a replaced document");

    let questions = [
        "document number 12",
        "something else",
        "a replaced document",
    ];
    let k = 5;
    let found = db.query(&questions, k).expect("query");
    assert_eq!(found.len(), questions.len(), "seed {SEED:#x}");
    for (question, hits) in questions.iter().zip(&found) {
        let q = hash_vector(question);
        let mut want: Vec<(f32, &str)> = model
            .iter()
            .map(|(id, doc)| {
                let v = hash_vector(doc);
                (q.iter().zip(&v).map(|(a, b)| a * b).sum(), *id)
            })
            .collect();
        want.sort_by(|a, b| b.0.total_cmp(&a.0));
        assert_eq!(hits.len(), k, "{question:?}, seed {SEED:#x}");
        for (hit, (score, id)) in hits.iter().zip(&want) {
            assert_eq!(hit.id, *id, "{question:?}, seed {SEED:#x}");
            assert!(
                (hit.score - score).abs() < 1e-5,
                "{question:?}: {hit:?} vs {score}"
            );
            assert_eq!(hit.document.as_deref(), Some(model[id]));
        }
    }
    // An exact text finds itself first.
    assert_eq!(found[0][0].id, "d12");
    assert_eq!(found[2][0].id, "d7");
}

#[test]
fn writes_embed_in_chunks_and_report_each() {
    let dir = tempfile::tempdir().expect("tempdir");
    let embedder = HashEmbedder::new();
    let db = open(dir.path(), embedder.clone());
    let n = 2 * EMBED_CHUNK + 17;
    let docs: Vec<String> = (0..n).map(|i| format!("text {i}")).collect();
    let ids: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    let mut reported = Vec::new();
    db.write_with_progress(WriteMode::Add, &ids, &docs, &[], &mut |done| {
        reported.push(done);
    })
    .expect("write");
    assert_eq!(reported, [EMBED_CHUNK, 2 * EMBED_CHUNK, n]);
    assert_eq!(embedder.calls(), [EMBED_CHUNK, EMBED_CHUNK, 17]);
    assert_eq!(Store::count(db.database()).expect("count"), n as u64);
    // The stored vectors are the embedder's, whatever chunk a text was in.
    let last = Store::get(db.database(), &ids[n - 1])
        .expect("get")
        .expect("stored");
    assert_eq!(last.vector, hash_vector(&docs[n - 1]));
    assert_eq!(last.document.as_deref(), Some(docs[n - 1].as_str()));
}

#[test]
fn a_bad_batch_is_refused_before_embedding_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let embedder = HashEmbedder::new();
    let db = open(dir.path(), embedder.clone());
    match db.add(&["a", "b"], &["only one"], &[]) {
        Err(Error::InvalidInput { reason, .. }) => {
            assert!(reason.contains("1 documents for 2 ids"), "{reason}");
        }
        other => panic!("expected InvalidInput, got {other:?}"),
    }
    assert!(embedder.calls().is_empty(), "embedded a refused batch");
    db.add(&["a"], &["first"], &[]).expect("add");
    // A repeated id rejects the whole batch after embedding: nothing of it is written.
    assert!(db.add(&["b", "a"], &["second", "again"], &[]).is_err());
    assert_eq!(Store::ids(db.database()).expect("ids"), ["a"]);
}

#[test]
fn an_empty_database_answers_one_empty_list_per_text() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path(), HashEmbedder::new());
    let found = db.query(&["one", "two", "three"], 4).expect("query");
    assert_eq!(found, vec![Vec::new(); 3]);
    assert!(db.query::<&str>(&[], 4).expect("no texts").is_empty());
}

/// A filtered text query ranks only the records the filter matches, as brute force over
/// those records does, and one filter applies to every text.
#[test]
fn a_filtered_query_ranks_only_the_matching_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path(), HashEmbedder::new());
    let docs: Vec<String> = (0..40).map(|i| format!("document number {i}")).collect();
    let ids: Vec<String> = (0..40).map(|i| format!("d{i}")).collect();
    let metas: Vec<Option<srvdb::Metadata>> = (0..40)
        .map(|i| {
            Some(srvdb::Metadata::from_text(format!(
                "{{\"even\": {}}}",
                i % 2 == 0
            )))
        })
        .collect();
    db.add(&ids, &docs, &metas).expect("add");
    let filter = srvdb::Filter::parse(Some(r#"{"even": true}"#), None).expect("filter");
    let questions = ["number 3", "document 17"];
    let found = db
        .query_where(&questions, 5, Some(&filter))
        .expect("query_where");
    assert_eq!(found.len(), 2);
    for (question, hits) in questions.iter().zip(&found) {
        let q = hash_vector(question);
        let mut expected: Vec<(f32, usize)> = (0..40)
            .filter(|i| i % 2 == 0)
            .map(|i| {
                let v = hash_vector(&docs[i]);
                (q.iter().zip(&v).map(|(a, b)| a * b).sum::<f32>(), i)
            })
            .collect();
        expected.sort_by(|a, b| b.0.total_cmp(&a.0));
        let want: Vec<String> = expected[..5].iter().map(|&(_, i)| ids[i].clone()).collect();
        let got: Vec<String> = hits.iter().map(|h| h.id.clone()).collect();
        assert_eq!(got, want, "{question}");
        for h in hits {
            let i: usize = h.id[1..].parse().expect("id");
            assert_eq!(h.document.as_deref(), Some(docs[i].as_str()));
        }
    }
}
