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
    a_bad_query_fails_alone_with(common::component_config());
    // Groups split across partitions too.
    a_bad_query_fails_alone_with(split_config(2));
}

fn a_bad_query_fails_alone_with(config: SandboxConfig) {
    let dir = tempfile::tempdir().expect("tmp");
    let n = 2000;
    let data = Arc::new(srvdb::testing::Rng::new(srvdb::testing::seed()).vectors(n, DIM));
    let db = Arc::new(open(config, dir.path()));
    fill(&db, &data);
    db.persist().expect("persist");
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

/// Partitions on, split at any size.
fn split_config(partitions: usize) -> SandboxConfig {
    SandboxConfig {
        partitions,
        partition_min_bytes: 0,
        ..common::component_config()
    }
}

/// A batch of `queries` (k = `k`, optional filter `g == 1`) checked against brute force.
fn check_batch(
    label: &str,
    db: &SandboxedDatabase,
    data: &[f32],
    queries: &[f32],
    k: usize,
    live: &[bool],
    filtered: bool,
) {
    let filter = Filter::parse(Some(r#"{"g": 1}"#), None).expect("filter");
    let mut request = Query::batch(queries, k);
    if filtered {
        request = request.filter(&filter);
    }
    let got = db.query(&request).expect("batch");
    assert_eq!(got.len(), queries.len() / DIM);
    for (i, hits) in got.iter().enumerate() {
        let q = &queries[i * DIM..(i + 1) * DIM];
        check(&format!("{label} query {i}"), hits, data, q, k, |r| {
            live.get(r).copied().unwrap_or(false) && (!filtered || r % 3 == 1)
        });
    }
}

/// The readers that served: their linear memory is non-zero once they opened.
fn readers_started(db: &SandboxedDatabase) -> usize {
    db.instance_memory()[1..].iter().filter(|&&m| m > 0).count()
}

#[test]
fn split_batches_equal_brute_force_across_partition_sizes() {
    for partitions in [2, 3] {
        for n in [1usize, 2, 3, 5, 64, 257, 1000] {
            let dir = tempfile::tempdir().expect("tmp");
            let mut data =
                srvdb::testing::Rng::new(srvdb::testing::seed() ^ n as u64).vectors(n, DIM);
            // The second half repeats the first: equal scores in different partitions, which
            // the merge must order by row as the whole scan does.
            let half = n / 2;
            let (a, b) = data.split_at_mut(half * DIM);
            b[..half * DIM].copy_from_slice(a);
            let db = open(split_config(partitions), dir.path());
            fill(&db, &data);
            let live = if n > 7 {
                delete_some(&db, n)
            } else {
                vec![true; n]
            };
            db.persist().expect("persist");
            let queries = srvdb::testing::Rng::new(5).vectors(8, DIM);
            let label = format!("{partitions} partitions, {n} rows");
            for k in [1, 10, n + 3] {
                check_batch(&label, &db, &data, &queries, k, &live, false);
                check_batch(&label, &db, &data, &queries, k, &live, true);
            }
            if n >= partitions {
                assert_eq!(
                    readers_started(&db),
                    partitions - 1,
                    "{label}: readers served"
                );
            }
        }
    }
}

#[test]
fn sixteen_callers_over_partitions_equal_brute_force() {
    let dir = tempfile::tempdir().expect("tmp");
    let n = 3000;
    let data = srvdb::testing::Rng::new(srvdb::testing::seed()).vectors(n, DIM);
    let db = open(split_config(2), dir.path());
    fill(&db, &data);
    let live = delete_some(&db, n);
    db.persist().expect("persist");
    let (db, data, live) = (Arc::new(db), Arc::new(data), Arc::new(live));
    sixteen_callers(&db, &data, &live);
    eprintln!(
        "16 callers over 2 partitions: {:?}, memory {:?}",
        db.coalesce_stats(),
        db.instance_memory()
    );
}

/// Writes without a commit: the batch runs on the writer alone and sees them; after the
/// commit the readers reopen and serve the new rows; after a compaction (rows renumbered) too.
#[test]
fn uncommitted_writes_commits_and_compaction() {
    let dir = tempfile::tempdir().expect("tmp");
    let n = 1200;
    let mut data = srvdb::testing::Rng::new(srvdb::testing::seed() ^ 3).vectors(n + 300, DIM);
    let db = open(split_config(2), dir.path());
    fill(&db, &data[..n * DIM]);
    let mut live = delete_some(&db, n);
    db.persist().expect("persist");
    let queries = srvdb::testing::Rng::new(9).vectors(6, DIM);
    check_batch(
        "committed",
        &db,
        &data[..n * DIM],
        &queries,
        10,
        &live,
        false,
    );
    assert_eq!(readers_started(&db), 1);

    // 300 more rows, uncommitted (below the auto-commit threshold), made the best matches of
    // the queries so a stale reader would miss them.
    for (i, q) in queries.chunks_exact(DIM).enumerate() {
        data[(n + i * 50) * DIM..(n + i * 50 + 1) * DIM].copy_from_slice(q);
    }
    let ids: Vec<String> = (n..n + 300).map(|i| format!("r{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let metas: Vec<Option<Metadata>> = (n..n + 300)
        .map(|i| Some(Metadata::from_text(format!("{{\"g\": {}}}", i % 3))))
        .collect();
    db.write(&Write::new(WriteMode::Add, &refs, &data[n * DIM..]).metadatas(&metas))
        .expect("write");
    live.extend(std::iter::repeat_n(true, 300));
    check_batch("uncommitted", &db, &data, &queries, 10, &live, false);
    check_batch("uncommitted", &db, &data, &queries, 10, &live, true);

    db.persist().expect("commit");
    check_batch("after the commit", &db, &data, &queries, 10, &live, false);
    check_batch("after the commit", &db, &data, &queries, 10, &live, true);

    db.compact().expect("compact");
    check_batch("after compaction", &db, &data, &queries, 10, &live, false);
    check_batch("after compaction", &db, &data, &queries, 10, &live, true);
    assert_eq!(readers_started(&db), 1);
}

/// With a quantized index only `exact` batches are split; they equal brute force.
#[test]
fn an_index_keeps_approximate_batches_on_the_writer() {
    let dir = tempfile::tempdir().expect("tmp");
    let n = 1500;
    let data = srvdb::testing::Rng::new(srvdb::testing::seed() ^ 4).vectors(n, DIM);
    let db = open(split_config(2), dir.path());
    fill(&db, &data);
    db.persist().expect("persist");
    db.create_index(&srvdb::quant::IndexSpec::flat(
        srvdb::quant::Quantization::Int8,
    ))
    .expect("index");
    let queries = srvdb::testing::Rng::new(2).vectors(5, DIM);
    let approximate = db.query(&Query::batch(&queries, 10)).expect("batch");
    assert_eq!(approximate.len(), 5);
    assert_eq!(readers_started(&db), 0, "an approximate batch is not split");
    let got = db
        .query(&Query::batch(&queries, 10).exact(true))
        .expect("exact batch");
    for (i, hits) in got.iter().enumerate() {
        let q = &queries[i * DIM..(i + 1) * DIM];
        check("exact over an index", hits, &data, q, 10, |_| true);
    }
    assert_eq!(readers_started(&db), 1);
}

/// A reader that traps mid-batch is dropped and the writer answers alone (the right answer,
/// never a partial one); the reader is reopened at the next batch.
#[test]
fn a_reader_trap_falls_back_to_the_writer() {
    let dir = tempfile::tempdir().expect("tmp");
    let n = 1000;
    let data = srvdb::testing::Rng::new(srvdb::testing::seed() ^ 6).vectors(n, DIM);
    let db = open(split_config(2), dir.path());
    fill(&db, &data);
    let live = delete_some(&db, n);
    db.persist().expect("persist");
    let queries = srvdb::testing::Rng::new(8).vectors(4, DIM);
    check_batch("before", &db, &data, &queries, 10, &live, false);
    assert_eq!(readers_started(&db), 1);
    db.stop_next_reader_call();
    check_batch("reader trapped", &db, &data, &queries, 10, &live, true);
    assert_eq!(readers_started(&db), 0, "the trapped reader is dropped");
    check_batch("after", &db, &data, &queries, 10, &live, false);
    assert_eq!(readers_started(&db), 1, "and reopened at the next batch");
}
