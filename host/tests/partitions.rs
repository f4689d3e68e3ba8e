//! Parallel sandboxed search: concurrent single queries coalesced into guest batch calls, and
//! (with partitions) batches split by row range across guest instances. Every answer is
//! checked against brute force computed here: ids in order, scores within 1e-5.

mod common;

use srvdb::store::{Delete, Query, Write, WriteMode};
use srvdb::{Filter, Metadata, Metric, OpenOptions, SearchHit, Store};
use srvdb_host::sandbox::SandboxConfig;
use srvdb_host::{Sandbox, SandboxedDatabase};
use std::sync::Arc;

const DIM: usize = 48;

/// Rows `r{i}` with metadata `{"g": i % 3}`.
fn fill(db: &SandboxedDatabase, data: &[f32]) {
    let n = data.len() / DIM;
    let ids: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let metas: Vec<Option<Metadata>> = (0..n)
        .map(|i| Some(Metadata::from_text(format!("{{\"g\": {}}}", i % 3))))
        .collect();
    db.write(&Write::new(WriteMode::Add, &id_refs, data).metadatas(&metas))
        .expect("write");
}

fn check(
    label: &str,
    got: &[SearchHit],
    data: &[f32],
    query: &[f32],
    k: usize,
    allowed: impl Fn(usize) -> bool,
) {
    let want = common::brute_force(Metric::Cosine, data, DIM, query, k, allowed);
    let got_ids: Vec<&str> = got.iter().map(|h| h.id.as_str()).collect();
    let want_ids: Vec<String> = want.iter().map(|(r, _)| format!("r{r}")).collect();
    assert_eq!(
        got_ids,
        want_ids,
        "{label}: ids (seed {})",
        srvdb::testing::seed()
    );
    for (h, (_, score)) in got.iter().zip(&want) {
        assert!(
            (f64::from(h.score) - score).abs() < 1e-5,
            "{label}: {} scored {} against {score}",
            h.id,
            h.score
        );
    }
}

fn open(config: SandboxConfig, dir: &std::path::Path) -> SandboxedDatabase {
    Sandbox::new(config)
        .expect("sandbox")
        .open(dir, OpenOptions::default())
        .expect("open")
}

/// Deletes every seventh row; returns which rows are live.
fn delete_some(db: &SandboxedDatabase, n: usize) -> Vec<bool> {
    let gone: Vec<String> = (0..n).step_by(7).map(|i| format!("r{i}")).collect();
    let refs: Vec<&str> = gone.iter().map(String::as_str).collect();
    db.remove(&Delete::ids(&refs)).expect("remove");
    (0..n).map(|i| i % 7 != 0).collect()
}

/// 16 threads, each asking 6 single queries at once (k = 10), with or without the filter
/// `g == 1`: every answer is brute force's.
fn sixteen_callers(db: &Arc<SandboxedDatabase>, data: &Arc<Vec<f32>>, live: &Arc<Vec<bool>>) {
    let queries = Arc::new(srvdb::testing::Rng::new(srvdb::testing::seed() ^ 77).vectors(96, DIM));
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let (db, data, live, queries) =
                (db.clone(), data.clone(), live.clone(), queries.clone());
            std::thread::spawn(move || {
                let filter = Filter::parse(Some(r#"{"g": 1}"#), None).expect("filter");
                for j in 0..6 {
                    let i = t * 6 + j;
                    let q = &queries[i * DIM..(i + 1) * DIM];
                    let filtered = i % 2 == 1;
                    let mut request = Query::one(q, 10);
                    if filtered {
                        request = request.filter(&filter);
                    }
                    let got = db.query(&request).expect("query");
                    check(
                        &format!("caller {t} query {j}"),
                        &got[0],
                        &data,
                        q,
                        10,
                        |r| live[r] && (!filtered || r % 3 == 1),
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("caller");
    }
}

#[test]
fn concurrent_single_queries_are_coalesced_and_exact() {
    let dir = tempfile::tempdir().expect("tmp");
    let n = 3000;
    let data = srvdb::testing::Rng::new(srvdb::testing::seed()).vectors(n, DIM);
    let db = open(common::component_config(), dir.path());
    fill(&db, &data);
    let live = delete_some(&db, n);
    db.persist().expect("persist");
    let (db, data, live) = (Arc::new(db), Arc::new(data), Arc::new(live));
    sixteen_callers(&db, &data, &live);
    let stats = db.coalesce_stats().expect("stats");
    assert_eq!(stats.queries, 96);
    eprintln!("96 single queries, {} guest scans", stats.scans);
}

/// A query of the wrong dimension fails alone, whatever group it joined: the others answer.
#[test]
fn a_bad_query_fails_alone() {
    let dir = tempfile::tempdir().expect("tmp");
    let n = 2000;
    let data = Arc::new(srvdb::testing::Rng::new(srvdb::testing::seed()).vectors(n, DIM));
    let db = Arc::new(open(common::component_config(), dir.path()));
    fill(&db, &data);
    let threads: Vec<_> = (0..12)
        .map(|t| {
            let (db, data) = (db.clone(), data.clone());
            std::thread::spawn(move || {
                for j in 0..4 {
                    let row = (t * 4 + j) * 13;
                    let q = &data[row * DIM..(row + 1) * DIM];
                    if t % 4 == 3 {
                        let err = db
                            .query(&Query::one(&q[..DIM - 1], 5))
                            .expect_err("bad dim");
                        assert!(
                            matches!(err, srvdb::Error::DimensionMismatch { .. }),
                            "{err}"
                        );
                    } else {
                        let got = db.query(&Query::one(q, 5)).expect("query");
                        check("good query", &got[0], &data, q, 5, |_| true);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("caller");
    }
}
