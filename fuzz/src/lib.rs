//! The fuzz harnesses: each takes the fuzzer's bytes and panics only on a defect in SrvDB.
//!
//! - [`open_vectors`]: a valid `metadata.db` beside a fuzzed `vectors.bin` (seeded with a real
//!   one). Opening gives `Error::Corrupt` naming `vectors.bin`, or a database whose ids,
//!   vectors and search answers are what the fuzzed file holds (read here by hand, not by the
//!   engine). Run on the simulated backend and on the real mmap backend.
//! - [`open_metadata`]: either a fuzzed `metadata.db` (raw bytes, seeded with a real one), or
//!   values chosen by the fuzzer and written with the redb API into a fresh, well-formed store
//!   (config keys, row -> id entries, tombstones, documents) next to a matching or mismatching
//!   `vectors.bin`. Opening gives an error when what was written breaks a rule of
//!   `docs/design.md`, and otherwise a database that holds exactly what was written.
//! - [`ops`]: add / upsert / delete / persist / compact / close+reopen / search / get, with
//!   injected I/O faults and power cuts, against a `BTreeMap` model (after redb's
//!   `fuzz_redb.rs`); searches are compared with brute force over the model.
//!
//! This file is also compiled into `tests/corruption.rs` (`#[path]`), which replays every file
//! under `fuzz/corpus/` and `fuzz/regressions/` in plain `cargo test`.

use arbitrary::Unstructured;
use srvdb::format::{Header, RowLayout};
use srvdb::storage::sim::{FaultPlan, SimLocation};
use srvdb::storage::{names, Location};
use srvdb::{Database, Error, Metric, OpenOptions, StorageKind, Store};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

/// Dimension of the template database of [`open_vectors`] and of [`ops`].
const DIM: usize = 3;

/// A valid database on simulated files, cloned for every input.
struct Template {
    location: SimLocation,
    /// `vectors.bin` as the engine wrote it.
    vectors: Vec<u8>,
    /// `metadata.db` as the engine wrote it.
    metadata: Vec<u8>,
    /// The live ids, in row order, and their rows.
    live: Vec<(String, u64)>,
    /// Rows in `vectors.bin`.
    rows: u64,
    metric: Metric,
}

fn file_bytes(location: &SimLocation, name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    location.edit_file(name, |b| out.clone_from(b));
    out
}

/// The template: 5 rows of dimension 3 (metric Dot), row 1 deleted.
fn template() -> &'static Template {
    static TEMPLATE: OnceLock<Template> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let location = Arc::new(SimLocation::with_faults(Arc::new(FaultPlan::never())));
        let metric = Metric::Dot;
        let db = Database::open_at(location.clone(), options(metric)).expect("template open");
        let ids = ["a", "b", "c", "d", "e"];
        let vectors: Vec<f32> = (0..ids.len() * DIM)
            .map(|i| i as f32 * 0.25 - 1.0)
            .collect();
        db.add(&ids, &vectors, &[]).expect("template add");
        db.delete(&["b"]).expect("template delete");
        db.close().expect("template close");
        let live = [("a", 0), ("c", 2), ("d", 3), ("e", 4)]
            .iter()
            .map(|&(id, row)| (id.to_owned(), row))
            .collect();
        Template {
            vectors: file_bytes(&location, names::VECTORS),
            metadata: file_bytes(&location, names::METADATA),
            location: location.crash_image(true),
            live,
            rows: ids.len() as u64,
            metric,
        }
    })
}

/// The template's `vectors.bin` (the seed of the `open_vectors` corpus).
pub fn template_vectors() -> Vec<u8> {
    template().vectors.clone()
}

/// The template's `metadata.db` behind the raw-mode byte (a seed of the `open_metadata` corpus).
pub fn template_metadata_input() -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend_from_slice(&template().metadata);
    out
}

fn options(metric: Metric) -> OpenOptions {
    OpenOptions {
        dimension: None,
        metric: Some(metric),
        storage: StorageKind::File,
        buffer_bytes: 256,
        auto_commit_rows: 0,
        coalesce_searches: false,
        embedder: None,
        read_only: false,
    }
}

/// Component `c` of row `row` in a `vectors.bin` image, if the file holds it.
fn component(file: &[u8], layout: RowLayout, row: u64, c: usize) -> Option<f32> {
    let at = usize::try_from(layout.row_offset(row)).ok()? + c * 4;
    let b = file.get(at..at + 4)?;
    Some(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Exact score in f64 (independent of the engine's kernels).
fn reference_score(metric: Metric, q: &[f32], v: &[f32]) -> f64 {
    let dot: f64 = q
        .iter()
        .zip(v)
        .map(|(a, b)| f64::from(*a) * f64::from(*b))
        .sum();
    match metric {
        Metric::Dot => dot,
        Metric::L2 => q
            .iter()
            .zip(v)
            .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
            .sum(),
        Metric::Cosine => {
            let n = |x: &[f32]| x.iter().map(|a| f64::from(*a).powi(2)).sum::<f64>().sqrt();
            let (nq, nv) = (n(q), n(v));
            if nq == 0.0 || nv == 0.0 {
                0.0
            } else {
                dot / (nq * nv)
            }
        }
    }
}

/// Checks `search(q, k)` against brute force over `items`. With values that are not small and
/// finite (a fuzzed file can hold any bits) only the shape of the answer is checked: no panic,
/// at most `k` hits, known ids.
fn check_search(
    db: &Database,
    metric: Metric,
    items: &BTreeMap<String, Vec<f32>>,
    q: &[f32],
    k: usize,
) {
    let hits = db.search(q, k).expect("search on an open database");
    assert!(
        hits.len() <= k.min(items.len()),
        "{} hits for k {k}",
        hits.len()
    );
    for h in &hits {
        assert!(items.contains_key(&h.id), "hit {:?} is not a live id", h.id);
    }
    let tame = items
        .values()
        .flatten()
        .all(|x| x.is_finite() && x.abs() < 1e3);
    if !tame {
        return;
    }
    let mut want: Vec<f64> = items
        .values()
        .map(|v| reference_score(metric, q, v))
        .collect();
    if metric.higher_is_better() {
        want.sort_by(|a, b| b.total_cmp(a));
    } else {
        want.sort_by(|a, b| a.total_cmp(b));
    }
    want.truncate(k);
    assert_eq!(
        hits.len(),
        want.len(),
        "hits for k {k} over {} items",
        items.len()
    );
    let tol = |x: f64| 1e-3 * (1.0 + x.abs());
    for (h, w) in hits.iter().zip(&want) {
        let own = reference_score(metric, q, &items[&h.id]);
        assert!(
            (f64::from(h.score) - own).abs() <= tol(own),
            "hit {:?} scored {} but its vector scores {own}",
            h.id,
            h.score
        );
        assert!(
            (f64::from(h.score) - w).abs() <= tol(*w),
            "rank score {} vs brute force {w}",
            h.score
        );
    }
}

/// Checks an open database against the records it must hold.
fn check_db(db: &Database, metric: Metric, want: &BTreeMap<String, Vec<f32>>) {
    assert_eq!(db.count() as usize, want.len(), "count");
    let mut ids = db.ids();
    ids.sort();
    assert_eq!(ids, want.keys().cloned().collect::<Vec<_>>(), "ids");
    for (id, v) in want {
        let got = db.get(id).expect("get").expect("a live id has a record");
        let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got.vector), bits(v), "vector of {id:?}");
    }
    assert!(db.get("no-such-id").expect("get").is_none());
    if let Some(dim) = db.dimension() {
        let q: Vec<f32> = (0..dim).map(|i| 0.5 - i as f32 * 0.375).collect();
        for k in [0, 1, 3, 100] {
            check_search(db, metric, want, &q, k);
        }
    }
}

/// FNV-1a 32, the header checksum of docs/design.md (written out here, not the engine's).
fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// `open()` on a fuzzed `vectors.bin` beside the template's valid `metadata.db`. A header whose
/// checksum does not match is also tried with the checksum put right, so the fuzzer reaches
/// the checks behind it (version, dimension, metric, stride) without solving FNV-1a.
pub fn open_vectors(data: &[u8]) {
    if data.len() >= 32 {
        let sum = fnv1a32(&data[..28]).to_le_bytes();
        if data[28..32] != sum {
            let mut fixed = data.to_vec();
            fixed[28..32].copy_from_slice(&sum);
            open_vectors_sim(&fixed);
        }
    }
    open_vectors_sim(data);

    // The same bytes on disk through the mmap backend.
    let t = template();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(names::METADATA), &t.metadata).expect("write metadata.db");
    std::fs::write(dir.path().join(names::VECTORS), data).expect("write vectors.bin");
    let opened = Database::open(
        dir.path(),
        options(t.metric).with_storage(StorageKind::Mmap),
    );
    check_opened_vectors(opened, data, t);
}

fn open_vectors_sim(data: &[u8]) {
    let t = template();
    let location = Arc::new(t.location.crash_image(true));
    location.edit_file(names::VECTORS, |b| {
        b.clear();
        b.extend_from_slice(data);
    });
    let opened = Database::open_at(location, options(t.metric));
    check_opened_vectors(opened, data, t);
}

fn check_opened_vectors(opened: srvdb::Result<Database>, data: &[u8], t: &Template) {
    let db = match opened {
        Err(Error::Corrupt { file, .. }) if file.ends_with(names::VECTORS) => return,
        Err(e) => panic!("a damaged vectors.bin gave {e:?}, not Corrupt naming vectors.bin"),
        Ok(db) => db,
    };
    // It opened, so the header must be the template's and every committed row present.
    // Bytes 18..20 are reserved: the reader does not interpret them (a format change bumps the
    // version), so they, and the checksum over them, may differ.
    assert_eq!(
        data.get(..18),
        t.vectors.get(..18),
        "opened with a different header"
    );
    assert_eq!(
        data.get(20..28),
        t.vectors.get(20..28),
        "opened with a different header"
    );
    let layout = RowLayout::new(DIM as u32);
    assert!(
        data.len() as u64 >= layout.file_len(t.rows),
        "opened with rows missing"
    );
    let want: BTreeMap<String, Vec<f32>> = t
        .live
        .iter()
        .map(|(id, row)| {
            let v = (0..DIM).map(|c| component(data, layout, *row, c).expect("row in file"));
            (id.clone(), v.collect())
        })
        .collect();
    check_db(&db, t.metric, &want);
}

// ---------------------------------------------------------------------------------------------
// open_metadata

/// The tables of `metadata.db`, declared here from docs/design.md, not taken from the engine.
mod tables {
    use redb::TableDefinition;
    pub const ID_TO_ROW: TableDefinition<&str, u64> = TableDefinition::new("id_to_row");
    pub const ROW_TO_ID: TableDefinition<u64, &str> = TableDefinition::new("row_to_id");
    pub const ROW_DOC: TableDefinition<u64, &str> = TableDefinition::new("row_doc");
    pub const TOMBSTONES: TableDefinition<u64, ()> = TableDefinition::new("tombstones");
    pub const CONFIG: TableDefinition<&str, u64> = TableDefinition::new("config");
    pub const CONFIG_TEXT: TableDefinition<&str, &str> = TableDefinition::new("config_text");
}

const MAX_DIMENSION: u64 = srvdb::types::MAX_DIMENSION as u64;

/// What the structured mode of [`open_metadata`] writes.
#[derive(Debug, Default)]
struct Written {
    config: BTreeMap<String, u64>,
    embedder_name: Option<String>,
    row_to_id: BTreeMap<u64, String>,
    tombstones: BTreeSet<u64>,
    docs: BTreeMap<u64, String>,
    /// `vectors.bin`: its header's dimension and metric code, and how many rows it holds.
    vectors: Option<(u32, u8, u64)>,
}

/// A u64 that is usually `typical`, sometimes an edge value, sometimes anything.
fn value(u: &mut Unstructured<'_>, typical: u64) -> arbitrary::Result<u64> {
    Ok(match u.int_in_range(0..=9u8)? {
        0 => u.arbitrary()?,
        1 => *u.choose(&[
            0,
            1,
            2,
            255,
            256,
            257,
            258,
            259,
            MAX_DIMENSION,
            MAX_DIMENSION + 1,
            1 << 32,
            (1 << 32) + 3,
            1 << 40,
            u64::MAX,
        ])?,
        2 => typical.wrapping_add(1),
        3 => typical.wrapping_sub(1),
        _ => typical,
    })
}

fn generate(u: &mut Unstructured<'_>) -> arbitrary::Result<Written> {
    let mut w = Written::default();
    let rows: u64 = u.int_in_range(0..=6)?;
    let dim = value(u, DIM as u64)?;
    let typical_metric = u64::from(u.int_in_range(1..=3u8)?);
    let metric = value(u, typical_metric)?;
    for (key, v) in [
        ("format_version", value(u, 1)?),
        ("dimension", dim),
        ("metric", metric),
        ("committed_rows", value(u, rows)?),
        ("compaction_pending", value(u, 0)?),
        ("embedder_dimension", value(u, dim)?),
    ] {
        // Each key: usually present, except the embedder's, usually absent.
        let present = match key {
            "embedder_dimension" => u.ratio(1, 4)?,
            "compaction_pending" => u.ratio(1, 3)?,
            _ => u.ratio(9, 10)?,
        };
        if present {
            w.config.insert(key.to_owned(), v);
        }
    }
    if u.ratio(1, 8)? {
        w.config.insert("some_future_key".into(), u.arbitrary()?);
    }
    if w.config.contains_key("embedder_dimension") != u.ratio(1, 8)? {
        w.embedder_name = Some("model-x".into());
    }
    for row in 0..rows {
        if u.ratio(15, 16)? {
            w.row_to_id
                .insert(row, format!("k{}", u.int_in_range(0..=7u8)?));
        }
        if u.ratio(1, 3)? {
            w.tombstones.insert(row);
        }
        if u.ratio(1, 4)? {
            w.docs.insert(row, format!("doc {row}"));
        }
    }
    if u.ratio(1, 10)? {
        w.row_to_id.insert(value(u, rows)?, "stray".into());
    }
    if u.ratio(1, 10)? {
        w.tombstones.insert(value(u, rows)?);
    }
    if u.ratio(7, 8)? {
        let file_dim = if u.ratio(9, 10)? { dim } else { value(u, dim)? };
        let file_metric = if u.ratio(9, 10)? {
            metric
        } else {
            value(u, metric)?
        };
        let file_rows = match u.int_in_range(0..=7u8)? {
            0 => rows.saturating_sub(1),
            1 => rows + 2,
            _ => rows,
        };
        // Only headers the format can express: a valid dimension and a metric byte.
        if (1..=MAX_DIMENSION).contains(&file_dim) {
            w.vectors = Some((file_dim as u32, file_metric as u8, file_rows));
        }
    }
    Ok(w)
}

/// Row `row` of the vectors written for [`open_metadata`].
fn row_vector(row: u64, dim: u32) -> Vec<f32> {
    (0..dim)
        .map(|c| (row * 7 + u64::from(c)) as f32 * 0.125 - 1.0)
        .collect()
}

fn write(location: &SimLocation, w: &Written) {
    let db = srvdb::meta::open_redb(location).expect("a fresh metadata store");
    let txn = db.begin_write().expect("begin_write");
    {
        let mut config = txn.open_table(tables::CONFIG).expect("config");
        for (k, v) in &w.config {
            config.insert(k.as_str(), *v).expect("insert");
        }
        let mut text = txn.open_table(tables::CONFIG_TEXT).expect("config_text");
        if let Some(name) = &w.embedder_name {
            text.insert("embedder", name.as_str()).expect("insert");
        }
        let mut row_to_id = txn.open_table(tables::ROW_TO_ID).expect("row_to_id");
        let mut id_to_row = txn.open_table(tables::ID_TO_ROW).expect("id_to_row");
        for (row, id) in &w.row_to_id {
            row_to_id.insert(*row, id.as_str()).expect("insert");
            if !w.tombstones.contains(row) {
                id_to_row.insert(id.as_str(), *row).expect("insert");
            }
        }
        let mut tombstones = txn.open_table(tables::TOMBSTONES).expect("tombstones");
        for row in &w.tombstones {
            tombstones.insert(*row, ()).expect("insert");
        }
        let mut docs = txn.open_table(tables::ROW_DOC).expect("row_doc");
        for (row, doc) in &w.docs {
            docs.insert(*row, doc.as_str()).expect("insert");
        }
    }
    txn.commit().expect("commit");
    drop(db);
    if let Some((dim, metric, rows)) = w.vectors {
        let metric = match metric {
            1 => Metric::Cosine,
            2 => Metric::Dot,
            3 => Metric::L2,
            // The header encoder takes a `Metric`: write a valid one and patch the byte below.
            _ => Metric::Dot,
        };
        let header = Header {
            layout: RowLayout::new(dim),
            metric,
        };
        let mut store = location
            .create_rows(names::VECTORS, &header)
            .expect("create rows");
        let stride = header.layout.stride_f32;
        for row in 0..rows {
            let mut out = vec![0.0f32; stride];
            let v = row_vector(row, dim);
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            header.layout.encode_row(&v, norm, &mut out);
            store.append(&out).expect("append");
        }
        store.sync().expect("sync");
    }
    if let Some((_, code, _)) = w.vectors.filter(|v| !(1..=3).contains(&v.1)) {
        // A header with an unknown metric code (and a matching checksum is not needed: a
        // wrong checksum is rejected too, for a different reason).
        location.edit_file(names::VECTORS, |b| b[16] = code);
    }
}

/// What opening `w` must give, by the rules of docs/design.md: `Err(reason)` for a store that
/// breaks one, or the live records (id -> (row, vector)) and the documents.
fn expected(w: &Written) -> Result<(BTreeMap<String, u64>, Option<u32>), String> {
    let get = |k: &str| w.config.get(k).copied();
    if !w.config.is_empty() && get("format_version") != Some(1) {
        return Err(format!("format_version {:?}", get("format_version")));
    }
    let dim = match get("dimension") {
        None => None,
        Some(d) if (1..=MAX_DIMENSION).contains(&d) => Some(d as u32),
        Some(d) => return Err(format!("dimension {d}")),
    };
    let metric = get("metric");
    // A metric may be recorded before the first rows fix the dimension, never the reverse.
    if dim.is_some() && metric.is_none() {
        return Err("dimension recorded without a metric".into());
    }
    if let Some(m) = metric {
        if !(1..=3).contains(&m) {
            return Err(format!("metric {m}"));
        }
    }
    let committed = get("committed_rows").unwrap_or(0);
    if committed > 0 && dim.is_none() {
        return Err("rows without a dimension".into());
    }
    if committed != w.row_to_id.len() as u64 || w.row_to_id.keys().any(|&r| r >= committed) {
        return Err(format!(
            "committed_rows {committed} vs row_to_id {:?}",
            w.row_to_id.keys().collect::<Vec<_>>()
        ));
    }
    if let Some(&t) = w.tombstones.iter().find(|&&t| t >= committed) {
        return Err(format!("tombstone {t} of {committed} rows"));
    }
    if !matches!(get("compaction_pending"), None | Some(0 | 1)) {
        return Err("compaction_pending".into());
    }
    match (&w.embedder_name, get("embedder_dimension")) {
        (None, None) => {}
        (Some(_), Some(d)) => {
            if !(1..=MAX_DIMENSION).contains(&d) || dim.is_some_and(|dim| u64::from(dim) != d) {
                return Err(format!("embedder dimension {d} with dimension {dim:?}"));
            }
        }
        _ => return Err("embedder name and dimension not both recorded".into()),
    }
    let mut live = BTreeMap::new();
    for (row, id) in &w.row_to_id {
        if !w.tombstones.contains(row) && live.insert(id.clone(), *row).is_some() {
            return Err(format!("id {id} live twice"));
        }
    }
    if let Some(dim) = dim {
        match w.vectors {
            None if committed > 0 => return Err("vectors.bin missing".into()),
            None => {}
            Some((fd, fm, rows)) => {
                if u64::from(fm) != metric.unwrap_or(0) || fd != dim {
                    return Err("vectors.bin header disagrees".into());
                }
                if rows < committed {
                    return Err("vectors.bin short".into());
                }
            }
        }
    } else if let Some((_, fm, _)) = w.vectors {
        // No configuration: vectors.bin is a never-committed first batch and is removed
        // unread (its header is not even parsed).
        let _ = fm;
    }
    Ok((live, dim))
}

/// `open()` on a fuzzed or validly re-encoded `metadata.db`.
pub fn open_metadata(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        open_raw_metadata(rest);
        return;
    }
    let Ok(w) = generate(&mut Unstructured::new(rest)) else {
        return;
    };
    let location = Arc::new(SimLocation::with_faults(Arc::new(FaultPlan::never())));
    write(&location, &w);
    let want = expected(&w);
    let opened = Database::open_at(
        location,
        OpenOptions {
            metric: None,
            ..options(Metric::Dot)
        },
    );
    match (opened, want) {
        (Err(_), Err(_)) => {}
        (Err(e), Ok(_)) => panic!("a valid store was refused: {e}\n{w:?}"),
        (Ok(_), Err(why)) => panic!("opened a store that breaks a rule ({why})\n{w:?}"),
        (Ok(db), Ok((live, dim))) => {
            assert_eq!(db.dimension(), dim, "dimension");
            let vectors: BTreeMap<String, Vec<f32>> = live
                .iter()
                .map(|(id, &row)| (id.clone(), row_vector(row, dim.unwrap_or(0))))
                .collect();
            let metric = match w.config.get("metric") {
                Some(1) => Metric::Cosine,
                Some(3) => Metric::L2,
                _ => Metric::Dot,
            };
            if w.config.contains_key("metric") {
                assert_eq!(db.metric(), metric, "metric");
            }
            check_db(&db, metric, &vectors);
            let ids: Vec<&str> = live.keys().map(String::as_str).collect();
            let docs = db.documents(&ids).expect("documents");
            for (id, doc) in ids.iter().zip(docs) {
                assert_eq!(doc.as_ref(), w.docs.get(&live[*id]), "document of {id}");
            }
        }
    }
}

/// Runs `f` with a panic raised inside redb left to unwind to the engine, which reports it as
/// `Corrupt` (`srvdb::meta::open_guarded` and `MetaStore`'s guarded transactions). libFuzzer's
/// panic hook aborts on any panic, caught or not, so without this every damaged page redb 4.6
/// panics on instead of returning an error (`fuzz/known-failures/open_metadata/`) would stop the
/// run, and the engine's catching of it would go untested. A panic anywhere else still reaches
/// libFuzzer's hook.
fn unwinding_redb_panics<R>(f: impl FnOnce() -> R) -> R {
    let fuzzer_hook = Arc::new(std::panic::take_hook());
    let hook = Arc::clone(&fuzzer_hook);
    std::panic::set_hook(Box::new(move |info| {
        let in_redb = info
            .location()
            .is_some_and(|at| at.file().contains("/redb-"));
        if !in_redb {
            hook(info);
        }
    }));
    let out = f();
    drop(std::panic::take_hook());
    match Arc::try_unwrap(fuzzer_hook) {
        Ok(hook) => std::panic::set_hook(hook),
        Err(shared) => std::panic::set_hook(Box::new(move |info| shared(info))),
    }
    out
}

/// A raw `metadata.db` beside the template's `vectors.bin`: a typed error, or a database whose
/// answers come from the template's rows.
fn open_raw_metadata(bytes: &[u8]) {
    unwinding_redb_panics(|| check_raw_metadata(bytes));
}

fn check_raw_metadata(bytes: &[u8]) {
    let t = template();
    let location = Arc::new(t.location.crash_image(true));
    location.edit_file(names::METADATA, |b| {
        b.clear();
        b.extend_from_slice(bytes);
    });
    let Ok(db) = Database::open_at(location, options(t.metric)) else {
        return;
    };
    let ids = db.ids();
    assert_eq!(ids.len() as u64, db.count(), "count vs ids");
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>().len(),
        ids.len(),
        "an id twice"
    );
    let layout = RowLayout::new(DIM as u32);
    let rows: Vec<Vec<f32>> = (0..t.rows)
        .map(|r| {
            (0..DIM)
                .filter_map(|c| component(&t.vectors, layout, r, c))
                .collect()
        })
        .collect();
    for id in &ids {
        // A mutated store may pair ids and rows differently, but every vector is a stored row
        // (or an error if a value is undecodable).
        if let Ok(Some(r)) = db.get(id) {
            assert!(rows.contains(&r.vector), "get({id:?}) made up a vector");
        }
    }
    let q = vec![0.5f32; DIM];
    if let Ok(hits) = db.search(&q, 10) {
        assert!(hits.len() <= ids.len());
    }
}

// ---------------------------------------------------------------------------------------------
// ops

const KEYS: u8 = 8;

/// The model: committed records, and the records as the handle should show them.
#[derive(Debug, Clone, Default, PartialEq)]
struct Model {
    records: BTreeMap<String, Vec<f32>>,
}

fn small_vector(u: &mut Unstructured<'_>) -> arbitrary::Result<Vec<f32>> {
    (0..DIM)
        .map(|_| Ok(f32::from(u.int_in_range(-4i8..=4)?) * 0.5))
        .collect()
}

fn items(u: &mut Unstructured<'_>) -> arbitrary::Result<Vec<(String, Vec<f32>)>> {
    let n = u.int_in_range(1..=4usize)?;
    (0..n)
        .map(|_| {
            Ok((
                format!("k{}", u.int_in_range(0..=KEYS - 1)?),
                small_vector(u)?,
            ))
        })
        .collect()
}

/// Collects the database's records through `ids()` and `get()`.
fn snapshot(db: &Database) -> BTreeMap<String, Vec<f32>> {
    db.ids()
        .into_iter()
        .map(|id| {
            let r = db.get(&id).expect("get").expect("listed id has a record");
            (id, r.vector)
        })
        .collect()
}

/// One step of [`ops`].
#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Add,
    Upsert,
    Delete,
    Persist,
    Compact,
    /// `close()` (which commits), maybe on a failing disk, then reopen.
    Reopen,
    /// Fail the n-th write or sync from now, and every one after it.
    Fault,
    /// Power cut: reopen what the disk holds.
    Crash,
    Search,
    Get,
}

fn op(u: &mut Unstructured<'_>) -> arbitrary::Result<Op> {
    Ok(match u.int_in_range(0..=15u8)? {
        0..=2 => Op::Add,
        3..=4 => Op::Upsert,
        5..=6 => Op::Delete,
        7 => Op::Persist,
        8 => Op::Compact,
        9 => Op::Reopen,
        10 => Op::Fault,
        11 => Op::Crash,
        12..=13 => Op::Search,
        _ => Op::Get,
    })
}

/// An operation sequence with faults and crashes against a model. After an I/O error the
/// handle is poisoned and its state unknown, so the power is cut at once and the reopened
/// database must hold the last commit, or the commit that failed midway (it may have landed).
pub fn ops(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(metric) = u
        .choose(&[Metric::Cosine, Metric::Dot, Metric::L2])
        .copied()
    else {
        return;
    };
    let open = |loc: &Arc<SimLocation>| {
        let mut o = options(metric);
        o.dimension = Some(DIM as u32);
        Database::open_at(loc.clone(), o).expect("open after a crash or close")
    };
    let mut location = Arc::new(SimLocation::with_faults(Arc::new(FaultPlan::never())));
    let mut db = Some(open(&location));
    let mut model = Model::default();
    let mut committed = Model::default();
    let mut steps = 0;
    while !u.is_empty() && steps < 48 {
        steps += 1;
        let Ok(op) = op(&mut u) else { break };
        let Some(handle) = db.as_ref() else { break };
        // A commit that failed: it may or may not have reached the disk.
        let mut maybe: Option<Model> = None;
        let mut crash = false;
        match op {
            Op::Add | Op::Upsert => {
                let Ok(batch) = items(&mut u) else { break };
                let ids: Vec<&str> = batch.iter().map(|(id, _)| id.as_str()).collect();
                let flat: Vec<f32> = batch.iter().flat_map(|(_, v)| v.clone()).collect();
                let dup = (1..ids.len()).any(|j| ids[..j].contains(&ids[j]));
                let upsert = op == Op::Upsert;
                let exists = ids.iter().any(|id| model.records.contains_key(*id));
                let r = if upsert {
                    handle.upsert(&ids, &flat, &[])
                } else {
                    handle.add(&ids, &flat, &[])
                };
                match r {
                    Err(Error::DuplicateId { .. }) if dup || (!upsert && exists) => {}
                    Ok(()) if !dup && (upsert || !exists) => {
                        for (id, v) in batch {
                            model.records.insert(id, v);
                        }
                    }
                    Err(Error::Io { .. }) if fault_fired(&location) => crash = true,
                    other => panic!("{op:?} {ids:?} (dup {dup}, exists {exists}): {other:?}"),
                }
            }
            Op::Delete => {
                let Ok(n) = u.int_in_range(1..=3usize) else {
                    break;
                };
                let Ok(keys) = (0..n)
                    .map(|_| u.int_in_range(0..=KEYS - 1).map(|k| format!("k{k}")))
                    .collect::<arbitrary::Result<Vec<_>>>()
                else {
                    break;
                };
                let known = keys.iter().all(|k| model.records.contains_key(k));
                match handle.delete(&keys) {
                    Ok(count) if known => {
                        let distinct: BTreeSet<_> = keys.iter().collect();
                        assert_eq!(count, distinct.len(), "delete count");
                        for k in &keys {
                            model.records.remove(k);
                        }
                    }
                    Err(Error::NotFound { .. }) if !known => {}
                    other => panic!("delete {keys:?} (known {known}): {other:?}"),
                }
            }
            Op::Persist | Op::Compact => {
                let r = if op == Op::Persist {
                    handle.persist()
                } else {
                    handle.compact()
                };
                match r {
                    Ok(()) => committed = model.clone(),
                    Err(_) if fault_fired(&location) => {
                        maybe = Some(model.clone());
                        crash = true;
                    }
                    Err(e) => panic!("{op:?}: {e:?}"),
                }
            }
            Op::Reopen => {
                let Ok(armed) = u.ratio(1, 4) else { break };
                if armed {
                    let Ok(n) = u.int_in_range(1..=6i64) else {
                        break;
                    };
                    location.faults().fail_after(n);
                }
                let closed = db.take().map(Database::close);
                match closed {
                    Some(Ok(())) => committed = model.clone(),
                    Some(Err(_)) if fault_fired(&location) => maybe = Some(model.clone()),
                    other => panic!("close: {other:?}"),
                }
                crash = true;
            }
            Op::Fault => {
                let Ok(n) = u.int_in_range(1..=24i64) else {
                    break;
                };
                location.faults().fail_after(n);
            }
            Op::Crash => crash = true,
            Op::Search => {
                let (Ok(q), Ok(k)) = (small_vector(&mut u), u.int_in_range(0..=10usize)) else {
                    break;
                };
                check_search(handle, metric, &model.records, &q, k);
            }
            Op::Get => {
                let Ok(k) = u.int_in_range(0..=KEYS - 1) else {
                    break;
                };
                let id = format!("k{k}");
                let got = handle.get(&id).expect("get").map(|r| r.vector);
                assert_eq!(got.as_ref(), model.records.get(&id), "get {id}");
            }
        }
        if crash {
            // Only synced bytes survive. The image is taken before the handle is dropped
            // (a drop commits).
            let image = Arc::new(location.crash_image(false));
            drop(db.take());
            location = image;
            let reopened = open(&location);
            model = reopened_state(&reopened, &committed, maybe.take());
            committed = model.clone();
            db = Some(reopened);
        }
        if let Some(handle) = &db {
            assert_eq!(snapshot(handle), model.records, "after {op:?}");
            assert_eq!(handle.count() as usize, model.records.len());
        }
    }
}

fn fault_fired(location: &SimLocation) -> bool {
    location.faults().has_failed()
}

/// The state a reopened database holds must be the last commit, or the one that failed
/// midway (which may have landed).
fn reopened_state(db: &Database, committed: &Model, maybe: Option<Model>) -> Model {
    let got = snapshot(db);
    if got == committed.records {
        return committed.clone();
    }
    match maybe {
        Some(m) if m.records == got => m,
        other => panic!(
            "after reopen: {got:?}\nlast commit: {:?}\nfailed commit: {:?}",
            committed.records,
            other.map(|m| m.records)
        ),
    }
}
