//! Filters and the data API through the component (`SandboxedDatabase`): filtered search,
//! `records`, `count_matching`, delete by filter, update and field indexes on random data,
//! checked against answers computed here by brute force with an evaluator of the filter dialect
//! written for this test (not the engine's), and invalid filters keeping their part and reason
//! across the WIT boundary.

mod common;
use common::component_config;
use serde_json::{json, Map, Value};
use srvdb::{
    Delete, Error, Filter, Metadata, Metric, OpenOptions, Query, Select, Store, Update, Write,
};
use srvdb_host::{Sandbox, SandboxedDatabase};
use std::cmp::Ordering;

const DIM: usize = 8;
const ROWS: usize = 400;

/// The repository's seeded test generator (`SRVDB_SEED` replays a run), with the small
/// helpers these tests draw with.
struct Rng(srvdb::testing::Rng);

impl Rng {
    /// A stream of its own per test: the shared seed mixed with `salt`.
    fn new(salt: u64) -> Self {
        let seed = srvdb::testing::seed();
        eprintln!("seed {seed} (SRVDB_SEED replays it), salt {salt}");
        Rng(srvdb::testing::Rng::new(seed ^ salt))
    }
    fn below(&mut self, n: usize) -> usize {
        self.0.below(n as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn unit(&mut self) -> f32 {
        self.0.f32()
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const TAGS: [&str; 5] = ["alpha", "beta", "gamma", "delta", "Beta"];
const WORDS: [&str; 6] = ["rust", "wasm", "vector", "filter", "Rust", "db"];

/// One known record: what was written, kept to compute the expected answers.
#[derive(Clone)]
struct Row {
    id: String,
    vector: Vec<f32>,
    /// The metadata text as stored.
    metadata: Option<String>,
    document: Option<String>,
}

/// Random metadata of the kinds users filter on, with the dialect's edges: missing fields,
/// ints and floats, lists, nested objects, bools, nulls, and metadata that is not an object.
fn random_metadata(rng: &mut Rng) -> Option<String> {
    match rng.below(20) {
        0 => return None,
        1 => return Some("plain text, not JSON".into()),
        2 => return Some("[1, 2, 3]".into()),
        3 => return Some("2000".into()),
        _ => {}
    }
    let mut m = Map::new();
    if rng.chance(85) {
        let year = 1990 + rng.below(31) as i64;
        // Some years are written as floats: 2000.0 must equal 2000.
        let v = if rng.chance(20) {
            json!(year as f64)
        } else {
            json!(year)
        };
        m.insert("year".into(), v);
    }
    if rng.chance(80) {
        m.insert("score".into(), json!(rng.below(41) as f64 / 4.0));
    }
    if rng.chance(80) {
        // Mostly a string; sometimes a number or bool, to exercise type mismatches.
        let v = match rng.below(10) {
            0 => json!(3),
            1 => json!(true),
            2 => Value::Null,
            _ => json!(rng.pick(&TAGS)),
        };
        m.insert("tag".into(), v);
    }
    if rng.chance(70) {
        m.insert("flag".into(), json!(rng.chance(50)));
    }
    if rng.chance(60) {
        let n = rng.below(4);
        let list: Vec<Value> = (0..n)
            .map(|_| {
                if rng.chance(15) {
                    json!(rng.below(3))
                } else {
                    json!(rng.pick(&TAGS))
                }
            })
            .collect();
        m.insert("tags".into(), Value::Array(list));
    }
    if rng.chance(60) {
        let inner = match rng.below(5) {
            0 => json!(7),
            _ => json!({ "b": rng.below(5), "c": rng.pick(&TAGS) }),
        };
        m.insert("a".into(), inner);
    }
    if rng.chance(10) {
        // An exact top-level dotted key wins over the path.
        m.insert("a.b".into(), json!(rng.below(5) + 100));
    }
    Some(Value::Object(m).to_string())
}

fn random_document(rng: &mut Rng) -> Option<String> {
    if rng.chance(15) {
        return None;
    }
    let n = 1 + rng.below(4);
    let words: Vec<&str> = (0..n).map(|_| *rng.pick(&WORDS)).collect();
    Some(words.join(" "))
}

fn random_rows(rng: &mut Rng, n: usize, prefix: &str) -> Vec<Row> {
    (0..n)
        .map(|i| Row {
            id: format!("{prefix}{i}"),
            vector: (0..DIM).map(|_| rng.unit()).collect(),
            metadata: random_metadata(rng),
            document: random_document(rng),
        })
        .collect()
}

// ---- The reference evaluator of the dialect (docs: "The filter dialect") ----

/// The value at a dotted path; an exact top-level key wins; null counts as missing.
fn lookup<'a>(meta: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    let found = match meta.get(name) {
        Some(v) => Some(v),
        None => {
            let mut parts = name.split('.');
            let mut cur = meta.get(parts.next()?)?;
            for part in parts {
                cur = cur.as_object()?.get(part)?;
            }
            Some(cur)
        }
    };
    found.filter(|v| !v.is_null())
}

fn scalar_eq(v: &Value, s: &Value) -> bool {
    match (v, s) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::String(a), Value::String(b)) => a == b,
        (Value::Bool(a), Value::Bool(b)) => a == b,
        _ => false,
    }
}

fn scalar_cmp(v: &Value, s: &Value) -> Option<Ordering> {
    match (v, s) {
        (Value::Number(a), Value::Number(b)) => a.as_f64()?.partial_cmp(&b.as_f64()?),
        (Value::String(a), Value::String(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
        _ => None,
    }
}

/// One operator on one present value (a list is handled by the caller).
fn op_on(op: &str, v: &Value, operand: &Value) -> bool {
    let ord = |want: &dyn Fn(Ordering) -> bool| scalar_cmp(v, operand).is_some_and(want);
    match op {
        "$eq" => scalar_eq(v, operand),
        "$gt" => ord(&|o| o == Ordering::Greater),
        "$gte" => ord(&|o| o != Ordering::Less),
        "$lt" => ord(&|o| o == Ordering::Less),
        "$lte" => ord(&|o| o != Ordering::Greater),
        "$in" => operand
            .as_array()
            .is_some_and(|l| l.iter().any(|s| scalar_eq(v, s))),
        other => panic!("reference: {other} is handled by the caller"),
    }
}

fn field_matches(meta: &Map<String, Value>, name: &str, op: &str, operand: &Value) -> bool {
    let Some(value) = lookup(meta, name) else {
        return op == "$ne" || op == "$nin";
    };
    // `$ne` / `$nin` are the negations of `$eq` / `$in` over present values.
    let (positive, negate) = match op {
        "$ne" => ("$eq", true),
        "$nin" => ("$in", true),
        other => (other, false),
    };
    let hit = match value {
        Value::Array(items) => items.iter().any(|v| op_on(positive, v, operand)),
        v => op_on(positive, v, operand),
    };
    hit != negate
}

/// `where` on one row's metadata text (`None`: no metadata, an empty object).
fn where_matches(filter: &Value, metadata: Option<&str>) -> bool {
    let empty = Map::new();
    let parsed = metadata.map(|m| serde_json::from_str::<Value>(m).ok());
    let meta: Option<&Map<String, Value>> = match &parsed {
        None => Some(&empty),
        Some(Some(Value::Object(m))) => Some(m),
        Some(_) => None,
    };
    eval_where(filter, meta)
}

/// `meta` is `None` for metadata that is not an object: no field predicate matches it.
fn eval_where(filter: &Value, meta: Option<&Map<String, Value>>) -> bool {
    let obj = filter.as_object().expect("reference: where is an object");
    obj.iter().all(|(key, value)| match key.as_str() {
        "$and" => value
            .as_array()
            .expect("list")
            .iter()
            .all(|w| eval_where(w, meta)),
        "$or" => value
            .as_array()
            .expect("list")
            .iter()
            .any(|w| eval_where(w, meta)),
        "$not" => !eval_where(value, meta),
        field => {
            let Some(meta) = meta else { return false };
            match value {
                Value::Object(ops) => ops
                    .iter()
                    .all(|(op, operand)| field_matches(meta, field, op, operand)),
                scalar => field_matches(meta, field, "$eq", scalar),
            }
        }
    })
}

fn document_matches(filter: &Value, document: Option<&str>) -> bool {
    let obj = filter
        .as_object()
        .expect("reference: where_document is an object");
    let (key, value) = obj.iter().next().expect("one key");
    match key.as_str() {
        "$contains" => document.is_some_and(|d| d.contains(value.as_str().expect("text"))),
        "$not_contains" => !document.is_some_and(|d| d.contains(value.as_str().expect("text"))),
        "$and" => value
            .as_array()
            .expect("list")
            .iter()
            .all(|f| document_matches(f, document)),
        "$or" => value
            .as_array()
            .expect("list")
            .iter()
            .any(|f| document_matches(f, document)),
        other => panic!("reference: unknown document operator {other}"),
    }
}

/// A filter in both forms: the JSON the test evaluates and the engine's parsed `Filter`.
struct Case {
    where_: Option<Value>,
    document: Option<Value>,
    filter: Filter,
}

impl Case {
    fn new(where_: Option<Value>, document: Option<Value>) -> Case {
        let w = where_.as_ref().map(Value::to_string);
        let d = document.as_ref().map(Value::to_string);
        let filter = Filter::parse(w.as_deref(), d.as_deref())
            .unwrap_or_else(|e| panic!("a valid filter {w:?} {d:?} was rejected: {e}"));
        Case {
            where_,
            document,
            filter,
        }
    }

    fn matches(&self, row: &Row) -> bool {
        self.where_
            .as_ref()
            .is_none_or(|w| where_matches(w, row.metadata.as_deref()))
            && self
                .document
                .as_ref()
                .is_none_or(|d| document_matches(d, row.document.as_deref()))
    }

    fn label(&self) -> String {
        format!("where={:?} where_document={:?}", self.where_, self.document)
    }
}

/// A random scalar operand, sometimes of the wrong type for the field.
fn random_scalar(rng: &mut Rng, field: &str) -> Value {
    let right = match field {
        "year" => json!(1990 + rng.below(31)),
        "score" | "a.b" => json!(rng.below(41) as f64 / 4.0),
        "flag" => json!(rng.chance(50)),
        _ => json!(rng.pick(&TAGS)),
    };
    match rng.below(10) {
        0 => json!(rng.pick(&TAGS)),
        1 => json!(rng.chance(50)),
        2 => json!(2000.0),
        _ => right,
    }
}

const FIELDS: [&str; 9] = [
    "year", "score", "tag", "flag", "tags", "a.b", "a.c", "a", "missing",
];

fn random_predicate(rng: &mut Rng) -> (String, Value) {
    let field = *rng.pick(&FIELDS);
    let op = *rng.pick(&[
        "bare", "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin",
    ]);
    let value = match op {
        "bare" => random_scalar(rng, field),
        "$in" | "$nin" => {
            let n = rng.below(4);
            let list: Vec<Value> = (0..n).map(|_| random_scalar(rng, field)).collect();
            json!({ op: list })
        }
        "$gt" | "$gte" | "$lt" | "$lte" => {
            // Ordering operands are numbers or strings (a bool is invalid).
            let mut s = random_scalar(rng, field);
            if s.is_boolean() {
                s = json!(2005);
            }
            // Sometimes a range: two operators on one field.
            if rng.chance(25) {
                json!({ op: s, "$lte": 2015 })
            } else {
                json!({ op: s })
            }
        }
        _ => json!({ op: random_scalar(rng, field) }),
    };
    (field.to_owned(), value)
}

fn random_where(rng: &mut Rng, depth: usize) -> Value {
    match if depth == 0 { 0 } else { rng.below(6) } {
        0 | 1 => {
            let (f, v) = random_predicate(rng);
            json!({ f: v })
        }
        2 => {
            // Several keys at one level: an implicit $and.
            let mut m = Map::new();
            for _ in 0..2 + rng.below(2) {
                let (f, v) = random_predicate(rng);
                m.insert(f, v);
            }
            Value::Object(m)
        }
        3 => json!({ "$not": random_where(rng, depth - 1) }),
        k => {
            let n = 1 + rng.below(3);
            let list: Vec<Value> = (0..n).map(|_| random_where(rng, depth - 1)).collect();
            json!({ if k == 4 { "$and" } else { "$or" }: list })
        }
    }
}

fn random_document_filter(rng: &mut Rng, depth: usize) -> Value {
    match if depth == 0 { 0 } else { rng.below(4) } {
        0 | 1 => {
            let op = if rng.chance(70) {
                "$contains"
            } else {
                "$not_contains"
            };
            json!({ op: rng.pick(&WORDS) })
        }
        k => {
            let n = 1 + rng.below(3);
            let list: Vec<Value> = (0..n)
                .map(|_| random_document_filter(rng, depth - 1))
                .collect();
            json!({ if k == 2 { "$and" } else { "$or" }: list })
        }
    }
}

/// Hand-written cases for each edge the dialect specifies, then random ones.
fn cases(rng: &mut Rng, random: usize) -> Vec<Case> {
    let w = |v: Value| Case::new(Some(v), None);
    let mut out = vec![
        w(json!({})),
        w(json!({ "year": 2000 })),
        w(json!({ "year": 2000.0 })),
        w(json!({ "year": { "$gt": 2000 } })),
        w(json!({ "year": { "$gte": 2000, "$lt": 2010 } })),
        w(json!({ "year": { "$ne": 2000 } })),
        w(json!({ "year": { "$nin": [1995, 2005] } })),
        w(json!({ "year": { "$in": [] } })),
        w(json!({ "year": { "$nin": [] } })),
        w(json!({ "year": "2000" })),
        w(json!({ "tag": "beta" })),
        w(json!({ "tag": { "$ne": "beta" } })),
        w(json!({ "tag": { "$gt": "beta" } })),
        w(json!({ "tag": 3 })),
        w(json!({ "tag": true })),
        w(json!({ "flag": true })),
        w(json!({ "flag": 1 })),
        w(json!({ "tags": "gamma" })),
        w(json!({ "tags": { "$in": ["alpha", 2] } })),
        w(json!({ "tags": { "$ne": "gamma" } })),
        w(json!({ "tags": { "$nin": ["gamma", "delta"] } })),
        w(json!({ "a.b": 2 })),
        w(json!({ "a.b": { "$ne": 2 } })),
        w(json!({ "a": 7 })),
        w(json!({ "a": { "$ne": 7 } })),
        w(json!({ "missing": { "$ne": 1 } })),
        w(json!({ "missing": { "$nin": [1] } })),
        w(json!({ "missing": 1 })),
        w(json!({ "$not": { "year": 2000 } })),
        w(json!({ "$or": [{ "tag": "alpha" }, { "year": { "$lt": 1995 } }] })),
        w(json!({ "$and": [{ "tag": "alpha" }, { "flag": false }] })),
        w(json!({ "tag": "alpha", "flag": false })),
        Case::new(None, Some(json!({ "$contains": "rust" }))),
        Case::new(None, Some(json!({ "$not_contains": "rust" }))),
        Case::new(
            None,
            Some(json!({ "$or": [{ "$contains": "Rust" }, { "$contains": "db" }] })),
        ),
        Case::new(
            Some(json!({ "year": { "$gte": 2005 } })),
            Some(json!({ "$contains": "vector" })),
        ),
    ];
    for _ in 0..random {
        let where_ = rng.chance(85).then(|| random_where(rng, 3));
        let document = rng.chance(25).then(|| random_document_filter(rng, 2));
        out.push(Case::new(where_, document));
    }
    out
}

// ---- Helpers over the sandboxed database ----

fn sandbox() -> Sandbox {
    Sandbox::new(component_config()).expect("load the component")
}

fn options() -> OpenOptions {
    OpenOptions {
        metric: Some(Metric::L2),
        ..OpenOptions::default()
    }
}

fn write_rows(db: &SandboxedDatabase, rows: &[Row]) {
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    let vectors: Vec<f32> = rows.iter().flat_map(|r| r.vector.clone()).collect();
    let metas: Vec<Option<Metadata>> = rows
        .iter()
        .map(|r| r.metadata.clone().map(Metadata::from_text))
        .collect();
    let docs: Vec<Option<&str>> = rows.iter().map(|r| r.document.as_deref()).collect();
    db.write(
        &Write::add(&ids, &vectors)
            .metadatas(&metas)
            .documents(&docs),
    )
    .expect("write");
}

fn l2(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum()
}

/// Checks a filtered top-k against brute force over the matching rows: as many hits as
/// `min(k, matching)`, each a matching row with its true distance, the distances those of
/// the true k nearest (ties may order either way).
fn check_hits(hits: &[srvdb::SearchHit], rows: &[Row], case: &Case, query: &[f32], k: usize) {
    let matching: Vec<&Row> = rows.iter().filter(|r| case.matches(r)).collect();
    let mut best: Vec<f64> = matching.iter().map(|r| l2(&r.vector, query)).collect();
    best.sort_by(f64::total_cmp);
    best.truncate(k);
    assert_eq!(hits.len(), best.len(), "{}: number of hits", case.label());
    for (hit, want) in hits.iter().zip(&best) {
        let row = matching
            .iter()
            .find(|r| r.id == hit.id)
            .unwrap_or_else(|| panic!("{}: hit {} does not match", case.label(), hit.id));
        let true_score = l2(&row.vector, query);
        assert!(
            (f64::from(hit.score) - true_score).abs() < 1e-4,
            "{}: {} scored {} (true {true_score})",
            case.label(),
            hit.id,
            hit.score
        );
        assert!(
            (f64::from(hit.score) - want).abs() < 1e-4,
            "{}: {} at distance {} is not among the k nearest ({want} expected)",
            case.label(),
            hit.id,
            hit.score
        );
    }
}

/// Every read with a filter (count, records with paging, single and batch search) against the
/// reference answers over `rows` (the live records, in insertion order).
fn check_reads(db: &SandboxedDatabase, rows: &[Row], cases: &[Case], rng: &mut Rng) {
    for case in cases {
        let expected: Vec<&str> = rows
            .iter()
            .filter(|r| case.matches(r))
            .map(|r| r.id.as_str())
            .collect();
        let count = db.count_matching(&case.filter).expect("count_matching");
        assert_eq!(count, expected.len() as u64, "{}: count", case.label());

        let got = db
            .records(&Select::all().filter(&case.filter))
            .expect("records");
        let got_ids: Vec<&str> = got.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(got_ids, expected, "{}: records", case.label());
        for record in &got {
            let row = rows.iter().find(|r| r.id == record.id).expect("known id");
            assert_eq!(record.vector, row.vector, "{}: vector", record.id);
            assert_eq!(
                record.metadata.as_ref().map(Metadata::as_str),
                row.metadata.as_deref(),
                "{}: metadata",
                record.id
            );
            assert_eq!(record.document, row.document, "{}: document", record.id);
        }

        let (offset, limit) = (rng.below(5), rng.below(7));
        let page = db
            .records(
                &Select::all()
                    .filter(&case.filter)
                    .offset(offset)
                    .limit(limit),
            )
            .expect("records page");
        let page_ids: Vec<&str> = page.iter().map(|r| r.id.as_str()).collect();
        let want: Vec<&str> = expected.iter().copied().skip(offset).take(limit).collect();
        assert_eq!(
            page_ids,
            want,
            "{}: records offset {offset} limit {limit}",
            case.label()
        );

        let query: Vec<f32> = (0..DIM).map(|_| rng.unit()).collect();
        let k = 1 + rng.below(12);
        let hits = db
            .search_filtered(&query, k, &case.filter)
            .expect("filtered search");
        check_hits(&hits, rows, case, &query, k);

        let queries: Vec<f32> = (0..3 * DIM).map(|_| rng.unit()).collect();
        let lists = db
            .query(&Query::batch(&queries, k).filter(&case.filter))
            .expect("filtered batch search");
        assert_eq!(lists.len(), 3, "{}: one list per query", case.label());
        for (list, q) in lists.iter().zip(queries.chunks(DIM)) {
            check_hits(list, rows, case, q, k);
        }
    }
}

#[test]
fn filtered_reads_match_brute_force() {
    let mut rng = Rng::new(15);
    let rows = random_rows(&mut rng, ROWS, "r");
    let cases = cases(&mut rng, 400);
    let dir = tempfile::tempdir().expect("tmp");
    let db = sandbox().open(dir.path(), options()).expect("open");
    // Two batches and a commit between them: filters read both committed and pending rows.
    write_rows(&db, &rows[..ROWS / 2]);
    db.persist().expect("persist");
    write_rows(&db, &rows[ROWS / 2..]);
    // The cases must discriminate: many match some rows but not all (about half do; many
    // random ones match none, through type mismatches, or all, through `$ne` on a missing field).
    let partial = cases
        .iter()
        .filter(|c| {
            let n = rows.iter().filter(|r| c.matches(r)).count();
            n > 0 && n < rows.len()
        })
        .count();
    assert!(
        partial * 3 > cases.len(),
        "only {partial} of {} filters select a proper subset",
        cases.len()
    );
    check_reads(&db, &rows, &cases, &mut rng);
    db.close().expect("close");
}

#[test]
fn delete_by_filter_update_and_upsert_match_brute_force() {
    let mut rng = Rng::new(1515);
    let mut rows = random_rows(&mut rng, ROWS, "d");
    let cases = cases(&mut rng, 60);
    let dir = tempfile::tempdir().expect("tmp");
    let db = sandbox().open(dir.path(), options()).expect("open");
    write_rows(&db, &rows);

    // Delete every record a filter matches.
    let gone = Case::new(Some(json!({ "tag": "beta" })), None);
    let expected = rows.iter().filter(|r| gone.matches(r)).count();
    assert!(expected > 0, "the data must hold some tag beta");
    let n = db.remove(&Delete::matching(&gone.filter)).expect("delete");
    assert_eq!(n, expected, "deleted by filter");
    rows.retain(|r| !gone.matches(r));
    assert_eq!(db.count().expect("count"), rows.len() as u64);
    assert_eq!(db.count_matching(&gone.filter).expect("count"), 0);

    // Ids that also match a filter: only the matching ones go.
    let some: Vec<&str> = rows.iter().take(40).map(|r| r.id.as_str()).collect();
    let old = Case::new(Some(json!({ "year": { "$lt": 2005 } })), None);
    let expected: Vec<String> = rows
        .iter()
        .take(40)
        .filter(|r| old.matches(r))
        .map(|r| r.id.clone())
        .collect();
    let n = db
        .remove(&Delete::ids(&some).filter(&old.filter))
        .expect("delete ids by filter");
    assert_eq!(n, expected.len(), "deleted of the given ids");
    rows.retain(|r| !expected.contains(&r.id));
    let ids = db.ids().expect("ids");
    let want: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, want, "ids after deletes");

    // An unknown id still rejects the whole delete, filter or not.
    let err = db
        .remove(&Delete::ids(&[rows[0].id.as_str(), "nope"]).filter(&old.filter))
        .expect_err("unknown id");
    assert!(
        matches!(err, Error::NotFound { ref id } if id == "nope"),
        "{err:?}"
    );
    assert_eq!(db.count().expect("count"), rows.len() as u64);

    // Metadata-only update: the vector stays, filters see the new metadata.
    let changed: Vec<usize> = (0..rows.len()).step_by(7).collect();
    let ids: Vec<String> = changed.iter().map(|&i| rows[i].id.clone()).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let new_meta: Vec<Option<String>> = changed.iter().map(|_| random_metadata(&mut rng)).collect();
    let metas: Vec<Option<Metadata>> = new_meta
        .iter()
        .map(|m| m.clone().map(Metadata::from_text))
        .collect();
    db.update(&Update::ids(&id_refs).metadatas(&metas))
        .expect("metadata update");
    for (&i, m) in changed.iter().zip(&new_meta) {
        rows[i].metadata = m.clone();
    }

    // Document-only update.
    let docs_new: Vec<Option<String>> = ids.iter().map(|_| random_document(&mut rng)).collect();
    let docs: Vec<Option<&str>> = docs_new.iter().map(Option::as_deref).collect();
    db.update(&Update::ids(&id_refs).documents(&docs))
        .expect("document update");
    for (&i, d) in changed.iter().zip(&docs_new) {
        rows[i].document = d.clone();
    }

    // Vector update of a few.
    let few = &id_refs[..5];
    let vectors: Vec<f32> = (0..5 * DIM).map(|_| rng.unit()).collect();
    db.update(&Update::ids(few).vectors(&vectors))
        .expect("vector update");
    for (j, &i) in changed.iter().take(5).enumerate() {
        rows[i].vector = vectors[j * DIM..(j + 1) * DIM].to_vec();
    }

    // An update of an unknown id changes nothing.
    let err = db
        .update(&Update::ids(&[id_refs[0], "nope"]).metadatas(&[None, None]))
        .expect_err("unknown id");
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");

    // Upsert: replaced records carry their new metadata (and move to the end).
    let mut fresh = random_rows(&mut rng, 10, "u");
    for (j, row) in fresh.iter_mut().enumerate() {
        row.id = rows[j * 3].id.clone();
    }
    let up_ids: Vec<&str> = fresh.iter().map(|r| r.id.as_str()).collect();
    let up_vecs: Vec<f32> = fresh.iter().flat_map(|r| r.vector.clone()).collect();
    let up_metas: Vec<Option<Metadata>> = fresh
        .iter()
        .map(|r| r.metadata.clone().map(Metadata::from_text))
        .collect();
    let up_docs: Vec<Option<&str>> = fresh.iter().map(|r| r.document.as_deref()).collect();
    db.write(
        &Write::upsert(&up_ids, &up_vecs)
            .metadatas(&up_metas)
            .documents(&up_docs),
    )
    .expect("upsert");
    rows.retain(|r| !up_ids.contains(&r.id.as_str()));
    rows.extend(fresh);

    // Insertion order after a vector update is the engine's to define (a new row, as an
    // upsert): compare reads in the order the engine lists ids, the rows themselves by id.
    let order = db.ids().expect("ids");
    let by_order: Vec<Row> = order
        .iter()
        .map(|id| {
            rows.iter()
                .find(|r| &r.id == id)
                .unwrap_or_else(|| panic!("unexpected id {id}"))
                .clone()
        })
        .collect();
    assert_eq!(by_order.len(), rows.len(), "live ids");
    check_reads(&db, &by_order, &cases, &mut rng);

    // Compaction renumbers rows: the same answers after it and after a reopen.
    db.compact().expect("compact");
    check_reads(&db, &by_order, &cases[..20], &mut rng);
    db.close().expect("close");
    let db = sandbox().open(dir.path(), options()).expect("reopen");
    check_reads(&db, &by_order, &cases[..20], &mut rng);
    db.close().expect("close");
}

#[test]
fn field_indexes_give_the_same_answers_and_persist() {
    let mut rng = Rng::new(151515);
    let mut rows = random_rows(&mut rng, ROWS, "i");
    let cases = cases(&mut rng, 150);
    let dir = tempfile::tempdir().expect("tmp");
    let db = sandbox().open(dir.path(), options()).expect("open");
    assert!(db.field_indexes().expect("indexes").is_empty());
    write_rows(&db, &rows[..ROWS / 2]);
    db.create_field_index("tag").expect("index tag");
    db.create_field_index("a.b").expect("index a.b");
    db.create_field_index("tag")
        .expect("creating again is a no-op");
    // Rows written after the index was created are indexed too.
    write_rows(&db, &rows[ROWS / 2..]);
    assert_eq!(db.field_indexes().expect("indexes"), ["a.b", "tag"]);
    check_reads(&db, &rows, &cases, &mut rng);

    // Deletes and a metadata update keep the index right.
    let gone = Case::new(Some(json!({ "tag": { "$in": ["alpha", "Beta"] } })), None);
    let n = db.remove(&Delete::matching(&gone.filter)).expect("delete");
    assert_eq!(n, rows.iter().filter(|r| gone.matches(r)).count());
    rows.retain(|r| !gone.matches(r));
    let ids: Vec<&str> = rows.iter().take(30).map(|r| r.id.as_str()).collect();
    let metas: Vec<Option<Metadata>> = ids
        .iter()
        .map(|_| {
            Some(Metadata::from_text(
                json!({ "tag": "gamma", "a": { "b": 4 } }).to_string(),
            ))
        })
        .collect();
    db.update(&Update::ids(&ids).metadatas(&metas))
        .expect("update");
    for (row, m) in rows.iter_mut().zip(&metas) {
        row.metadata = m.as_ref().map(|m| m.as_str().to_owned());
    }
    check_reads(&db, &rows, &cases, &mut rng);

    // The indexes survive a reopen and a compaction.
    db.close().expect("close");
    let db = sandbox().open(dir.path(), options()).expect("reopen");
    assert_eq!(db.field_indexes().expect("indexes"), ["a.b", "tag"]);
    check_reads(&db, &rows, &cases[..60], &mut rng);
    db.compact().expect("compact");
    check_reads(&db, &rows, &cases[..60], &mut rng);

    assert!(db.drop_field_index("tag").expect("drop"));
    assert!(!db.drop_field_index("tag").expect("drop again"));
    assert_eq!(db.field_indexes().expect("indexes"), ["a.b"]);
    check_reads(&db, &rows, &cases[..60], &mut rng);
    db.close().expect("close");
}

/// Malformed filters, each with the place the dialect's error must name.
const INVALID: [(Option<&str>, Option<&str>, &str); 9] = [
    (Some(r#"{"year": {"$foo": 1}}"#), None, "where.year.$foo"),
    (Some(r#"{"$xor": []}"#), None, "where.$xor"),
    (
        Some(r#"{"$and": [{"a": 1}, {"year": {"$gt": true}}]}"#),
        None,
        "where.$and[1].year.$gt",
    ),
    (Some(r#"{"year": {"$in": 3}}"#), None, "where.year.$in"),
    (Some(r#"{"year": null}"#), None, "where.year"),
    (Some(r#"{"$or": []}"#), None, "where.$or"),
    (Some(r#"[1, 2]"#), None, "where"),
    (
        None,
        Some(r#"{"$contains": 5}"#),
        "where_document.$contains",
    ),
    (
        None,
        Some(r#"{"$or": [{"$bad": "x"}]}"#),
        "where_document.$or[0].$bad",
    ),
];

/// The error the guest's parser gives must be the host's `Filter::parse` error, field for
/// field, and name the part the dialect specifies.
#[test]
fn invalid_filters_keep_their_part_and_reason_across_the_boundary() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sandbox().open(dir.path(), options()).expect("open");
    write_rows(&db, &random_rows(&mut Rng::new(7), 5, "x"));

    // 40 nested `$not`s around one predicate: deeper than the 32 levels allowed.
    let deep = format!(
        r#"{}{{"a": 1}}{}"#,
        r#"{"$not": "#.repeat(40),
        "}".repeat(40)
    );
    let huge = format!(
        r#"{{"tag": "{}"}}"#,
        "x".repeat(srvdb::filter::MAX_FILTER_BYTES)
    );
    let mut all: Vec<(Option<&str>, Option<&str>, Option<&str>)> = INVALID
        .iter()
        .map(|&(w, d, part)| (w, d, Some(part)))
        .collect();
    all.push((Some(&deep), None, None));
    all.push((Some(&huge), None, Some("where")));

    for (where_json, document_json, part) in all {
        let native =
            Filter::parse(where_json, document_json).expect_err("the host-side parser rejects it");
        let guest = db
            .count_matching_unparsed(where_json, document_json)
            .expect_err("the guest rejects it");
        let short = |s: Option<&str>| s.map(|s| s.chars().take(60).collect::<String>());
        let label = format!("{:?} {:?}", short(where_json), short(document_json));
        assert_eq!(format!("{guest:?}"), format!("{native:?}"), "{label}");
        let Error::InvalidFilter { part: got, reason } = &guest else {
            panic!("{label}: not an InvalidFilter: {guest:?}");
        };
        assert!(!reason.is_empty(), "{label}: a reason");
        if let Some(part) = part {
            assert_eq!(got, part, "{label}: part");
        }
        assert!(
            guest.to_string().starts_with("invalid filter at "),
            "{label}: {guest}"
        );
    }
    // The handle still serves after rejected filters.
    assert_eq!(db.count().expect("count"), 5);
    db.close().expect("close");
}

/// The plumbing alone: an empty filter counts everything, a filter parsed on the host reaches
/// the guest's engine on every filtered call.
#[test]
fn empty_filter_matches_everything() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sandbox().open(dir.path(), options()).expect("open");
    let rows = random_rows(&mut Rng::new(3), 20, "e");
    write_rows(&db, &rows);
    let all = Filter::parse(None, None).expect("empty filter");
    assert_eq!(db.count_matching(&all).expect("count"), 20);
    let everything = Filter::parse(Some("{}"), None).expect("{}");
    assert_eq!(db.count_matching(&everything).expect("count"), 20);
    let records = db.records(&Select::all()).expect("records");
    let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
    let want: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, want);
    db.close().expect("close");
}

/// Update and field indexes without a filter: every change read back by id against the rows
/// kept here, vectors found again by an exact search, indexes listed after a reopen.
#[test]
fn update_and_field_indexes_cross_the_boundary() {
    let mut rng = Rng::new(99);
    let mut rows = random_rows(&mut rng, 50, "p");
    let dir = tempfile::tempdir().expect("tmp");
    let db = sandbox().open(dir.path(), options()).expect("open");
    write_rows(&db, &rows);

    let ids: Vec<String> = rows.iter().step_by(3).map(|r| r.id.clone()).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let new_meta: Vec<Option<String>> = ids.iter().map(|_| random_metadata(&mut rng)).collect();
    let metas: Vec<Option<Metadata>> = new_meta
        .iter()
        .map(|m| m.clone().map(Metadata::from_text))
        .collect();
    let new_docs: Vec<Option<String>> = ids.iter().map(|_| random_document(&mut rng)).collect();
    let docs: Vec<Option<&str>> = new_docs.iter().map(Option::as_deref).collect();
    db.update(&Update::ids(&id_refs).metadatas(&metas).documents(&docs))
        .expect("update metadata and documents");
    let vectors: Vec<f32> = (0..ids.len() * DIM).map(|_| rng.unit()).collect();
    db.update(&Update::ids(&id_refs).vectors(&vectors))
        .expect("update vectors");
    for (j, id) in ids.iter().enumerate() {
        let row = rows.iter_mut().find(|r| &r.id == id).expect("row");
        row.metadata = new_meta[j].clone();
        row.document = new_docs[j].clone();
        row.vector = vectors[j * DIM..(j + 1) * DIM].to_vec();
    }
    let err = db
        .update(&Update::ids(&["nope"]).documents(&[Some("x")]))
        .expect_err("unknown id");
    assert!(
        matches!(err, Error::NotFound { ref id } if id == "nope"),
        "{err:?}"
    );

    db.create_field_index("year").expect("index");
    assert_eq!(db.field_indexes().expect("indexes"), ["year"]);
    db.close().expect("close");

    let db = sandbox().open(dir.path(), options()).expect("reopen");
    assert_eq!(db.field_indexes().expect("indexes"), ["year"]);
    assert_eq!(db.count().expect("count"), rows.len() as u64);
    for row in &rows {
        let got = db.get(&row.id).expect("get").expect("present");
        assert_eq!(got.vector, row.vector, "{}: vector", row.id);
        assert_eq!(
            got.metadata.as_ref().map(Metadata::as_str),
            row.metadata.as_deref(),
            "{}: metadata",
            row.id
        );
        assert_eq!(got.document, row.document, "{}: document", row.id);
        // The exact vector is its own nearest neighbour at distance 0.
        let hits = db.search(&row.vector, 1).expect("search");
        assert_eq!(hits[0].id, row.id, "search finds {}", row.id);
    }
    assert!(db.drop_field_index("year").expect("drop"));
    assert!(!db.drop_field_index("year").expect("drop again"));
    assert!(db.field_indexes().expect("indexes").is_empty());
    db.close().expect("close");
}

/// A trap (here the fuel budget) restarts the instance at the last commit: the field index and
/// the committed metadata update are there, the uncommitted one is gone, and filters (through
/// the index) answer from the recovered state.
#[test]
fn field_indexes_and_updates_survive_a_trap_at_their_last_commit() {
    let mut config = component_config();
    config.fuel_per_call = Some(30_000_000);
    let sandbox = Sandbox::new(config).expect("load");
    let dir = tempfile::tempdir().expect("tmp");
    let db = sandbox.open(dir.path(), options()).expect("open");
    let mut rng = Rng::new(4242);
    let (n, dim) = (200, 64);
    let ids: Vec<String> = (0..n).map(|i| format!("t{i}")).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let vectors: Vec<f32> = (0..n * dim).map(|_| rng.unit()).collect();
    let mut tags: Vec<String> = (0..n).map(|i| TAGS[i % 3].to_owned()).collect();
    let tag_meta = |t: &str| Some(Metadata::from_text(json!({ "tag": t }).to_string()));
    let metas: Vec<Option<Metadata>> = tags.iter().map(|t| tag_meta(t)).collect();
    db.write(&Write::add(&id_refs, &vectors).metadatas(&metas))
        .expect("add");
    db.create_field_index("tag").expect("index");
    let committed: Vec<Option<Metadata>> = (0..10).map(|_| tag_meta("z")).collect();
    db.update(&Update::ids(&id_refs[..10]).metadatas(&committed))
        .expect("update");
    for t in &mut tags[..10] {
        *t = "z".into();
    }
    db.persist().expect("persist");
    let lost: Vec<Option<Metadata>> = (0..10).map(|_| tag_meta("lost")).collect();
    db.update(&Update::ids(&id_refs[10..20]).metadatas(&lost))
        .expect("uncommitted update");
    let lost_filter = Filter::parse(Some(r#"{"tag": "lost"}"#), None).expect("filter");
    assert_eq!(db.count_matching(&lost_filter).expect("count"), 10);

    let queries: Vec<f32> = (0..2000 * dim).map(|_| rng.unit()).collect();
    match db.search_batch(&queries, 10) {
        Err(Error::Sandbox { .. }) => {}
        other => panic!(
            "expected the fuel budget to stop the call, got {:?}",
            other.map(|l| l.len())
        ),
    }

    assert_eq!(db.field_indexes().expect("indexes"), ["tag"]);
    assert_eq!(db.count_matching(&lost_filter).expect("count"), 0);
    for tag in ["z", TAGS[0], TAGS[1], TAGS[2]] {
        let filter = Filter::parse(Some(&json!({ "tag": tag }).to_string()), None).expect("f");
        let want: Vec<&str> = (0..n)
            .filter(|&i| tags[i] == tag)
            .map(|i| id_refs[i])
            .collect();
        let got = db.records(&Select::all().filter(&filter)).expect("records");
        let got: Vec<&str> = got.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(got, want, "tag {tag} after the restart");
    }
    db.close().expect("close");
}
