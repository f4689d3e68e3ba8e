//! The quantized index's codes stay right through its whole life: create, add, delete, upsert,
//! update, compaction, reopen, drop, a damaged or foreign `index.codes`, a failure at every
//! mutating step (the simulated crash sweep) and SIGKILL at random moments.
//!
//! "Right" is checked against a reference written here: the codebook's parameters are read
//! from its bytes and every row's code is recomputed with a scalar encoder of this file, from
//! the vectors `get` returns (or the test's own model of every row appended), never from the
//! engine's output.

mod common;
use common::{brute_force, reference_score, seed, tempdir, Rng};
use srvdb::quant::{IndexKind, IndexSpec, Quantization};
use srvdb::storage::sim::{Crash, FaultPlan, SimLocation, TornUnit};
use srvdb::{Database, Error, Metric, OpenOptions, StorageKind, Store, Update};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

const CODES_FILE: &str = "index.codes";

/// A codebook as its bytes say: tag, metric code, dimension, then the f32 parameters.
#[derive(Debug)]
enum Book {
    Int8 {
        cosine: bool,
        offset: Vec<f32>,
        scale: Vec<f32>,
    },
    Binary {
        cosine: bool,
        mean: Vec<f32>,
    },
}

fn parse_book(bytes: &[u8]) -> Book {
    let cosine = bytes[1] == 1;
    let dim = u32::from_le_bytes(bytes[2..6].try_into().unwrap()) as usize;
    let floats: Vec<f32> = bytes[6..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    match bytes[0] {
        1 => Book::Int8 {
            cosine,
            offset: floats[..dim].to_vec(),
            scale: floats[dim..2 * dim].to_vec(),
        },
        2 => Book::Binary {
            cosine,
            mean: floats,
        },
        t => panic!("unknown codebook tag {t}"),
    }
}

impl Book {
    fn code_len(&self) -> usize {
        match self {
            Book::Int8 { offset, .. } => offset.len().div_ceil(4) * 4 + 4,
            Book::Binary { mean, .. } => mean.len().div_ceil(64) * 8,
        }
    }

    /// Compares `got` with the code of `v`, written from the format's definition. Cosine rows
    /// are scaled by a norm the engine computes with its own kernel, so a component within
    /// rounding of a code boundary may land on either side: those are allowed one step.
    fn check(&self, v: &[f32], got: &[u8]) -> Result<(), String> {
        let norm = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt() as f32;
        let unit = |cosine: bool| -> Vec<f32> {
            if cosine && norm > 0.0 {
                v.iter().map(|x| x / norm).collect()
            } else {
                v.to_vec()
            }
        };
        match self {
            Book::Int8 {
                cosine,
                offset,
                scale,
            } => {
                let u = unit(*cosine);
                for d in 0..u.len() {
                    let want = ((u[d] - offset[d]) / scale[d]).round().clamp(-127.0, 127.0) as i32;
                    let have = got[d] as i8 as i32;
                    let slack = if *cosine { 1 } else { 0 };
                    if (want - have).abs() > slack {
                        return Err(format!("component {d}: code {have}, expected {want}"));
                    }
                }
                let pad = u.len().div_ceil(4) * 4;
                if got[u.len()..pad].iter().any(|&b| b != 0) {
                    return Err("padding is not zero".into());
                }
                let norm_sq = f32::from_le_bytes(got[pad..pad + 4].try_into().unwrap());
                let want = norm * norm;
                if (norm_sq - want).abs() > 1e-5 * want.max(1e-6) {
                    return Err(format!("squared norm {norm_sq}, expected {want}"));
                }
            }
            Book::Binary { cosine, mean } => {
                let u = unit(*cosine);
                for (d, (&x, &m)) in u.iter().zip(mean).enumerate() {
                    let bit = got[d / 8] >> (d % 8) & 1 == 1;
                    if bit != (x > m) && !(*cosine && (x - m).abs() < 1e-6) {
                        return Err(format!("bit {d}: {bit}, component {x} vs mean {m}"));
                    }
                }
                for d in u.len()..got.len() * 8 {
                    if got[d / 8] >> (d % 8) & 1 == 1 {
                        return Err(format!("bit {d} past the dimension is set"));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Checks the codes of every live record against its vector from `get`; returns the index's
/// quantization (or `None` when there is no index).
fn check_live_codes(db: &Database) -> Result<Option<Quantization>, String> {
    let info = db.index_info().map_err(|e| e.to_string())?;
    let Some((book, codes, row_ids)) = db.index_codes_for_test() else {
        // An index asked for before the first rows is built with them.
        if info.rows != 0 || (info.quantization.is_some() && db.dimension().is_some()) {
            return Err(format!(
                "index_info reports {info:?} but there are no codes"
            ));
        }
        return Ok(info.quantization);
    };
    let book = parse_book(&book);
    let code_len = book.code_len();
    if codes.len() != row_ids.len() * code_len {
        return Err(format!(
            "{} bytes of codes for {} rows of {code_len}",
            codes.len(),
            row_ids.len()
        ));
    }
    if info.rows != row_ids.len() as u64 {
        return Err(format!(
            "index_info covers {} rows, the database has {}",
            info.rows,
            row_ids.len()
        ));
    }
    // An id's live row is the last row that holds it (upserts and updates append).
    let mut last_row = HashMap::new();
    for (row, id) in row_ids.iter().enumerate() {
        last_row.insert(id.as_str(), row);
    }
    for id in db.ids() {
        let row = last_row[id.as_str()];
        let v = db
            .get(&id)
            .map_err(|e| e.to_string())?
            .expect("live")
            .vector;
        book.check(&v, &codes[row * code_len..(row + 1) * code_len])
            .map_err(|e| format!("row {row} ({id}): {e}"))?;
    }
    Ok(info.quantization)
}

/// Every row's code, deleted rows included, against the test's own list of every row
/// appended (in row order).
fn check_all_codes(db: &Database, rows: &[Vec<f32>]) {
    let (book, codes, row_ids) = db.index_codes_for_test().expect("an index");
    let book = parse_book(&book);
    assert_eq!(row_ids.len(), rows.len(), "rows covered");
    let code_len = book.code_len();
    for (row, v) in rows.iter().enumerate() {
        if let Err(e) = book.check(v, &codes[row * code_len..(row + 1) * code_len]) {
            panic!("row {row}: {e}");
        }
    }
}

/// The int8 codebook trained on `live` rows, computed here: per dimension, the centre and
/// 1/254 of the range of the (unit-length, for cosine) rows.
fn assert_trained_on(db: &Database, live: &[Vec<f32>], cosine: bool) {
    let (book, _, _) = db.index_codes_for_test().expect("an index");
    let Book::Int8 { offset, scale, .. } = parse_book(&book) else {
        panic!("not int8")
    };
    for d in 0..offset.len() {
        let values: Vec<f32> = live
            .iter()
            .map(|v| {
                if cosine {
                    let n = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt() as f32;
                    v[d] / n
                } else {
                    v[d]
                }
            })
            .collect();
        let lo = values.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let tol = if cosine { 1e-5 } else { 0.0 };
        assert!(
            (offset[d] - (hi + lo) / 2.0).abs() <= tol,
            "dimension {d}: offset {} for rows in [{lo}, {hi}]",
            offset[d]
        );
        assert!(
            (scale[d] - (hi - lo) / 254.0).abs() <= tol,
            "dimension {d}: scale {} for rows in [{lo}, {hi}]",
            scale[d]
        );
    }
}

/// Searches answer with exact scores of live records (whatever path ran).
fn check_search(db: &Database, query: &[f32], metric: Metric) {
    let live: HashSet<String> = db.ids().into_iter().collect();
    let hits = db.search(query, 5).expect("search");
    assert_eq!(hits.len(), live.len().min(5), "hits");
    for hit in hits {
        assert!(live.contains(&hit.id), "{} is not live", hit.id);
        let v = db.get(&hit.id).unwrap().unwrap().vector;
        let want = reference_score(metric, query, &v);
        assert!(
            (f64::from(hit.score) - want).abs() <= 1e-4 * want.abs().max(1.0),
            "{}: score {} vs reference {want}",
            hit.id,
            hit.score
        );
    }
}

fn options(metric: Metric) -> OpenOptions {
    stored(metric, StorageKind::Mmap)
}

fn stored(metric: Metric, storage: StorageKind) -> OpenOptions {
    OpenOptions {
        metric: Some(metric),
        auto_commit_rows: 0,
        storage,
        ..OpenOptions::default()
    }
}

#[test]
fn codes_follow_add_delete_upsert_update_compact_and_reopen() {
    // 13 components: int8 codes are padded, binary codes have unused bits.
    const DIM: usize = 13;
    // Mapped rows are encoded in place; rows read from the file on demand are read in runs.
    let storages = [StorageKind::Mmap, StorageKind::OnDemand];
    for (storage, quantization) in storages.into_iter().flat_map(|s| {
        [Quantization::Int8, Quantization::Binary]
            .into_iter()
            .map(move |q| (s, q))
    }) {
        for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
            let options = |metric| stored(metric, storage);
            let ctx = format!("{storage:?} {quantization:?} {metric:?}");
            let dir = tempdir();
            let mut rng = Rng::new(seed());
            let mut rows: Vec<Vec<f32>> = Vec::new();
            let db = Database::open(dir.path(), options(metric)).unwrap();
            let ids: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
            let data = rng.vectors(300, DIM);
            db.add(&ids, &data, &[]).unwrap();
            rows.extend(data.chunks(DIM).map(<[f32]>::to_vec));
            db.delete(&["k3", "k4"]).unwrap();
            // Uncommitted writes are committed by create_index.
            let info = db.create_index(&IndexSpec::flat(quantization)).unwrap();
            assert_eq!(info.quantization, Some(quantization), "{ctx}");
            assert_eq!(info.rows, 300, "{ctx}");
            assert!(info.bytes > 0, "{ctx}");
            check_all_codes(&db, &rows);
            if quantization == Quantization::Int8 {
                let live: Vec<Vec<f32>> = rows
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != 3 && *i != 4)
                    .map(|(_, v)| v.clone())
                    .collect();
                assert_trained_on(&db, &live, metric == Metric::Cosine);
            }

            // Appended rows get codes at once, before any commit.
            let more: Vec<String> = (300..350).map(|i| format!("k{i}")).collect();
            let data = rng.vectors(50, DIM);
            db.add(&more, &data, &[]).unwrap();
            rows.extend(data.chunks(DIM).map(<[f32]>::to_vec));
            check_all_codes(&db, &rows);
            let up = rng.vectors(2, DIM);
            db.upsert(&["k10", "k999"], &up, &[]).unwrap();
            rows.extend(up.chunks(DIM).map(<[f32]>::to_vec));
            let new_vector = rng.vectors(1, DIM);
            db.update(&Update::ids(&["k20"]).vectors(&new_vector))
                .unwrap();
            rows.push(new_vector.clone());
            db.delete(&["k30"]).unwrap();
            check_all_codes(&db, &rows);
            check_live_codes(&db).unwrap_or_else(|e| panic!("{ctx}: {e}"));
            db.persist().unwrap();
            check_search(&db, &new_vector, metric);
            drop(db);

            // Reopen reads the codes back.
            let db = Database::open(dir.path(), options(metric)).unwrap();
            check_all_codes(&db, &rows);
            assert_eq!(
                db.index_info().unwrap().quantization,
                Some(quantization),
                "{ctx}"
            );

            // Compaction renumbers and retrains on the survivors.
            db.compact().unwrap();
            let live = check_live_codes(&db).unwrap_or_else(|e| panic!("{ctx}: {e}"));
            assert_eq!(live, Some(quantization), "{ctx}");
            let info = db.index_info().unwrap();
            assert_eq!(info.rows, db.count(), "{ctx}: compacted rows covered");
            if quantization == Quantization::Int8 {
                let survivors: Vec<Vec<f32>> = db
                    .ids()
                    .iter()
                    .map(|id| db.get(id).unwrap().unwrap().vector)
                    .collect();
                assert_trained_on(&db, &survivors, metric == Metric::Cosine);
            }
            check_search(&db, &new_vector, metric);
            drop(db);
            let db = Database::open(dir.path(), options(metric)).unwrap();
            check_live_codes(&db).unwrap_or_else(|e| panic!("{ctx} after reopen: {e}"));
            assert_eq!(db.index_info().unwrap().rows, db.count(), "{ctx}");
        }
    }
}

#[test]
fn create_validates_replaces_and_drops() {
    const DIM: usize = 8;
    let dir = tempdir();
    let db = Database::open(dir.path(), options(Metric::Dot)).unwrap();
    let ids: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    db.add(&ids, &Rng::new(seed()).vectors(40, DIM), &[])
        .unwrap();
    let exact = IndexSpec {
        kind: IndexKind::Flat,
        quantization: None,
        hnsw: None,
    };
    match db.create_index(&exact) {
        Err(Error::InvalidInput { reason, .. }) => {
            assert!(reason.contains("exact"), "{reason}")
        }
        other => panic!("a flat index without quantization: {other:?}"),
    }
    assert_eq!(db.index_info().unwrap().quantization, None);

    let first = db
        .create_index(&IndexSpec::flat(Quantization::Int8))
        .unwrap();
    assert_eq!(first.rows, 40);
    // int8: 8 codes + the f32 squared norm per row, plus the codebook.
    assert_eq!(first.bytes, 40 * 12 + 8 * DIM as u64);
    let (book, codes, _) = db.index_codes_for_test().unwrap();
    // The same spec again changes nothing.
    assert_eq!(
        db.create_index(&IndexSpec::flat(Quantization::Int8))
            .unwrap(),
        first
    );
    assert_eq!(db.index_codes_for_test().unwrap().0, book);
    assert_eq!(db.index_codes_for_test().unwrap().1, codes);

    // Another spec replaces it, durably.
    let binary = db
        .create_index(&IndexSpec::flat(Quantization::Binary))
        .unwrap();
    assert_eq!(binary.quantization, Some(Quantization::Binary));
    assert_eq!(binary.rows, 40);
    drop(db);
    let db = Database::open(dir.path(), options(Metric::Dot)).unwrap();
    assert_eq!(check_live_codes(&db).unwrap(), Some(Quantization::Binary));

    assert!(db.drop_index().unwrap());
    assert!(!db.drop_index().unwrap());
    assert_eq!(db.index_info().unwrap().rows, 0);
    assert!(db.index_codes_for_test().is_none());
    assert!(!dir.path().join(CODES_FILE).exists(), "the file goes too");
    drop(db);
    let db = Database::open(dir.path(), options(Metric::Dot)).unwrap();
    assert_eq!(db.index_info().unwrap().quantization, None);
    // Rows added without an index and a new index later.
    db.add(&["late"], &Rng::new(seed() + 1).vectors(1, DIM), &[])
        .unwrap();
    assert_eq!(
        db.create_index(&IndexSpec::flat(Quantization::Int8))
            .unwrap()
            .rows,
        41
    );
    check_live_codes(&db).unwrap();
}

#[test]
fn an_index_created_before_its_rows_is_retrained_as_they_arrive() {
    const DIM: usize = 6;
    let dir = tempdir();
    let opts = OpenOptions {
        dimension: Some(DIM as u32),
        ..options(Metric::L2)
    };
    let db = Database::open(dir.path(), opts.clone()).unwrap();
    let info = db
        .create_index(&IndexSpec::flat(Quantization::Int8))
        .unwrap();
    assert_eq!(
        (info.rows, info.quantization),
        (0, Some(Quantization::Int8))
    );
    let (book, _, _) = db.index_codes_for_test().unwrap();
    let Book::Int8 { offset, scale, .. } = parse_book(&book) else {
        panic!()
    };
    assert!(offset.iter().all(|&o| o == 0.0), "neutral with no rows");
    assert!(
        scale.iter().all(|&s| s == 1.0 / 127.0),
        "neutral with no rows"
    );
    let mut rng = Rng::new(seed());
    let mut rows: Vec<Vec<f32>> = Vec::new();
    let mut add = |db: &Database, n: usize, spread: f32, rows: &mut Vec<Vec<f32>>| {
        let data: Vec<f32> = rng.vectors(n, DIM).iter().map(|x| x * spread).collect();
        let ids: Vec<String> = (rows.len()..rows.len() + n)
            .map(|i| format!("k{i}"))
            .collect();
        db.add(&ids, &data, &[]).unwrap();
        db.persist().unwrap();
        rows.extend(data.chunks(DIM).map(<[f32]>::to_vec));
    };
    // The first commit leaves more than twice the rows (none) the codebook saw: retrained.
    add(&db, 30, 5.0, &mut rows);
    assert_trained_on(&db, &rows, false);
    check_all_codes(&db, &rows);
    // Wider rows, up to twice the 30 it saw: kept (and the rows beyond its range clip).
    let before = db.index_codes_for_test().unwrap().0;
    add(&db, 30, 20.0, &mut rows);
    assert_eq!(
        db.index_codes_for_test().unwrap().0,
        before,
        "60 rows: not retrained"
    );
    check_all_codes(&db, &rows);
    // Past twice: retrained on all of them.
    add(&db, 1, 1.0, &mut rows);
    assert_trained_on(&db, &rows, false);
    check_all_codes(&db, &rows);
    drop(db);
    let db = Database::open(dir.path(), opts).unwrap();
    check_all_codes(&db, &rows);
    // Nothing deleted, but compact still retrains the codebook on the rows.
    add(&db, 5, 40.0, &mut rows);
    db.compact().unwrap();
    assert_trained_on(&db, &rows, false);
    check_all_codes(&db, &rows);
}

/// The failure that retraining fixes: a flat int8 index made before any row, on l2 rows far
/// outside [-1, 1], found 0.31 of the true top 10 when its codebook stayed neutral.
#[test]
fn a_flat_int8_index_created_empty_recalls_as_one_created_after_the_rows() {
    const DIM: usize = 32;
    const N: usize = 3000;
    let dir = tempdir();
    let db = Database::open(
        dir.path(),
        OpenOptions {
            dimension: Some(DIM as u32),
            ..options(Metric::L2)
        },
    )
    .unwrap();
    db.create_index(&IndexSpec::flat(Quantization::Int8))
        .unwrap();
    let mut rng = Rng::new(seed());
    let data: Vec<f32> = rng.vectors(N, DIM).iter().map(|x| x * 3.0 + 1.0).collect();
    let items: Vec<(String, Vec<f32>)> = data
        .chunks(DIM)
        .enumerate()
        .map(|(i, v)| (format!("r{i}"), v.to_vec()))
        .collect();
    for (start, batch) in (0..N).step_by(500).zip(data.chunks(500 * DIM)) {
        let ids: Vec<String> = (start..start + 500).map(|i| format!("r{i}")).collect();
        db.add(&ids, batch, &[]).unwrap();
        db.persist().unwrap();
    }
    let mut hit = 0;
    let queries = 30;
    for _ in 0..queries {
        let q: Vec<f32> = rng.vectors(1, DIM).iter().map(|x| x * 3.0 + 1.0).collect();
        let want: HashSet<String> = brute_force(Metric::L2, &q, &items, 10)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let got = db.search(&q, 10).unwrap();
        hit += got.iter().filter(|h| want.contains(&h.id)).count();
    }
    let recall = hit as f64 / (queries * 10) as f64;
    assert!(recall >= 0.95, "recall@10 {recall}");
}

/// Damage to `index.codes` is repaired on open from `vectors.bin`.
#[test]
fn a_missing_foreign_or_damaged_codes_file_is_rebuilt_on_open() {
    const DIM: usize = 10;
    let dir = tempdir();
    let other = tempdir();
    let mut rng = Rng::new(seed());
    let data = rng.vectors(200, DIM);
    let ids: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
    let rows: Vec<Vec<f32>> = data.chunks(DIM).map(<[f32]>::to_vec).collect();
    for (path, n) in [(dir.path(), 200), (other.path(), 100)] {
        let db = Database::open(path, options(Metric::Cosine)).unwrap();
        db.add(&ids[..n], &data[..n * DIM], &[]).unwrap();
        db.create_index(&IndexSpec::flat(Quantization::Int8))
            .unwrap();
        db.close().unwrap();
    }
    let file = dir.path().join(CODES_FILE);
    let good = std::fs::read(&file).unwrap();
    let foreign = std::fs::read(other.path().join(CODES_FILE)).unwrap();
    let mut flipped = good.clone();
    flipped[20] ^= 1;
    let damages: Vec<(&str, Option<Vec<u8>>)> = vec![
        ("missing", None),
        ("empty", Some(Vec::new())),
        ("header byte flipped", Some(flipped)),
        ("cut mid-row", Some(good[..good.len() / 2 + 3].to_vec())),
        ("another database's", Some(foreign)),
        (
            "random bytes",
            Some((0..good.len()).map(|i| (i * 7 + 3) as u8).collect()),
        ),
    ];
    for (what, damage) in damages {
        match damage {
            Some(bytes) => std::fs::write(&file, bytes).unwrap(),
            None => std::fs::remove_file(&file).unwrap(),
        }
        // Rows read from the file on demand: the rebuild reads them in runs.
        let db = Database::open(dir.path(), stored(Metric::Cosine, StorageKind::OnDemand))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        check_all_codes(&db, &rows);
        check_search(&db, &rows[7], Metric::Cosine);
        drop(db);
        assert_eq!(
            std::fs::read(&file).unwrap(),
            good,
            "{what}: the file is rewritten whole (same codebook, same generation)"
        );
    }

    // A codes file without an index record (left by a crash) is removed.
    let db = Database::open(dir.path(), options(Metric::Cosine)).unwrap();
    assert!(db.drop_index().unwrap());
    drop(db);
    std::fs::write(&file, &good).unwrap();
    let db = Database::open(dir.path(), options(Metric::Cosine)).unwrap();
    assert_eq!(db.index_info().unwrap().quantization, None);
    assert!(!file.exists());
}

// ---- the simulated crash sweep ----

const SWEEP_DIM: usize = 9;

fn sweep_vector(s: u64, i: usize) -> Vec<f32> {
    Rng::new(s ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A)).vectors(1, SWEEP_DIM)
}

fn sweep_options() -> OpenOptions {
    OpenOptions {
        metric: Some(Metric::L2),
        auto_commit_rows: 0,
        buffer_bytes: 4096,
        ..OpenOptions::default()
    }
}

/// The index acknowledged after each step of the workload, and whether the step that failed
/// was one whose commit point may have passed.
struct SweepRun {
    states: Vec<Option<Quantization>>,
    in_flight: bool,
}

/// Creates an index before any rows, adds, replaces the index, commits with it, compacts with
/// it, replaces it, drops it; stops at the first error.
fn sweep_workload(loc: Arc<SimLocation>, s: u64) -> SweepRun {
    let mut run = SweepRun {
        states: vec![None],
        in_flight: false,
    };
    let Ok(db) = Database::open_at(loc, sweep_options()) else {
        return run;
    };
    let add = move |db: &Database, range: std::ops::Range<usize>| {
        let ids: Vec<String> = range.clone().map(|i| format!("k{i}")).collect();
        let v: Vec<f32> = range.flat_map(|i| sweep_vector(s, i)).collect();
        db.upsert(&ids, &v, &[])
    };
    type Step = Box<dyn Fn(&Database) -> srvdb::Result<()>>;
    let steps: Vec<(Option<Quantization>, Step)> = vec![
        // No dimension yet: recorded as pending, built by the first commit of rows.
        (
            Some(Quantization::Binary),
            Box::new(|db| {
                db.create_index(&IndexSpec::flat(Quantization::Binary))
                    .map(drop)
            }),
        ),
        (
            Some(Quantization::Binary),
            Box::new(move |db| {
                add(db, 0..40)?;
                db.persist()
            }),
        ),
        (
            Some(Quantization::Int8),
            Box::new(|db| {
                db.create_index(&IndexSpec::flat(Quantization::Int8))
                    .map(drop)
            }),
        ),
        (
            Some(Quantization::Int8),
            Box::new(move |db| {
                add(db, 30..60)?;
                db.delete(&["k1", "k2"])?;
                db.persist()
            }),
        ),
        (Some(Quantization::Int8), Box::new(|db| db.compact())),
        (
            Some(Quantization::Binary),
            Box::new(|db| {
                db.create_index(&IndexSpec::flat(Quantization::Binary))
                    .map(drop)
            }),
        ),
        (
            Some(Quantization::Binary),
            Box::new(move |db| {
                add(db, 55..70)?;
                db.persist()
            }),
        ),
        (None, Box::new(|db| db.drop_index().map(drop))),
    ];
    for (index_after, step) in steps {
        if step(&db).is_err() {
            run.in_flight = true;
            run.states.push(index_after);
            return run;
        }
        run.states.push(index_after);
    }
    run
}

/// Reopens `image`: the index must be the acknowledged one or the one in flight, its codes
/// must match the live rows, searches must answer, and a new write must keep it so across
/// a power cut.
fn check_sweep_image(image: Arc<SimLocation>, run: &SweepRun, s: u64) -> Result<(), String> {
    let db =
        Database::open_at(image.clone(), sweep_options()).map_err(|e| format!("reopen: {e}"))?;
    let got = check_live_codes(&db)?;
    let acked = if run.in_flight {
        &run.states[run.states.len() - 2..]
    } else {
        &run.states[run.states.len() - 1..]
    };
    if !acked.contains(&got) {
        return Err(format!("index {got:?}, expected one of {acked:?}"));
    }
    if db.count() > 0 {
        check_search(&db, &sweep_vector(s, 5), Metric::L2);
    }
    db.upsert(&["after"], &sweep_vector(s, 999), &[])
        .and_then(|()| db.persist())
        .map_err(|e| format!("write after recovery: {e}"))?;
    check_live_codes(&db)?;
    drop(db);
    let again = Database::open_at(
        Arc::new(image.image_after(Crash::PowerLoss)),
        sweep_options(),
    )
    .map_err(|e| format!("recovered, wrote, power cut: reopen: {e}"))?;
    let after =
        check_live_codes(&again).map_err(|e| format!("recovered, wrote, power cut: {e}"))?;
    if after != got || !again.contains("after") {
        return Err(format!(
            "recovered, wrote, power cut: index {after:?} (was {got:?}), write kept: {}",
            again.contains("after")
        ));
    }
    Ok(())
}

#[test]
fn a_failure_at_every_step_of_the_index_life_cycle_leaves_codes_that_match() {
    let s = seed();
    let dry = Arc::new(SimLocation::with_faults(Arc::new(FaultPlan::never())));
    let run = sweep_workload(dry.clone(), s);
    assert!(!run.in_flight, "the workload completes without faults");
    let total = dry.faults().ops();
    let mut violations = Vec::new();
    let mut images = 0;
    for n in 1..=total {
        let faults = Arc::new(FaultPlan::never());
        faults.fail_after(n);
        let loc = Arc::new(SimLocation::with_faults(faults.clone()));
        let run = sweep_workload(loc.clone(), s);
        assert!(faults.has_failed(), "fault {n} never fired");
        let op = faults.failed_op().unwrap_or("?");
        let file = faults.failed_file().unwrap_or_default();
        for crash in [
            Crash::PowerLoss,
            Crash::ProcessKill,
            Crash::Torn {
                seed: s ^ n as u64,
                unit: TornUnit::Pages(512),
            },
        ] {
            images += 1;
            if let Err(e) = check_sweep_image(Arc::new(loc.image_after(crash)), &run, s) {
                violations.push(format!(
                    "fault at op {n} ({op} {file}, step {}), {crash:?}: {e} (seed {s})",
                    run.states.len() - 1
                ));
            }
        }
    }
    eprintln!(
        "{total} fault points, {images} crash images, {} violations",
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
const KILL_BATCH: usize = 200;

fn kill_vector(i: usize) -> Vec<f32> {
    Rng::new((i as u64).wrapping_mul(0x9E37_79B9) ^ 0xC0DE5).vectors(1, KILL_DIM)
}

/// The child: creates the index if there is none, then adds, deletes, commits and now and
/// then compacts, forever.
fn kill_child(dir: &str, start: usize) {
    let db = Database::open(dir, options(Metric::Cosine)).expect("child open");
    let mut c = start;
    loop {
        c += 1;
        let ids: Vec<String> = ((c - 1) * KILL_BATCH..c * KILL_BATCH)
            .map(|i| format!("id-{i}"))
            .collect();
        let v: Vec<f32> = ((c - 1) * KILL_BATCH..c * KILL_BATCH)
            .flat_map(kill_vector)
            .collect();
        db.upsert(&ids, &v, &[]).expect("child add");
        if c >= 2 {
            let _ = db.delete(&[format!("id-{}", (c - 1) * KILL_BATCH - 3)]);
        }
        db.persist().expect("child persist");
        if db.index_info().expect("info").quantization.is_none() {
            db.create_index(&IndexSpec::flat(Quantization::Int8))
                .expect("child create_index");
        }
        if c.is_multiple_of(3) {
            db.compact().expect("child compact");
        }
        println!("committed {c}");
    }
}

#[test]
fn sigkill_at_random_moments_keeps_codes_that_match_the_rows() {
    if let Ok(dir) = std::env::var("SRVDB_QUANT_CRASH_CHILD") {
        let start = std::env::var("SRVDB_QUANT_CRASH_START")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        kill_child(&dir, start);
        return;
    }
    const KILLS: usize = 12;
    let dir = tempdir();
    let dir_str = dir.path().to_str().expect("utf-8 path").to_owned();
    let mut rng = Rng::new(seed());
    let mut committed = 0usize;
    let mut with_index = 0;
    for kill in 0..KILLS {
        let acked = common::run_and_kill(
            "sigkill_at_random_moments_keeps_codes_that_match_the_rows",
            &[
                ("SRVDB_QUANT_CRASH_CHILD", dir_str.clone()),
                ("SRVDB_QUANT_CRASH_START", committed.to_string()),
            ],
            committed,
            &mut rng,
            20_000,
        );
        let db = Database::open(dir.path(), options(Metric::Cosine))
            .unwrap_or_else(|e| panic!("kill {kill}: reopen failed: {e}"));
        if let Err(e) = check_live_codes(&db) {
            panic!("kill {kill}: {e} (seed {})", seed());
        }
        if db.index_info().unwrap().quantization.is_some() {
            with_index += 1;
        }
        // The child continues after the last batch the database holds (it upserts, so a
        // batch it repeats is harmless).
        committed = db
            .ids()
            .iter()
            .filter_map(|id| id.strip_prefix("id-")?.parse::<usize>().ok())
            .max()
            .map_or(0, |i| i / KILL_BATCH + 1);
        assert!(
            committed >= acked,
            "kill {kill}: commit {acked} was acknowledged but only {committed} batches survived"
        );
        if db.count() > 0 {
            check_search(&db, &kill_vector(1), Metric::Cosine);
        }
        drop(db);
    }
    eprintln!("{KILLS} kills, {committed} commits, {with_index} reopened with an index");
    assert!(committed > 0, "the child never committed");
    assert!(with_index > 0, "no kill landed after the index existed");
}

/// On the real MiniLM embeddings: every code matches the reference, and the index holds
/// what `index_info` reports (codes and codebook), a fraction of the f32 rows.
#[test]
fn real_embeddings_codes_match_and_fit_the_budget() {
    let Some(data) = common::dataset() else {
        return;
    };
    let ids: Vec<String> = (0..data.n).map(|i| format!("id-{i}")).collect();
    let rows: Vec<Vec<f32>> = data.base.chunks(data.dim).map(<[f32]>::to_vec).collect();
    let f32_bytes = (data.n * data.dim * 4) as f64;
    for (quantization, budget) in [(Quantization::Int8, 0.3), (Quantization::Binary, 0.05)] {
        let dir = tempdir();
        let db = Database::open(dir.path(), options(Metric::Cosine)).unwrap();
        db.add(&ids, &data.base, &[]).unwrap();
        let info = db.create_index(&IndexSpec::flat(quantization)).unwrap();
        check_all_codes(&db, &rows);
        let file_len = std::fs::metadata(dir.path().join(CODES_FILE))
            .unwrap()
            .len();
        let ratio = info.bytes as f64 / f32_bytes;
        eprintln!(
            "{quantization:?}: {} rows, index {} bytes ({ratio:.3}x the f32 rows), index.codes {file_len} bytes",
            info.rows, info.bytes
        );
        assert_eq!(info.rows, data.n as u64);
        assert!(ratio <= budget, "{quantization:?}: {ratio:.3}x > {budget}x");
        drop(db);
        let db = Database::open(dir.path(), options(Metric::Cosine)).unwrap();
        check_all_codes(&db, &rows);
    }
}

/// An in-memory database keeps its codes in memory only, through the same life cycle.
#[test]
fn an_in_memory_index_follows_writes_and_compaction() {
    const DIM: usize = 7;
    let db = Database::in_memory(options(Metric::Dot)).unwrap();
    let mut rng = Rng::new(seed());
    let ids: Vec<String> = (0..50).map(|i| format!("k{i}")).collect();
    let data = rng.vectors(50, DIM);
    db.add(&ids, &data, &[]).unwrap();
    let mut rows: Vec<Vec<f32>> = data.chunks(DIM).map(<[f32]>::to_vec).collect();
    db.create_index(&IndexSpec::flat(Quantization::Int8))
        .unwrap();
    let more = rng.vectors(1, DIM);
    db.upsert(&["k1"], &more, &[]).unwrap();
    rows.push(more);
    db.persist().unwrap();
    check_all_codes(&db, &rows);
    db.compact().unwrap();
    assert_eq!(check_live_codes(&db).unwrap(), Some(Quantization::Int8));
    assert_eq!(db.index_info().unwrap().rows, 50);
    assert!(db.drop_index().unwrap());
    assert!(db.index_codes_for_test().is_none());
}

/// An index created before the database has a dimension is recorded, survives a reopen, and
/// is built (trained on the rows) by the first commit of rows.
#[test]
fn an_index_created_before_any_rows_is_built_by_the_first_commit() {
    const DIM: usize = 5;
    let dir = tempdir();
    let db = Database::open(dir.path(), options(Metric::L2)).unwrap();
    let info = db
        .create_index(&IndexSpec::flat(Quantization::Int8))
        .unwrap();
    assert_eq!(
        (info.quantization, info.rows),
        (Some(Quantization::Int8), 0)
    );
    drop(db);
    let db = Database::open(dir.path(), options(Metric::L2)).unwrap();
    assert_eq!(
        db.index_info().unwrap().quantization,
        Some(Quantization::Int8),
        "the pending index is durable"
    );
    let data: Vec<f32> = Rng::new(seed())
        .vectors(60, DIM)
        .iter()
        .map(|x| x * 3.0)
        .collect();
    let ids: Vec<String> = (0..60).map(|i| format!("k{i}")).collect();
    db.add(&ids, &data, &[]).unwrap();
    db.persist().unwrap();
    let rows: Vec<Vec<f32>> = data.chunks(DIM).map(<[f32]>::to_vec).collect();
    check_all_codes(&db, &rows);
    assert_trained_on(&db, &rows, false);
    drop(db);
    let db = Database::open(dir.path(), options(Metric::L2)).unwrap();
    check_all_codes(&db, &rows);

    // Dropped while pending: nothing is built.
    let dir = tempdir();
    let db = Database::open(dir.path(), options(Metric::L2)).unwrap();
    db.create_index(&IndexSpec::flat(Quantization::Binary))
        .unwrap();
    assert!(db.drop_index().unwrap());
    db.add(&ids, &data, &[]).unwrap();
    db.persist().unwrap();
    assert_eq!(db.index_info().unwrap().quantization, None);
    assert!(!dir.path().join(CODES_FILE).exists());
}
