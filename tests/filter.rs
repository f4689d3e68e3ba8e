//! Filters against an independent reference: a scalar evaluator of the dialect written here
//! over serde_json (no engine code), a model of the live records in insertion order, and
//! brute-force top-k in f64 over the matching records. Thousands of random filters over random
//! metadata (numbers, strings, booleans, lists, nested objects, missing fields, non-object
//! metadata, none), with deletes, upserts, uncommitted rows, reopen and compaction.

mod common;
use common::{seed, tempdir, topk_mismatch, Rng};
use serde_json::{json, Map, Value};
use srvdb::{
    Database, Delete, Error, Filter, Metadata, Metric, OpenOptions, Query, Select, Store, Write,
};
use std::cmp::Ordering;

// ---------------------------------------------------------------------------------------------
// The reference evaluator: the dialect as the issue states it, written without engine code.

fn ref_lookup<'a>(m: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    let v = match m.get(name) {
        Some(v) => Some(v),
        None => {
            let mut cur: Option<&Value> = None;
            let mut obj = Some(m);
            for part in name.split('.') {
                cur = obj.and_then(|o| o.get(part));
                obj = cur.and_then(Value::as_object);
            }
            cur
        }
    };
    v.filter(|v| !v.is_null())
}

fn ref_cmp(stored: &Value, arg: &Value) -> Option<Ordering> {
    match (stored, arg) {
        (Value::Number(a), Value::Number(b)) => a.as_f64()?.partial_cmp(&b.as_f64()?),
        (Value::String(a), Value::String(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
        (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

fn ref_field(value: Option<&Value>, op: &str, arg: &Value) -> bool {
    let elems: Vec<&Value> = match value {
        None => Vec::new(),
        Some(Value::Array(items)) => items.iter().collect(),
        Some(v) => vec![v],
    };
    let any = |f: &dyn Fn(Ordering) -> bool| elems.iter().any(|e| ref_cmp(e, arg).is_some_and(f));
    let any_in = || {
        let list = arg.as_array().expect("list operand");
        elems
            .iter()
            .any(|e| list.iter().any(|x| ref_cmp(e, x) == Some(Ordering::Equal)))
    };
    match op {
        "$eq" => any(&|o| o == Ordering::Equal),
        "$ne" => !any(&|o| o == Ordering::Equal),
        "$gt" => any(&|o| o == Ordering::Greater),
        "$gte" => any(&|o| o != Ordering::Less),
        "$lt" => any(&|o| o == Ordering::Less),
        "$lte" => any(&|o| o != Ordering::Greater),
        "$in" => any_in(),
        "$nin" => !any_in(),
        other => panic!("reference: unexpected operator {other}"),
    }
}

/// `meta`: `Some(object)` or `None` for metadata that is not an object.
fn ref_where(f: &Value, meta: Option<&Map<String, Value>>) -> bool {
    f.as_object()
        .expect("where object")
        .iter()
        .all(|(k, v)| match k.as_str() {
            "$and" => v
                .as_array()
                .expect("list")
                .iter()
                .all(|w| ref_where(w, meta)),
            "$or" => v
                .as_array()
                .expect("list")
                .iter()
                .any(|w| ref_where(w, meta)),
            "$not" => !ref_where(v, meta),
            field => match meta {
                None => false,
                Some(m) => {
                    let value = ref_lookup(m, field);
                    match v {
                        Value::Object(ops) => ops.iter().all(|(op, arg)| ref_field(value, op, arg)),
                        scalar => ref_field(value, "$eq", scalar),
                    }
                }
            },
        })
}

fn ref_document(f: &Value, doc: Option<&str>) -> bool {
    let (k, v) = f
        .as_object()
        .expect("object")
        .iter()
        .next()
        .expect("one key");
    match k.as_str() {
        "$contains" => doc.is_some_and(|d| d.contains(v.as_str().expect("text"))),
        "$not_contains" => !doc.is_some_and(|d| d.contains(v.as_str().expect("text"))),
        "$and" => v
            .as_array()
            .expect("list")
            .iter()
            .all(|w| ref_document(w, doc)),
        "$or" => v
            .as_array()
            .expect("list")
            .iter()
            .any(|w| ref_document(w, doc)),
        other => panic!("reference: unexpected document operator {other}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The model: live records in insertion order.

#[derive(Clone, Debug)]
struct Rec {
    id: String,
    vector: Vec<f32>,
    meta: Option<Metadata>,
    doc: Option<String>,
    /// `meta` as the reference reads it, parsed once.
    object: Option<Map<String, Value>>,
}

impl Rec {
    fn new(id: String, vector: Vec<f32>, meta: Option<Metadata>, doc: Option<String>) -> Rec {
        let object = match &meta {
            None => Some(Map::new()),
            Some(Metadata::Text(_)) => None,
            Some(Metadata::Json(t)) => match serde_json::from_str(t) {
                Ok(Value::Object(m)) => Some(m),
                _ => None,
            },
        };
        Rec {
            id,
            vector,
            meta,
            doc,
            object,
        }
    }

    fn matches(&self, w: Option<&Value>, d: Option<&Value>) -> bool {
        w.is_none_or(|w| ref_where(w, self.object.as_ref()))
            && d.is_none_or(|d| ref_document(d, self.doc.as_deref()))
    }
}

#[derive(Default)]
struct Model {
    live: Vec<Rec>,
}

impl Model {
    fn matching(&self, w: Option<&Value>, d: Option<&Value>) -> Vec<&Rec> {
        self.live.iter().filter(|r| r.matches(w, d)).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Random metadata, documents and filters.

const WORDS: &[&str] = &[
    "alpha", "beta", "gamma", "delta", "Alpha", "eps", "zeta", "",
];
const FIELDS: &[&str] = &[
    "a", "b", "s", "flag", "tags", "n.x", "n.y", "nothing", "mix",
];

fn pick<'a, T>(rng: &mut Rng, xs: &'a [T]) -> &'a T {
    &xs[rng.below(xs.len() as u64) as usize]
}

fn random_scalar(rng: &mut Rng) -> Value {
    match rng.below(5) {
        0 => json!(rng.below(10)),
        1 => json!(rng.below(10) as f64 + [0.0, 0.5][rng.below(2) as usize]),
        2 => json!(*pick(rng, WORDS)),
        3 => json!(rng.below(2) == 1),
        _ => json!(-(rng.below(3) as i64)),
    }
}

fn random_metadata(rng: &mut Rng, i: usize) -> Option<Metadata> {
    match rng.below(20) {
        0 => return None,
        1 => return Some(Metadata::Text(format!("plain text {i}"))),
        2 => return Some(Metadata::Json("[1, 2, 3]".into())),
        3 => return Some(Metadata::Json("7".into())),
        _ => {}
    }
    let mut m = Map::new();
    m.insert("i".into(), json!(i));
    if rng.below(8) != 0 {
        m.insert("a".into(), json!(rng.below(10)));
    }
    if rng.below(4) != 0 {
        m.insert("b".into(), json!(rng.below(100) as f64 / 10.0));
    }
    if rng.below(4) != 0 {
        m.insert("s".into(), json!(*pick(rng, WORDS)));
    }
    if rng.below(3) != 0 {
        m.insert("flag".into(), json!(rng.below(2) == 1));
    }
    if rng.below(3) == 0 {
        let n = rng.below(4) as usize;
        let items: Vec<Value> = (0..n).map(|_| random_scalar(rng)).collect();
        m.insert("tags".into(), Value::Array(items));
    } else if rng.below(4) == 0 {
        m.insert("tags".into(), random_scalar(rng));
    }
    match rng.below(4) {
        0 => {
            m.insert(
                "n".into(),
                json!({"x": rng.below(5), "y": *pick(rng, WORDS)}),
            );
        }
        1 => {
            m.insert("n".into(), json!(3));
        }
        2 => {
            m.insert("n.x".into(), json!(rng.below(5)));
        }
        _ => {}
    }
    match rng.below(6) {
        0 => {
            m.insert("mix".into(), Value::Null);
        }
        1 => {
            m.insert("mix".into(), json!({"deep": 1}));
        }
        2 => {
            m.insert("mix".into(), random_scalar(rng));
        }
        _ => {}
    }
    Some(Metadata::Json(Value::Object(m).to_string()))
}

fn random_document(rng: &mut Rng) -> Option<String> {
    if rng.below(5) == 0 {
        return None;
    }
    let n = 1 + rng.below(4) as usize;
    Some(
        (0..n)
            .map(|_| *pick(rng, WORDS))
            .collect::<Vec<_>>()
            .join(" "),
    )
}

fn random_leaf(rng: &mut Rng, rows: usize) -> Value {
    let field = if rng.below(10) == 0 {
        "i"
    } else {
        *pick(rng, FIELDS)
    };
    if field == "i" {
        // A range on the row number: selectivities from tiny to all.
        let cut = rng.below(rows as u64 + 1);
        return json!({"i": {[ "$lt", "$gte" ][rng.below(2) as usize]: cut}});
    }
    let ops = [
        "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "bare",
    ];
    let op = *pick(rng, &ops);
    let scalar = loop {
        let s = random_scalar(rng);
        // Ordering operators take numbers and strings only.
        if !(op.starts_with("$g") || op.starts_with("$l")) || !s.is_boolean() {
            break s;
        }
    };
    match op {
        "bare" => json!({ field: scalar }),
        "$in" | "$nin" => {
            let n = rng.below(4) as usize;
            let list: Vec<Value> = (0..n).map(|_| random_scalar(rng)).collect();
            json!({ field: { op: list } })
        }
        _ => {
            if rng.below(6) == 0 {
                // Two operators on one field: an implicit $and.
                json!({ field: { op: scalar, "$ne": random_scalar(rng) } })
            } else {
                json!({ field: { op: scalar } })
            }
        }
    }
}

fn random_where(rng: &mut Rng, depth: u32, rows: usize) -> Value {
    if depth == 0 || rng.below(3) == 0 {
        return random_leaf(rng, rows);
    }
    match rng.below(5) {
        0 | 1 => {
            let n = 1 + rng.below(3) as usize;
            let list: Vec<Value> = (0..n).map(|_| random_where(rng, depth - 1, rows)).collect();
            json!({ ["$and", "$or"][rng.below(2) as usize]: list })
        }
        2 => json!({"$not": random_where(rng, depth - 1, rows)}),
        3 => {
            // Several keys at one level.
            let mut m = random_leaf(rng, rows)
                .as_object()
                .cloned()
                .unwrap_or_default();
            if let Value::Object(o) = random_where(rng, depth - 1, rows) {
                m.extend(o);
            }
            Value::Object(m)
        }
        _ => json!({}),
    }
}

fn random_document_filter(rng: &mut Rng, depth: u32) -> Value {
    if depth == 0 || rng.below(2) == 0 {
        let word = *pick(rng, WORDS);
        let word = if word.is_empty() { "ta" } else { word };
        return json!({ ["$contains", "$not_contains"][rng.below(2) as usize]: word });
    }
    let n = 1 + rng.below(3) as usize;
    let list: Vec<Value> = (0..n)
        .map(|_| random_document_filter(rng, depth - 1))
        .collect();
    json!({ ["$and", "$or"][rng.below(2) as usize]: list })
}

/// A random filter: `where`, `where_document`, or both (never neither).
fn random_filter(rng: &mut Rng, rows: usize) -> (Option<Value>, Option<Value>) {
    match rng.below(6) {
        0 => (None, Some(random_document_filter(rng, 2))),
        1 => (
            Some(random_where(rng, 2, rows)),
            Some(random_document_filter(rng, 1)),
        ),
        _ => (Some(random_where(rng, 3, rows)), None),
    }
}

fn parse(w: Option<&Value>, d: Option<&Value>) -> Filter {
    let w = w.map(Value::to_string);
    let d = d.map(Value::to_string);
    Filter::parse(w.as_deref(), d.as_deref()).expect("generated filters are valid")
}

// ---------------------------------------------------------------------------------------------
// Building databases and checking them.

fn random_vector(rng: &mut Rng, dim: usize) -> Vec<f32> {
    (0..dim).map(|_| rng.f32()).collect()
}

fn write(db: &Database, model: &mut Model, recs: Vec<Rec>, upsert: bool) {
    let ids: Vec<&str> = recs.iter().map(|r| r.id.as_str()).collect();
    let vectors: Vec<f32> = recs.iter().flat_map(|r| r.vector.clone()).collect();
    let metas: Vec<Option<Metadata>> = recs.iter().map(|r| r.meta.clone()).collect();
    let docs: Vec<Option<&str>> = recs.iter().map(|r| r.doc.as_deref()).collect();
    let w = if upsert {
        Write::upsert(&ids, &vectors)
    } else {
        Write::add(&ids, &vectors)
    };
    db.write(&w.metadatas(&metas).documents(&docs))
        .expect("write");
    for r in recs {
        model.live.retain(|x| x.id != r.id);
        model.live.push(r);
    }
}

/// Adds `n` random records with ids `{prefix}{i}`, in batches.
fn fill(db: &Database, model: &mut Model, rng: &mut Rng, prefix: &str, n: usize, dim: usize) {
    let mut start = 0;
    while start < n {
        let end = (start + 500).min(n);
        let recs = (start..end)
            .map(|i| {
                let vector = random_vector(rng, dim);
                let meta = random_metadata(rng, model.live.len() + i - start);
                Rec::new(format!("{prefix}{i}"), vector, meta, random_document(rng))
            })
            .collect();
        write(db, model, recs, false);
        start = end;
    }
}

fn delete_some(db: &Database, model: &mut Model, rng: &mut Rng, count: usize) {
    let mut ids = Vec::new();
    for _ in 0..count.min(model.live.len()) {
        let i = rng.below(model.live.len() as u64) as usize;
        ids.push(model.live.remove(i).id);
    }
    db.delete(&ids).expect("delete");
}

fn upsert_some(db: &Database, model: &mut Model, rng: &mut Rng, count: usize, dim: usize) {
    let mut recs = Vec::new();
    for _ in 0..count {
        let i = rng.below(model.live.len() as u64) as usize;
        let id = model.live[i].id.clone();
        if recs.iter().any(|r: &Rec| r.id == id) {
            continue;
        }
        let vector = random_vector(rng, dim);
        let meta = random_metadata(rng, i);
        recs.push(Rec::new(id, vector, meta, random_document(rng)));
    }
    write(db, model, recs, true);
}

fn describe(w: Option<&Value>, d: Option<&Value>) -> String {
    format!(
        "where {} where_document {} (seed {})",
        w.map_or("-".into(), Value::to_string),
        d.map_or("-".into(), Value::to_string),
        seed()
    )
}

/// `count_matching`, `records` (ids in order, with offset and limit; values of each) and the
/// filtered top-k of one query (single and batch) against the reference, for one filter.
fn check_filter(
    db: &Database,
    model: &Model,
    rng: &mut Rng,
    metric: Metric,
    w: Option<&Value>,
    d: Option<&Value>,
    search: bool,
) {
    let ctx = describe(w, d);
    let filter = parse(w, d);
    let want = model.matching(w, d);
    assert_eq!(
        db.count_matching(&filter).expect("count"),
        want.len() as u64,
        "count: {ctx}"
    );
    let offset = rng.below(3) as usize;
    let limit = [None, Some(1), Some(10)][rng.below(3) as usize];
    let got = db
        .records(&{
            let s = Select::all().filter(&filter).offset(offset);
            match limit {
                Some(l) => s.limit(l),
                None => s,
            }
        })
        .expect("records");
    let want_page: Vec<&&Rec> = want
        .iter()
        .skip(offset)
        .take(limit.unwrap_or(usize::MAX))
        .collect();
    let got_ids: Vec<&str> = got.iter().map(|r| r.id.as_str()).collect();
    let want_ids: Vec<&str> = want_page.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(got_ids, want_ids, "records: {ctx}");
    for (g, w) in got.iter().zip(&want_page) {
        assert_eq!(g.vector, w.vector, "record vector of {}", g.id);
        assert_eq!(g.metadata, w.meta, "record metadata of {}", g.id);
        assert_eq!(g.document, w.doc, "record document of {}", g.id);
    }
    if !search {
        return;
    }
    let dim = model.live.first().map_or(4, |r| r.vector.len());
    let items: Vec<(String, Vec<f32>)> = want
        .iter()
        .map(|r| (r.id.clone(), r.vector.clone()))
        .collect();
    let k = [1usize, 5, 20, 100][rng.below(4) as usize];
    let q = random_vector(rng, dim);
    let hits = db.search_filtered(&q, k, &filter).expect("search");
    if let Some(problem) = topk_mismatch(metric, &q, &items, &hits, k, 1e-4) {
        panic!("filtered search, k {k}: {problem}; {ctx}");
    }
    if rng.below(3) == 0 {
        let nq = 1 + rng.below(5) as usize;
        let qs: Vec<f32> = (0..nq * dim).map(|_| rng.f32()).collect();
        let lists = db
            .query(&Query::batch(&qs, k).filter(&filter))
            .expect("batch search");
        assert_eq!(lists.len(), nq);
        for (j, hits) in lists.iter().enumerate() {
            let q = &qs[j * dim..(j + 1) * dim];
            if let Some(problem) = topk_mismatch(metric, q, &items, hits, k, 1e-4) {
                panic!("filtered batch search, query {j}, k {k}: {problem}; {ctx}");
            }
        }
    }
}

fn no_auto_commit() -> OpenOptions {
    OpenOptions {
        auto_commit_rows: 0,
        ..OpenOptions::default()
    }
}

#[test]
fn thousands_of_random_filters_match_the_reference() {
    let mut rng = Rng::new(seed());
    let dir = tempdir();
    let metric = Metric::Cosine;
    let dim = 8;
    let db = Database::open(dir.path(), no_auto_commit().with_metric(metric)).expect("open");
    let mut model = Model::default();
    fill(&db, &mut model, &mut rng, "c", 600, dim);
    db.persist().expect("persist");
    // Deleted, replaced and uncommitted rows beside the committed ones.
    delete_some(&db, &mut model, &mut rng, 60);
    upsert_some(&db, &mut model, &mut rng, 60, dim);
    fill(&db, &mut model, &mut rng, "p", 200, dim);
    for i in 0..2500 {
        let (w, d) = random_filter(&mut rng, 800);
        check_filter(
            &db,
            &model,
            &mut rng,
            metric,
            w.as_ref(),
            d.as_ref(),
            i % 2 == 0,
        );
    }
}

#[test]
fn filtered_search_is_exact_across_the_parallel_and_gather_thresholds() {
    let mut rng = Rng::new(seed() ^ 0xF1);
    for metric in [Metric::L2, Metric::Dot, Metric::Cosine] {
        let db = Database::in_memory(no_auto_commit().with_metric(metric)).expect("db");
        let mut model = Model::default();
        let dim = 12;
        // 9000 rows: the blocked scan runs in parallel; the gather-scan takes over below 1/8
        // of them (1125) for one query and below 1/32 (281) for a batch.
        fill(&db, &mut model, &mut rng, "r", 9000, dim);
        delete_some(&db, &mut model, &mut rng, 300);
        upsert_some(&db, &mut model, &mut rng, 200, dim);
        for cut in [0u64, 1, 30, 250, 320, 1100, 1200, 4500, 9500] {
            let w = json!({"i": {"$lt": cut}});
            check_filter(&db, &model, &mut rng, metric, Some(&w), None, true);
            let w = json!({"$and": [{"i": {"$gte": cut}}, {"a": {"$nin": [1, 2]}}]});
            check_filter(&db, &model, &mut rng, metric, Some(&w), None, true);
        }
        for _ in 0..60 {
            let (w, d) = random_filter(&mut rng, 9000);
            check_filter(&db, &model, &mut rng, metric, w.as_ref(), d.as_ref(), true);
        }
    }
}

#[test]
fn filters_see_the_same_rows_after_reopen_and_compaction() {
    let mut rng = Rng::new(seed() ^ 0xC0);
    let dir = tempdir();
    let metric = Metric::Dot;
    let dim = 6;
    let filters: Vec<(Option<Value>, Option<Value>)> =
        (0..150).map(|_| random_filter(&mut rng, 1000)).collect();
    let mut model = Model::default();
    {
        let db = Database::open(dir.path(), no_auto_commit().with_metric(metric)).expect("open");
        fill(&db, &mut model, &mut rng, "x", 1000, dim);
        db.persist().expect("persist");
        delete_some(&db, &mut model, &mut rng, 100);
        upsert_some(&db, &mut model, &mut rng, 100, dim);
        // Warm the caches before the handle closes, so the reopen cannot pass on a fluke.
        for (w, d) in &filters[..20] {
            check_filter(&db, &model, &mut rng, metric, w.as_ref(), d.as_ref(), true);
        }
        db.close().expect("close");
    }
    let db = Database::open(dir.path(), no_auto_commit()).expect("reopen");
    for (w, d) in &filters {
        check_filter(&db, &model, &mut rng, metric, w.as_ref(), d.as_ref(), true);
    }
    // Compaction renumbers rows: the cached columns must not be reused.
    db.compact().expect("compact");
    for (w, d) in &filters {
        check_filter(&db, &model, &mut rng, metric, w.as_ref(), d.as_ref(), true);
    }
    // Rows appended after the caches were built extend them.
    fill(&db, &mut model, &mut rng, "y", 300, dim);
    for (w, d) in &filters {
        check_filter(&db, &model, &mut rng, metric, w.as_ref(), d.as_ref(), true);
    }
}

#[test]
fn delete_by_filter_deletes_exactly_the_matching_records() {
    let mut rng = Rng::new(seed() ^ 0xDE);
    let db = Database::in_memory(no_auto_commit()).expect("db");
    let mut model = Model::default();
    fill(&db, &mut model, &mut rng, "d", 1500, 4);
    db.persist().expect("persist");
    fill(&db, &mut model, &mut rng, "e", 200, 4);
    for _ in 0..40 {
        let (w, d) = random_filter(&mut rng, 1700);
        let filter = parse(w.as_ref(), d.as_ref());
        let doomed: Vec<String> = model
            .matching(w.as_ref(), d.as_ref())
            .iter()
            .map(|r| r.id.clone())
            .collect();
        // Mostly small deletes, so the database does not empty after a few rounds.
        if doomed.len() > model.live.len() / 4 {
            continue;
        }
        let n = db.remove(&Delete::matching(&filter)).expect("delete");
        assert_eq!(n, doomed.len(), "{}", describe(w.as_ref(), d.as_ref()));
        model.live.retain(|r| !doomed.contains(&r.id));
        assert_eq!(db.count(), model.live.len() as u64);
        let (w2, d2) = random_filter(&mut rng, 1700);
        check_filter(
            &db,
            &model,
            &mut rng,
            Metric::Cosine,
            w2.as_ref(),
            d2.as_ref(),
            false,
        );
    }
    // With ids: only those of the ids that match are deleted.
    let ids: Vec<String> = model.live.iter().take(50).map(|r| r.id.clone()).collect();
    let w = json!({"a": {"$lt": 5}});
    let filter = parse(Some(&w), None);
    let doomed: Vec<String> = model
        .live
        .iter()
        .take(50)
        .filter(|r| r.matches(Some(&w), None))
        .map(|r| r.id.clone())
        .collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let n = db
        .remove(&Delete::ids(&refs).filter(&filter))
        .expect("delete");
    assert_eq!(n, doomed.len());
    model.live.retain(|r| !doomed.contains(&r.id));
    for id in &ids {
        assert_eq!(db.contains(id), !doomed.contains(id), "{id}");
    }
    // An unknown id still rejects the whole call and deletes nothing.
    let mut with_unknown: Vec<&str> = model.live.iter().take(3).map(|r| r.id.as_str()).collect();
    with_unknown.push("no-such-id");
    let everything = parse(Some(&json!({})), None);
    let err = db
        .remove(&Delete::ids(&with_unknown).filter(&everything))
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert_eq!(db.count(), model.live.len() as u64);
    // ... unless unknown ids are skipped.
    let n = db
        .remove(
            &Delete::ids(&with_unknown)
                .filter(&everything)
                .skip_missing(),
        )
        .expect("delete");
    assert_eq!(n, 3);
}

#[test]
fn malformed_filters_are_invalid_filter_errors() {
    let deep = (0..33).fold(r#"{"a": 1}"#.to_owned(), |s, _| {
        format!(r#"{{"$not": {s}}}"#)
    });
    let big = format!(r#"{{"a": "{}"}}"#, "x".repeat(64 * 1024));
    for (w, part) in [
        (deep.as_str(), None),
        (big.as_str(), Some("where")),
        (r#"{"a": {"$like": "x"}}"#, Some("where.a.$like")),
        (
            r#"{"$and": [{"a": 1}, {"year": {"$gt": [1]}}]}"#,
            Some("where.$and[1].year.$gt"),
        ),
        (r#"{"a": {"$in": "x"}}"#, Some("where.a.$in")),
        (r#"{"a": {"$lte": false}}"#, Some("where.a.$lte")),
    ] {
        match Filter::parse(Some(w), None) {
            Err(Error::InvalidFilter { part: got, .. }) => {
                if let Some(part) = part {
                    assert_eq!(got, part);
                }
            }
            other => panic!(
                "expected InvalidFilter for {}, got {other:?}",
                &w[..w.len().min(80)]
            ),
        }
    }
    // It is also invalid input, as callers catching that expect.
    let err = Filter::parse(Some("{\"a\": {\"$x\": 1}}"), None).unwrap_err();
    assert!(err.to_string().contains("where.a.$x"), "{err}");
}

#[test]
fn empty_database_and_empty_results() {
    let db = Database::in_memory(OpenOptions::default()).expect("db");
    let f = parse(Some(&json!({"a": 1})), None);
    assert_eq!(db.count_matching(&f).expect("count"), 0);
    assert!(db
        .records(&Select::all().filter(&f))
        .expect("records")
        .is_empty());
    assert!(db
        .search_filtered(&[1.0, 2.0], 3, &f)
        .expect("search")
        .is_empty());
    db.add(&["x"], &[1.0, 2.0], &[Some(json!({"a": 2}).into())])
        .expect("add");
    assert!(db
        .search_filtered(&[1.0, 2.0], 3, &f)
        .expect("search")
        .is_empty());
    assert_eq!(db.remove(&Delete::matching(&f)).expect("delete"), 0);
    assert_eq!(db.count(), 1);
    // A filter with neither part is not "everything": that must be asked for with `{}`.
    let nothing = Filter::parse(None, None).expect("empty filter");
    let err = db.remove(&Delete::matching(&nothing)).unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    assert_eq!(db.count(), 1);
    let everything = Filter::parse(Some("{}"), None).expect("filter");
    assert_eq!(
        db.remove(&Delete::matching(&everything)).expect("delete"),
        1
    );
    assert_eq!(db.count(), 0);
}

/// Changes `count` random live records in place with `Store::update`: metadata, documents or
/// both (sometimes cleared), and sometimes the vector (the record then moves to the end).
fn update_some(db: &Database, model: &mut Model, rng: &mut Rng, count: usize, dim: usize) {
    for _ in 0..count {
        let i = rng.below(model.live.len() as u64) as usize;
        let id = model.live[i].id.clone();
        let refs = [id.as_str()];
        let old = model.live[i].clone();
        let (mut meta, mut doc, mut vector) = (old.meta.clone(), old.doc.clone(), old.vector);
        let mut request = srvdb::Update::ids(&refs);
        let new_meta = [random_metadata(rng, i)];
        let new_doc_owned = [random_document(rng)];
        let new_doc = [new_doc_owned[0].as_deref()];
        let new_vector = random_vector(rng, dim);
        let what = rng.below(4);
        if what != 1 {
            request = request.metadatas(&new_meta);
            meta = new_meta[0].clone();
        }
        if what >= 1 {
            request = request.documents(&new_doc);
            doc = new_doc_owned[0].clone();
        }
        let moved = what == 3;
        if moved {
            request = request.vectors(&new_vector);
            vector = new_vector.clone();
        }
        db.update(&request).expect("update");
        let rec = Rec::new(id, vector, meta, doc);
        if moved {
            model.live.remove(i);
            model.live.push(rec);
        } else {
            model.live[i] = rec;
        }
    }
}

#[test]
fn indexed_fields_and_updates_agree_with_the_reference() {
    let mut rng = Rng::new(seed() ^ 0x1D);
    let dir = tempdir();
    let metric = Metric::L2;
    let dim = 5;
    let db = Database::open(dir.path(), no_auto_commit().with_metric(metric)).expect("open");
    let mut model = Model::default();
    fill(&db, &mut model, &mut rng, "u", 1500, dim);
    let check = |db: &Database, model: &Model, rng: &mut Rng, n: usize| {
        for _ in 0..n {
            let (w, d) = random_filter(rng, 1500);
            check_filter(db, model, rng, metric, w.as_ref(), d.as_ref(), true);
        }
    };
    // Columns cached before the indexes exist, then $eq / $in answered from the indexes.
    check(&db, &model, &mut rng, 100);
    for field in ["a", "s", "tags", "n.x", "flag", "mix", "i"] {
        db.create_field_index(field).expect("create index");
    }
    check(&db, &model, &mut rng, 300);
    // Updates change rows' metadata in place: cached columns must not survive them.
    update_some(&db, &mut model, &mut rng, 150, dim);
    check(&db, &model, &mut rng, 200);
    db.persist().expect("persist");
    update_some(&db, &mut model, &mut rng, 50, dim);
    delete_some(&db, &mut model, &mut rng, 50);
    check(&db, &model, &mut rng, 200);
    db.compact().expect("compact");
    check(&db, &model, &mut rng, 100);
    db.drop_field_index("a").expect("drop index");
    check(&db, &model, &mut rng, 100);
}

#[test]
fn concurrent_filtered_searches_with_writes_and_deletes_by_filter() {
    // Records `w{i}` carry {"a": i % 10}; readers ask for a == 3 and check every hit's id, and
    // that hits never include a record a delete-by-filter removed (a == 9) before it started.
    let db = std::sync::Arc::new(Database::in_memory(no_auto_commit()).expect("db"));
    let write_range = |db: &Database, range: std::ops::Range<usize>| {
        let ids: Vec<String> = range.clone().map(|i| format!("w{i}")).collect();
        let vectors: Vec<f32> = range
            .clone()
            .flat_map(|i| [i as f32, 1.0, 0.5, -1.0])
            .collect();
        let metas: Vec<Option<Metadata>> =
            range.map(|i| Some(json!({"a": i % 10}).into())).collect();
        db.add(&ids, &vectors, &metas).expect("add");
    };
    write_range(&db, 0..2000);
    let threes = parse(Some(&json!({"a": 3})), None);
    let nines = parse(Some(&json!({"a": 9})), None);
    std::thread::scope(|s| {
        for t in 0..3 {
            let db = db.clone();
            let threes = threes.clone();
            s.spawn(move || {
                for j in 0..100 {
                    let q = [1.0, (t + j) as f32, 0.0, 1.0];
                    let hits = db.search_filtered(&q, 20, &threes).expect("search");
                    assert!(!hits.is_empty());
                    for h in &hits {
                        let i: usize = h.id[1..].parse().expect("id number");
                        assert_eq!(i % 10, 3, "hit {} does not match", h.id);
                    }
                    let n = db.count_matching(&threes).expect("count");
                    assert!(n >= 200, "{n}");
                }
            });
        }
        let db = db.clone();
        let nines = &nines;
        s.spawn(move || {
            for round in 0..10 {
                write_range(&db, 2000 + round * 100..2100 + round * 100);
                db.remove(&Delete::matching(nines)).expect("delete");
                assert_eq!(db.count_matching(nines).expect("count"), 0);
                if round % 3 == 0 {
                    db.persist().expect("persist");
                }
            }
        });
    });
    assert_eq!(db.count_matching(&threes).expect("count"), 300);
    assert_eq!(db.count_matching(&nines).expect("count"), 0);
    assert_eq!(db.count(), 3000 - 300);
}
