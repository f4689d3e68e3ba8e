//! The HNSW graph is as durable as the rows: a reopen loads the committed links unchanged, a
//! failure at any write of its life cycle (simulated power loss, process kill, torn
//! write-back) recovers exactly the last committed graph or the one whose commit was in
//! flight (never a torn mixture), and SIGKILL at random moments during a build or inserts
//! leaves a graph that covers exactly the committed rows.
//!
//! Answers are checked against a brute force in f64 over the test's own model of the live
//! rows; links against the links the engine reported when the state was committed.

mod common;
use common::{reference_score, seed, tempdir, Rng};
use srvdb::hnsw::Entry;
use srvdb::quant::{HnswParams, IndexKind, IndexSpec, Quantization};
use srvdb::storage::sim::{Crash, FaultPlan, SimLocation, TornUnit};
use srvdb::{Database, Metric, OpenOptions, Query, StorageKind, Store};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// The graph as committed: node count, entry point, and every node's links as stored.
type Links = (u64, Option<Entry>, Vec<Vec<u8>>);

/// The graph the handle holds (as loaded on open or committed since).
fn links(db: &Database) -> Option<Links> {
    db.hnsw_links_for_test()
}

fn options(metric: Metric) -> OpenOptions {
    OpenOptions {
        metric: Some(metric),
        auto_commit_rows: 0,
        storage: StorageKind::Mmap,
        ..OpenOptions::default()
    }
}

/// Row numbers of the k best of `live` (id, vector) for `q` by the f64 reference.
fn brute_top<'a>(
    metric: Metric,
    q: &[f32],
    live: &'a BTreeMap<String, Vec<f32>>,
    k: usize,
) -> Vec<&'a str> {
    let mut scored: Vec<(f64, &str)> = live
        .iter()
        .map(|(id, v)| {
            let s = reference_score(metric, q, v);
            (if metric.higher_is_better() { s } else { -s }, id.as_str())
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    scored.into_iter().take(k).map(|(_, id)| id).collect()
}

/// Recall@k of the database's default search against the brute force over `live`; every hit
/// must be live and carry its reference score.
fn recall_over(
    db: &Database,
    metric: Metric,
    queries: &[f32],
    dim: usize,
    live: &BTreeMap<String, Vec<f32>>,
    k: usize,
) -> Result<f64, String> {
    let found = db
        .query(&Query::batch(queries, k))
        .map_err(|e| format!("search: {e}"))?;
    let (mut hits, mut total) = (0, 0);
    for (q, got) in queries.chunks_exact(dim).zip(&found) {
        let want = brute_top(metric, q, live, k);
        total += want.len();
        for hit in got {
            let Some(v) = live.get(&hit.id) else {
                return Err(format!("{} is not live", hit.id));
            };
            let score = reference_score(metric, q, v);
            if (f64::from(hit.score) - score).abs() > 1e-4 * score.abs().max(1.0) {
                return Err(format!(
                    "{}: score {} vs reference {score}",
                    hit.id, hit.score
                ));
            }
            hits += usize::from(want.contains(&hit.id.as_str()));
        }
    }
    Ok(hits as f64 / total.max(1) as f64)
}

/// The top hit of every live row's own vector is that row (cosine and L2: nothing is closer
/// to a vector than itself).
fn every_row_finds_itself(
    db: &Database,
    dim: usize,
    live: &BTreeMap<String, Vec<f32>>,
) -> Result<(), String> {
    let ids: Vec<&String> = live.keys().collect();
    let vectors: Vec<f32> = live.values().flatten().copied().collect();
    for (chunk, vs) in ids.chunks(256).zip(vectors.chunks(256 * dim)) {
        let found = db
            .query(&Query::batch(vs, 1))
            .map_err(|e| format!("search: {e}"))?;
        for (id, hits) in chunk.iter().zip(&found) {
            if hits.first().map(|h| h.id.as_str()) != Some(id.as_str()) {
                return Err(format!("{id} is not its own vector's top hit: {hits:?}"));
            }
        }
    }
    Ok(())
}

// ---- reopen without a crash ----

/// A reopened database loads the committed graph: the same links, the same entry, the same
/// answers; rows added after the reopen join it, and survive the next reopen too.
#[test]
fn reopen_loads_the_committed_links_and_answers_alike() {
    let (n, dim, k) = (3_000, 32, 10);
    let mut rng = Rng::new(seed() ^ 0x4E0);
    let data = rng.vectors(n + 300, dim);
    let queries = rng.vectors(20, dim);
    for quantization in [None, Some(Quantization::Int8)] {
        let ctx = format!("{quantization:?}");
        let dir = tempdir();
        let db = Database::open(dir.path(), options(Metric::Cosine)).expect("open");
        let ids: Vec<String> = (0..n + 300).map(|i| format!("id-{i}")).collect();
        db.add(&ids[..n], &data[..n * dim], &[]).expect("add");
        let params = HnswParams {
            m: 10,
            ef_construction: 64,
        };
        db.create_index(&IndexSpec::hnsw(quantization).with_hnsw(params))
            .expect("create_index");
        // Inserts after the build, one of them a single row, and deletes.
        db.add(&ids[n..n + 1], &data[n * dim..(n + 1) * dim], &[])
            .expect("add one");
        db.add(
            &ids[n + 1..n + 200],
            &data[(n + 1) * dim..(n + 200) * dim],
            &[],
        )
        .expect("add");
        db.delete(&ids[..30]).expect("delete");
        db.persist().expect("persist");
        let before = links(&db).expect("an hnsw index has links");
        assert_eq!(before.0, (n + 200) as u64, "{ctx}: one node per row");
        assert_eq!(before.2.len(), n + 200, "{ctx}: links of every node");
        let info = db.index_info().expect("info");
        let answers = db.query(&Query::batch(&queries, k)).expect("search");
        drop(db);

        let db = Database::open(dir.path(), options(Metric::Cosine)).expect("reopen");
        assert_eq!(
            links(&db),
            Some(before),
            "{ctx}: the reopened graph is the committed one"
        );
        assert_eq!(db.index_info().expect("info"), info, "{ctx}");
        assert_eq!(
            db.query(&Query::batch(&queries, k)).expect("search"),
            answers,
            "{ctx}: answers after the reopen"
        );

        db.add(&ids[n + 200..], &data[(n + 200) * dim..], &[])
            .expect("add");
        db.persist().expect("persist");
        let grown = links(&db).expect("links");
        assert_eq!(grown.0, (n + 300) as u64, "{ctx}");
        let answers = db.query(&Query::batch(&queries, k)).expect("search");
        drop(db);
        let db = Database::open(dir.path(), options(Metric::Cosine)).expect("reopen");
        assert_eq!(links(&db), Some(grown), "{ctx}: second reopen");
        assert_eq!(
            db.query(&Query::batch(&queries, k)).expect("search"),
            answers,
            "{ctx}"
        );
        let live: BTreeMap<String, Vec<f32>> = (30..n + 300)
            .map(|i| (ids[i].clone(), data[i * dim..(i + 1) * dim].to_vec()))
            .collect();
        every_row_finds_itself(&db, dim, &live).unwrap_or_else(|e| panic!("{ctx}: {e}"));
        let r = recall_over(&db, Metric::Cosine, &queries, dim, &live, k)
            .unwrap_or_else(|e| panic!("{ctx}: {e}"));
        assert!(r >= 0.99, "{ctx}: recall@{k} {r} after reopening");
    }
}

// ---- the simulated crash sweep ----

const SWEEP_DIM: usize = 8;
const SWEEP_METRIC: Metric = Metric::L2;

fn sweep_vector(s: u64, i: usize) -> Vec<f32> {
    Rng::new(s ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A)).vectors(1, SWEEP_DIM)
}

fn sweep_options() -> OpenOptions {
    OpenOptions {
        metric: Some(SWEEP_METRIC),
        auto_commit_rows: 0,
        buffer_bytes: 4096,
        ..OpenOptions::default()
    }
}

/// What one acknowledged step left: the rows appended so far (deleted and replaced ones
/// included: the graph's nodes), the live records, the index, and the graph as the handle
/// held it once the step's commit returned.
#[derive(Debug, Clone, PartialEq)]
struct SweepState {
    rows: u64,
    live: BTreeMap<String, Vec<f32>>,
    index: Option<(IndexKind, Option<Quantization>)>,
    links: Option<Links>,
}

impl SweepState {
    /// The same rows, records and index (graphs differ between runs: each build draws its
    /// own seed for the layers).
    fn same_data(&self, other: &SweepState) -> bool {
        (self.rows, &self.live, self.index) == (other.rows, &other.live, other.index)
    }
}

/// A run of the workload: the states acknowledged after each step, and the step that failed
/// (its commit point may have passed) as far as the handle saw it.
struct SweepRun {
    states: Vec<SweepState>,
    in_flight: Option<InFlight>,
}

/// The step that failed: the state it would have committed, with the graph the handle held
/// after the failure. Rows are inserted into the graph as they are appended, so after an
/// insert that graph is the one the commit carried; a build publishes its graph only after
/// its commit, so after a failed build the graph the commit may have carried is not known.
struct InFlight {
    after: SweepState,
    builds: bool,
}

enum Step {
    Upsert(Vec<usize>),
    Delete(&'static str),
    Create(Option<Quantization>),
}

/// Adds rows, builds a graph over them, inserts batches (one of a single row), upserts,
/// deletes, replaces the index with one traversing on int8 codes and inserts again; every
/// step ends with a commit. Stops at the first error.
fn sweep_workload(loc: Arc<SimLocation>, s: u64) -> SweepRun {
    let mut run = SweepRun {
        states: vec![SweepState {
            rows: 0,
            live: BTreeMap::new(),
            index: None,
            links: None,
        }],
        in_flight: None,
    };
    let Ok(db) = Database::open_at(loc, sweep_options()) else {
        return run;
    };
    let params = HnswParams {
        m: 4,
        ef_construction: 16,
    };
    let steps: Vec<Vec<Step>> = vec![
        vec![Step::Upsert((0..40).collect())],
        vec![Step::Create(None)],
        vec![Step::Upsert((40..65).collect())],
        vec![Step::Upsert(vec![65])],
        vec![Step::Upsert(vec![3, 66, 67]), Step::Delete("k10")],
        vec![Step::Create(Some(Quantization::Int8))],
        vec![Step::Upsert((68..80).collect())],
    ];
    for step in steps {
        let mut next = run.states.last().expect("a state").clone();
        for part in &step {
            match part {
                Step::Upsert(range) => {
                    next.rows += range.len() as u64;
                    for &i in range {
                        next.live.insert(format!("k{i}"), sweep_vector(s, i));
                    }
                }
                Step::Delete(id) => {
                    next.live.remove(*id);
                }
                Step::Create(quantization) => next.index = Some((IndexKind::Hnsw, *quantization)),
            }
        }
        let result = (|| -> srvdb::Result<()> {
            for part in &step {
                match part {
                    Step::Upsert(range) => {
                        let ids: Vec<String> = range.iter().map(|i| format!("k{i}")).collect();
                        let v: Vec<f32> = range.iter().flat_map(|&i| sweep_vector(s, i)).collect();
                        db.upsert(&ids, &v, &[])?;
                    }
                    Step::Delete(id) => {
                        db.delete(&[*id])?;
                    }
                    Step::Create(quantization) => {
                        db.create_index(&IndexSpec::hnsw(*quantization).with_hnsw(params))?;
                    }
                }
            }
            db.persist()
        })();
        next.links = links(&db);
        if result.is_err() {
            let builds = step.iter().any(|p| matches!(p, Step::Create(_)));
            run.in_flight = Some(InFlight {
                after: next,
                builds,
            });
            return run;
        }
        run.states.push(next);
    }
    run
}

/// The index `db` reports, as a sweep state records it.
fn index_of(db: &Database) -> Result<Option<(IndexKind, Option<Quantization>)>, String> {
    let info = db.index_info().map_err(|e| e.to_string())?;
    Ok((info.kind == IndexKind::Hnsw).then_some((info.kind, info.quantization)))
}

/// Reopens `image` of `run`: it must hold the last acknowledged state or the one in flight
/// exactly (records, index, graph; after a failed build, a graph of the new index whose
/// links the handle never saw, returned so the caller can check every image of the run
/// recovered the same one), cover exactly its rows, answer searches over them, and keep the
/// graph in step with a write made after recovery across another power cut.
fn check_sweep_image(
    image: Arc<SimLocation>,
    run: &SweepRun,
    s: u64,
) -> Result<Option<Links>, String> {
    let db =
        Database::open_at(image.clone(), sweep_options()).map_err(|e| format!("reopen: {e}"))?;
    let ids: HashSet<String> = db.ids().into_iter().collect();
    let index = index_of(&db)?;
    let got = links(&db);
    let acked = run.states.last().expect("a state");
    let matches_data =
        |a: &SweepState| a.live.keys().cloned().collect::<HashSet<_>>() == ids && a.index == index;
    let mut unseen_build = None;
    let state = if matches_data(acked) && acked.links == got {
        acked
    } else {
        match &run.in_flight {
            Some(f) if matches_data(&f.after) && f.after.links == got => &f.after,
            Some(f)
                if f.builds && matches_data(&f.after) && got.is_some() && got != acked.links =>
            {
                unseen_build = got.clone();
                &f.after
            }
            _ => {
                let nodes = got.as_ref().map(|l| l.0);
                return Err(format!(
                    "recovered {} records, index {index:?}, a graph of {nodes:?} nodes: neither \
                     the acknowledged state ({} records, {:?}, {:?} nodes) nor the one in flight \
                     ({:?}), or the same data with other links",
                    ids.len(),
                    acked.live.len(),
                    acked.index,
                    acked.links.as_ref().map(|l| l.0),
                    run.in_flight.as_ref().map(|f| (
                        f.after.live.len(),
                        f.after.index,
                        f.after.links.as_ref().map(|l| l.0)
                    )),
                ));
            }
        }
    };
    if let Some((nodes, entry, node_links)) = &got {
        if *nodes != state.rows || node_links.len() as u64 != state.rows {
            return Err(format!(
                "a graph of {nodes} nodes ({} link lists) over {} committed rows",
                node_links.len(),
                state.rows
            ));
        }
        if !entry.is_some_and(|e| u64::from(e.node) < state.rows) {
            return Err(format!("entry {entry:?} for {} rows", state.rows));
        }
        let info = db.index_info().map_err(|e| e.to_string())?;
        if info.rows != state.rows {
            return Err(format!(
                "index_info covers {} rows, {} committed",
                info.rows, state.rows
            ));
        }
    }
    if !state.live.is_empty() {
        let queries: Vec<f32> = (0..6)
            .flat_map(|i| sweep_vector(s ^ 0x9, 1000 + i))
            .collect();
        let r = recall_over(&db, SWEEP_METRIC, &queries, SWEEP_DIM, &state.live, 5)?;
        if r < 0.95 {
            return Err(format!("recall@5 {r} over the recovered rows"));
        }
        every_row_finds_itself(&db, SWEEP_DIM, &state.live)?;
    }
    db.upsert(&["after"], &sweep_vector(s, 999), &[])
        .and_then(|()| db.persist())
        .map_err(|e| format!("write after recovery: {e}"))?;
    let written = links(&db);
    drop(db);
    let again = Database::open_at(
        Arc::new(image.image_after(Crash::PowerLoss)),
        sweep_options(),
    )
    .map_err(|e| format!("recovered, wrote, power cut: reopen: {e}"))?;
    if !again.contains("after") || index_of(&again)? != index {
        return Err(format!(
            "recovered, wrote, power cut: write kept {}, index {:?} (was {index:?})",
            again.contains("after"),
            index_of(&again)?
        ));
    }
    let after = links(&again);
    if after != written {
        return Err("recovered, wrote, power cut: the graph is not the one committed".into());
    }
    if let Some((nodes, ..)) = after {
        if nodes != state.rows + 1 {
            return Err(format!(
                "recovered, wrote, power cut: {nodes} nodes for {} rows",
                state.rows + 1
            ));
        }
    }
    Ok(unseen_build)
}

#[test]
fn a_failure_at_every_write_of_build_and_inserts_recovers_a_committed_graph() {
    let s = seed();
    let dry = Arc::new(SimLocation::with_faults(Arc::new(FaultPlan::never())));
    let clean = sweep_workload(dry.clone(), s);
    assert!(
        clean.in_flight.is_none(),
        "the workload completes without faults"
    );
    let last = clean.states.last().expect("states");
    assert_eq!(
        last.links.as_ref().map(|l| l.0),
        Some(last.rows),
        "the clean run's graph"
    );
    let total = dry.faults().ops();
    // Every write point while the sweep stays short; evenly sampled past 600.
    let stride = (total / 600).max(1);
    let mut violations = Vec::new();
    let (mut images, mut unseen_builds) = (0, 0);
    for n in (1..=total).step_by(stride as usize) {
        let faults = Arc::new(FaultPlan::never());
        faults.fail_after(n);
        let loc = Arc::new(SimLocation::with_faults(faults.clone()));
        let run = sweep_workload(loc.clone(), s);
        assert!(faults.has_failed(), "fault {n} never fired");
        let done = run.states.len() - 1;
        assert!(
            run.states
                .iter()
                .zip(&clean.states)
                .all(|(a, b)| a.same_data(b)),
            "fault {n}: the run acknowledged other data than the clean run"
        );
        let op = faults.failed_op().unwrap_or("?");
        let file = faults.failed_file().unwrap_or_default();
        let mut build_seen: Option<Links> = None;
        for crash in [
            Crash::PowerLoss,
            Crash::ProcessKill,
            Crash::Torn {
                seed: s ^ n as u64,
                unit: TornUnit::Pages(512),
            },
            Crash::Torn {
                seed: s ^ n as u64,
                unit: TornUnit::Writes,
            },
        ] {
            images += 1;
            let context = format!(
                "fault at op {n} ({op} {file}, step {}), {crash:?}",
                done + 1
            );
            match check_sweep_image(Arc::new(loc.image_after(crash)), &run, s) {
                Err(e) => violations.push(format!("{context}: {e} (seed {s})")),
                Ok(Some(build)) => {
                    unseen_builds += 1;
                    // One build was committed, or none: every image that has it has it whole.
                    if build_seen.get_or_insert_with(|| build.clone()) != &build {
                        violations.push(format!("{context}: another graph than another image of this run recovered (seed {s})"));
                    }
                }
                Ok(None) => {}
            }
        }
    }
    eprintln!(
        "{total} write points (every {stride}th tried), {images} crash images \
         ({unseen_builds} recovered a build whose commit failed), {} violations",
        violations.len()
    );
    assert!(
        violations.is_empty(),
        "{} of {images} images wrong; first ones:\n{}",
        violations.len(),
        violations[..violations.len().min(10)].join("\n")
    );
}

// ---- SIGKILL at random moments ----

const KILL_DIM: usize = 24;
/// The first commit: enough rows that the graph's build takes a while to kill it in.
const KILL_FIRST: usize = 4_000;
const KILL_BATCH: usize = 150;

fn kill_vector(i: usize) -> Vec<f32> {
    Rng::new((i as u64).wrapping_mul(0x9E37_79B9) ^ 0x4A5C).vectors(1, KILL_DIM)
}

/// Rows of commit `c` (1-based): the first is large, the rest are batches.
fn kill_rows(c: usize) -> std::ops::Range<usize> {
    if c == 1 {
        0..KILL_FIRST
    } else {
        let start = KILL_FIRST + (c - 2) * KILL_BATCH;
        start..start + KILL_BATCH
    }
}

/// The child: commits the first rows, builds the graph if there is none, then inserts
/// batches (every fourth a single row) and commits, forever.
fn kill_child(dir: &str, start: usize) {
    let db = Database::open(dir, options(Metric::Cosine)).expect("child open");
    let mut c = start;
    loop {
        c += 1;
        let mut rows = kill_rows(c);
        if c.is_multiple_of(4) {
            rows.end = rows.start + 1;
        }
        let ids: Vec<String> = rows.clone().map(|i| format!("id-{i}")).collect();
        let v: Vec<f32> = rows.flat_map(kill_vector).collect();
        db.add(&ids, &v, &[]).expect("child add");
        db.persist().expect("child persist");
        if db.index_info().expect("info").kind != IndexKind::Hnsw {
            db.create_index(&IndexSpec::hnsw(None))
                .expect("child create_index");
        }
        println!("committed {c}");
    }
}

#[test]
fn sigkill_during_build_and_inserts_leaves_the_committed_graph() {
    if let Ok(dir) = std::env::var("SRVDB_HNSW_CRASH_CHILD") {
        let start = std::env::var("SRVDB_HNSW_CRASH_START")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        kill_child(&dir, start);
        return;
    }
    const KILLS: usize = 10;
    let dir = tempdir();
    let dir_str = dir.path().to_str().expect("utf-8 path").to_owned();
    let mut rng = Rng::new(seed());
    let mut committed = 0usize;
    let mut with_index = 0;
    for kill in 0..KILLS {
        let acked = common::run_and_kill(
            "sigkill_during_build_and_inserts_leaves_the_committed_graph",
            &[
                ("SRVDB_HNSW_CRASH_CHILD", dir_str.clone()),
                ("SRVDB_HNSW_CRASH_START", committed.to_string()),
            ],
            committed,
            &mut rng,
            400_000,
        );
        let db = Database::open(dir.path(), options(Metric::Cosine))
            .unwrap_or_else(|e| panic!("kill {kill}: reopen failed: {e}"));
        let ctx = format!("kill {kill} (seed {})", seed());
        // The child never deletes or repeats an id: one row per live record.
        let count = db.count();
        let info = db.index_info().expect("info");
        if info.kind == IndexKind::Hnsw {
            with_index += 1;
            assert_eq!(info.rows, count, "{ctx}: index_info's rows");
            let (nodes, entry, node_links) = links(&db).expect("an hnsw index has links");
            assert_eq!(nodes, count, "{ctx}: graph nodes vs committed rows");
            assert_eq!(
                node_links.len() as u64,
                count,
                "{ctx}: link lists vs committed rows"
            );
            assert!(
                entry.is_some_and(|e| u64::from(e.node) < count),
                "{ctx}: entry {entry:?}"
            );
        }
        let live: BTreeMap<String, Vec<f32>> = db
            .ids()
            .into_iter()
            .map(|id| {
                let i: usize = id
                    .strip_prefix("id-")
                    .and_then(|n| n.parse().ok())
                    .expect("an id of the child's");
                (id, kill_vector(i))
            })
            .collect();
        every_row_finds_itself(&db, KILL_DIM, &live).unwrap_or_else(|e| panic!("{ctx}: {e}"));
        // The child continues after the last commit the database holds.
        let last = live
            .keys()
            .filter_map(|id| id.strip_prefix("id-")?.parse::<usize>().ok())
            .max();
        committed = match last {
            None => 0,
            Some(i) if i < KILL_FIRST => 1,
            Some(i) => (i - KILL_FIRST) / KILL_BATCH + 2,
        };
        assert!(
            committed >= acked,
            "{ctx}: commit {acked} was acknowledged but only {committed} survived"
        );
        let want: usize = (1..=committed)
            .map(|c| {
                if c.is_multiple_of(4) {
                    1
                } else {
                    kill_rows(c).len()
                }
            })
            .sum();
        assert_eq!(
            count as usize, want,
            "{ctx}: records after {committed} commits"
        );
        drop(db);
    }
    eprintln!("{KILLS} kills, {committed} commits, {with_index} reopened with a graph");
    assert!(committed > 0, "the child never committed");
    assert!(with_index > 0, "no kill landed after the graph existed");
}
