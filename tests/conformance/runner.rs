//! The Rust runner of the conformance scenario (`scenario.json` beside this file): replays
//! its steps on any [`Store`] and checks every answer and every error against the file. Shared
//! by `tests/conformance.rs` (memory, file and mmap backends) and `host/tests/conformance.rs`
//! (the component in wasmtime), which include it by path; Python and Node have their own
//! runners of the same file.
//!
//! A mismatch does not stop the scenario: every step runs, and the test fails at the end with
//! one line per mismatch (target, scenario, step number, operation, what differed).
#![allow(dead_code)]

use serde_json::Value;
use srvdb::{Delete, Error, Metadata, OpenOptions, Query, Record, SearchHit, Store, Write};

/// The scenario file, compiled in.
pub const SCENARIO: &str = include_str!("scenario.json");

/// A place databases are opened: a backend or a runtime, with a directory of its own.
pub trait Target {
    /// The open handle.
    type Db: Store;
    /// The name `deviations` entries use for this target (e.g. `rust-mmap`).
    fn name(&self) -> String;
    /// The family name `deviations` entries may use for all its targets (e.g. `rust`).
    fn family(&self) -> &'static str;
    /// False for a database that cannot outlive its handle (`Database::in_memory`): each
    /// scenario then stops at its first `reopen`, and the run says how many steps it skipped.
    fn reopenable(&self) -> bool {
        true
    }
    /// Opens (creating if needed) this target's database for `scenario`.
    fn open(&mut self, scenario: &str, options: OpenOptions) -> srvdb::Result<Self::Db>;
    /// Closes a handle, reporting what closing reports.
    fn close(&mut self, db: Self::Db) -> srvdb::Result<()>;
    /// The database directory as this target's messages name it (`{dir}` in the file).
    fn dir_text(&self, scenario: &str) -> String;
}

/// Runs every scenario of the file on `target`; panics with every mismatch found.
pub fn run<T: Target>(target: &mut T) {
    let file: Value = serde_json::from_str(SCENARIO).expect("scenario.json is valid JSON");
    let tolerance = file["score_tolerance"]
        .as_f64()
        .expect("score_tolerance is a number");
    let mut failures = Vec::new();
    let mut steps_run = 0;
    let mut steps_skipped = 0;
    let mut after_reopen = 0;
    for scenario in file["scenarios"].as_array().expect("scenarios is a list") {
        let name = scenario["name"].as_str().expect("scenario name");
        let mut runner = Runner {
            target: &mut *target,
            scenario: name,
            db: None,
            tolerance,
            skipped: 0,
        };
        let steps = scenario["steps"].as_array().expect("steps is a list");
        for (i, step) in steps.iter().enumerate() {
            if step["op"] == "reopen" && !runner.target.reopenable() {
                after_reopen += steps.len() - i;
                break;
            }
            steps_run += 1;
            if let Err(why) = runner.step(step) {
                failures.push(format!(
                    "{} / {name} / step {i} ({}): {why}",
                    runner.target.name(),
                    step["op"]
                ));
            }
        }
        steps_run -= runner.skipped;
        steps_skipped += runner.skipped;
        if let Some(db) = runner.db.take() {
            if let Err(e) = runner.target.close(db) {
                failures.push(format!("{} / {name}: close: {e}", target.name()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {steps_run} conformance steps disagree with tests/conformance/scenario.json:\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!(
        "{}: {steps_run} conformance steps agree ({steps_skipped} skipped as the file says; \
         {after_reopen} not run from a first reopen on, as the database cannot be reopened)",
        target.name(),
    );
}

/// What a step must produce: an answer (`Value::Null` for none) or an error; or, for a
/// target the file says cannot run the step, why.
enum Outcome {
    Answer(Value),
    Error { kind: String, message: String },
    Skip(String),
}

struct Runner<'t, T: Target> {
    target: &'t mut T,
    scenario: &'t str,
    db: Option<T::Db>,
    tolerance: f64,
    /// Steps the file says this target cannot run.
    skipped: usize,
}

impl<T: Target> Runner<'_, T> {
    /// The outcome the file expects of this target: its deviation if it has one, else the
    /// step's own.
    fn expected(&self, step: &Value) -> Outcome {
        let deviations = &step["deviations"];
        let chosen = [self.target.name().as_str(), self.target.family()]
            .into_iter()
            .find_map(|key| deviations.get(key))
            .unwrap_or(step);
        if let Some(why) = chosen.get("skip") {
            return Outcome::Skip(why.as_str().expect("skip gives a reason").to_owned());
        }
        match chosen.get("error") {
            Some(e) => Outcome::Error {
                kind: e["kind"].as_str().expect("error kind").to_owned(),
                message: e["message"]
                    .as_str()
                    .expect("error message")
                    .replace("{dir}", &self.target.dir_text(self.scenario)),
            },
            None => Outcome::Answer(chosen.get("expect").cloned().unwrap_or(Value::Null)),
        }
    }

    fn step(&mut self, step: &Value) -> Result<(), String> {
        let op = step["op"].as_str().expect("op is a string");
        let expected = self.expected(step);
        if let Outcome::Skip(why) = &expected {
            println!(
                "{} / {}: {op} not run: {why}",
                self.target.name(),
                self.scenario
            );
            self.skipped += 1;
            return Ok(());
        }
        let got = match op {
            "open" | "reopen" => self.reopen(step),
            "open_second" => self.open_second(step),
            _ => {
                let Some(db) = &self.db else {
                    return Err("no open database (an earlier open failed)".into());
                };
                apply(db, op, step)
            }
        };
        self.compare(expected, got)
    }

    fn reopen(&mut self, step: &Value) -> srvdb::Result<Value> {
        if let Some(db) = self.db.take() {
            self.target.close(db)?;
        }
        self.db = Some(self.target.open(self.scenario, open_options(step))?);
        Ok(Value::Null)
    }

    /// A second handle while the first is open: closed at once if it opens.
    fn open_second(&mut self, step: &Value) -> srvdb::Result<Value> {
        let second = self.target.open(self.scenario, open_options(step))?;
        self.target.close(second)?;
        Ok(Value::Null)
    }

    fn compare(&self, want: Outcome, got: srvdb::Result<Value>) -> Result<(), String> {
        match (want, got) {
            (Outcome::Skip(_), _) => Ok(()),
            (Outcome::Answer(want), Ok(got)) => {
                if same(&want, &got, self.tolerance) {
                    Ok(())
                } else {
                    Err(format!("expected {want}, got {got}"))
                }
            }
            (Outcome::Answer(want), Err(e)) => Err(format!(
                "expected {want}, got error {} {:?}",
                kind(&e),
                e.to_string()
            )),
            (Outcome::Error { kind: k, message }, Ok(got)) => {
                Err(format!("expected error {k} {message:?}, got {got}"))
            }
            (Outcome::Error { kind: k, message }, Err(e)) => {
                let (got_kind, got_message) = (kind(&e), e.to_string());
                if got_kind == k && got_message == message {
                    Ok(())
                } else {
                    Err(format!(
                        "expected error {k} {message:?}, got {got_kind} {got_message:?}"
                    ))
                }
            }
        }
    }
}

/// The options of an open step.
fn open_options(step: &Value) -> OpenOptions {
    let mut options = OpenOptions::default();
    if let Some(d) = step.get("dimension").and_then(Value::as_u64) {
        options.dimension = Some(u32::try_from(d).expect("dimension fits u32"));
    }
    if let Some(m) = step.get("metric").and_then(Value::as_str) {
        options.metric = Some(m.parse().expect("metric name"));
    }
    options
}

/// The srvdb::Error variant's name, as the file spells kinds.
pub fn kind(e: &Error) -> &'static str {
    match e {
        Error::DimensionMismatch { .. } => "DimensionMismatch",
        Error::DuplicateId { .. } => "DuplicateId",
        Error::NotFound { .. } => "NotFound",
        Error::InvalidInput { .. } => "InvalidInput",
        Error::Corrupt { .. } => "Corrupt",
        Error::Locked { .. } => "Locked",
        Error::Io { .. } => "Io",
        Error::Metadata { .. } => "Metadata",
        Error::EmbedderMismatch { .. } => "EmbedderMismatch",
        Error::Model { .. } => "Model",
        Error::Poisoned { .. } => "Poisoned",
        Error::Sandbox { .. } => "Sandbox",
        _ => "(a kind the runner does not know)",
    }
}

/// Runs one operation on `db`; its answer in the file's notation.
fn apply<S: Store>(db: &S, op: &str, step: &Value) -> srvdb::Result<Value> {
    let ids = || strings(&step["ids"]);
    let id = || step["id"].as_str().expect("id is a string").to_owned();
    let k = || usize::try_from(step["k"].as_u64().expect("k")).expect("k fits usize");
    Ok(match op {
        "add" | "upsert" => {
            let ids = ids();
            let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            let vectors = flat(&step["vectors"]);
            let metadatas: Vec<Option<Metadata>> = optional_strings(&step["metadatas"])
                .into_iter()
                .map(|m| m.map(Metadata::from_text))
                .collect();
            let documents = optional_strings(&step["documents"]);
            let documents: Vec<Option<&str>> = documents.iter().map(Option::as_deref).collect();
            let write = if op == "add" {
                Write::add(&id_refs, &vectors)
            } else {
                Write::upsert(&id_refs, &vectors)
            };
            db.write(&write.metadatas(&metadatas).documents(&documents))?;
            Value::Null
        }
        "delete" => {
            let ids = ids();
            let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            let mut request = Delete::ids(&id_refs);
            if step["skip_missing"].as_bool() == Some(true) {
                request = request.skip_missing();
            }
            Value::from(db.remove(&request)?)
        }
        "get" => db.get(&id())?.map_or(Value::Null, record),
        "documents" => {
            let ids = ids();
            let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            Value::from(db.documents(&id_refs)?)
        }
        "contains" => Value::from(db.contains(&id())?),
        "count" => Value::from(db.count()?),
        "ids" => Value::from(db.ids()?),
        "dimension" => db.dimension()?.map_or(Value::Null, Value::from),
        "metric" => Value::from(db.metric()?.name()),
        "search" => {
            let query = numbers(&step["query"]);
            let mut found = db.query(&Query::one(&query, k()))?;
            if found.len() != 1 {
                return Ok(Value::from(format!(
                    "{} hit lists for one query",
                    found.len()
                )));
            }
            hits(found.remove(0))
        }
        "search_batch" => {
            let queries = flat(&step["queries"]);
            let found = db.query(&Query::batch(&queries, k()))?;
            Value::Array(found.into_iter().map(hits).collect())
        }
        "persist" => {
            db.persist()?;
            Value::Null
        }
        "compact" => {
            db.compact()?;
            Value::Null
        }
        other => panic!("scenario.json: unknown op {other:?}"),
    })
}

fn hits(found: Vec<SearchHit>) -> Value {
    Value::Array(
        found
            .into_iter()
            .map(|h| Value::from(vec![Value::from(h.id), Value::from(f64::from(h.score))]))
            .collect(),
    )
}

fn record(r: Record) -> Value {
    serde_json::json!({
        "id": r.id,
        "vector": r.vector.iter().map(|&x| f64::from(x)).collect::<Vec<_>>(),
        "metadata": r.metadata.as_ref().map(Metadata::as_str),
        "document": r.document,
    })
}

/// A number of the file: a JSON number, or "NaN", "inf", "-inf".
fn number(v: &Value) -> f32 {
    match v {
        Value::Number(n) => n.as_f64().expect("finite number") as f32,
        Value::String(s) if s == "NaN" => f32::NAN,
        Value::String(s) if s == "inf" => f32::INFINITY,
        Value::String(s) if s == "-inf" => f32::NEG_INFINITY,
        other => panic!("scenario.json: {other} is not a number"),
    }
}

fn numbers(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("a list of numbers")
        .iter()
        .map(number)
        .collect()
}

/// A list of vectors, back to back (the flat layout of `Write` and `Query`).
fn flat(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("a list of vectors")
        .iter()
        .flat_map(numbers)
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("a list of strings")
        .iter()
        .map(|s| s.as_str().expect("a string").to_owned())
        .collect()
}

/// A list of strings and nulls; an absent list is empty.
fn optional_strings(v: &Value) -> Vec<Option<String>> {
    v.as_array().map_or_else(Vec::new, |items| {
        items
            .iter()
            .map(|s| s.as_str().map(str::to_owned))
            .collect()
    })
}

/// Equal, with numbers within `tolerance` (scores); exact elsewhere.
fn same(want: &Value, got: &Value, tolerance: f64) -> bool {
    match (want, got) {
        (Value::Number(a), Value::Number(b)) => match (a.as_f64(), b.as_f64()) {
            (Some(a), Some(b)) => (a - b).abs() <= tolerance,
            _ => false,
        },
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y, tolerance))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(key, x)| b.get(key).is_some_and(|y| same(x, y, tolerance)))
        }
        _ => want == got,
    }
}
