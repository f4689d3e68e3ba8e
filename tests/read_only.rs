//! Read-only opening (`OpenOptions::read_only`): readers, in one process and across
//! processes, see exactly the commit they opened (checked against a brute-force scan of the
//! vectors the test wrote) while a writer commits and compacts beside them, and the newest
//! after `reopened`; they refuse every write with `Error::ReadOnly` without touching a byte;
//! a reader is refused beside a writer, and a writer while a reader opens, with a `Locked`
//! error that says who holds the lock. A read-only open of a missing, damaged or crashed
//! database creates and repairs nothing.

mod common;

use common::{assert_topk, items, seed, tempdir, Rng};
use srvdb::quant::{IndexSpec, Quantization};
use srvdb::storage::fs::DirLock;
use srvdb::{
    Database, Delete, Error, LockHolder, Metadata, Metric, OpenOptions, StorageKind, Store, Update,
    Write,
};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{RwLock, RwLockReadGuard};

const DIM: usize = 12;
const ROWS: usize = 300;

/// Held (shared) by every test of this binary while it opens databases, and exclusively while
/// a child process is spawned: a spawned child holds copies of this process's descriptors,
/// `LOCK`'s included, until it execs. A dropped lock is released all the same (it unlocks
/// before it closes, `storage::fs::DirLock`); this keeps the children's moment away from the
/// other tests' opens regardless.
static SPAWNING: RwLock<()> = RwLock::new(());

fn no_spawn_meanwhile() -> RwLockReadGuard<'static, ()> {
    SPAWNING.read().unwrap_or_else(|p| p.into_inner())
}

/// Held by each test that spawns children, for its whole run: the other's spawns must not
/// catch its locks either.
static SPAWNING_TEST: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn spawn_alone(command: &mut Command) -> Child {
    let _alone = SPAWNING.write().unwrap_or_else(|p| p.into_inner());
    command.spawn().expect("spawn child")
}

fn writer_options() -> OpenOptions {
    OpenOptions::default().with_metric(Metric::Cosine)
}

fn reader_options() -> OpenOptions {
    OpenOptions::default().read_only()
}

/// Writes `ROWS` seeded vectors (ids `id-0..`, metadata `{"n": i}`), commits and closes;
/// returns them for the reference.
fn write_committed(dir: &Path) -> Vec<f32> {
    let data = Rng::new(seed()).vectors(ROWS, DIM);
    let db = Database::open(dir, writer_options()).expect("open writer");
    let ids = common::ids(0..ROWS);
    let metas: Vec<Option<Metadata>> = (0..ROWS)
        .map(|i| Some(Metadata::from_text(format!("{{\"n\": {i}}}"))))
        .collect();
    db.write(&Write::add(&srvdb::store::str_refs(&ids), &data).metadatas(&metas))
        .expect("add");
    db.close().expect("close writer");
    data
}

/// Every file of `dir` with its bytes: a read-only handle must leave this unchanged.
fn listing(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.expect("dir entry").path();
        let bytes = std::fs::read(&path).unwrap_or_default();
        out.insert(path, bytes);
    }
    out
}

/// The reader holds exactly the committed rows: count, ids, each vector and metadata, and the
/// top 10 of a few queries against brute force over the vectors written.
fn assert_sees(db: &Database, data: &[f32], context: &str) {
    let reference = items(data, DIM);
    assert_eq!(db.count(), ROWS as u64, "{context}");
    assert_eq!(db.ids(), common::ids(0..ROWS), "{context}");
    for (i, (id, vector)) in reference.iter().enumerate() {
        let record = db.get(id).expect("get").expect("committed row present");
        assert_eq!(&record.vector, vector, "{context}: {id}");
        let meta = record.metadata.expect("metadata");
        assert_eq!(meta.as_str(), format!("{{\"n\": {i}}}"), "{context}: {id}");
    }
    assert_top10(db, &reference, &mut Rng::new(seed() ^ 0x5eed), context);
}

/// The top 10 of five random queries (from `rng`) by the exact scan, against brute force over
/// `reference`.
fn assert_top10(db: &Database, reference: &[(String, Vec<f32>)], rng: &mut Rng, context: &str) {
    for q in 0..5 {
        let query = rng.vectors(1, DIM);
        let hits = db
            .query(&srvdb::Query::one(&query, 10).exact(true))
            .expect("search")
            .remove(0);
        assert_topk(
            Metric::Cosine,
            &query,
            reference,
            &hits,
            10,
            1e-4,
            &format!("{context}: query {q}"),
        );
    }
}

#[test]
fn readers_see_exactly_the_committed_rows_on_every_storage() {
    let _serial = no_spawn_meanwhile();
    let dir = tempdir();
    let data = write_committed(dir.path());
    let before = listing(dir.path());
    for storage in [StorageKind::Mmap, StorageKind::File, StorageKind::OnDemand] {
        let a = Database::open(dir.path(), reader_options().with_storage(storage))
            .unwrap_or_else(|e| panic!("{storage:?}: first reader: {e}"));
        let b = Database::open(dir.path(), reader_options().with_storage(storage))
            .unwrap_or_else(|e| panic!("{storage:?}: second reader beside the first: {e}"));
        assert!(a.is_read_only());
        assert_sees(&a, &data, &format!("{storage:?} reader a"));
        assert_sees(&b, &data, &format!("{storage:?} reader b"));
        a.close().expect("closing a reader");
        drop(b);
    }
    assert_eq!(listing(dir.path()), before, "readers changed the directory");
}

#[test]
fn every_write_on_a_reader_is_refused_and_changes_nothing() {
    let _serial = no_spawn_meanwhile();
    let dir = tempdir();
    let data = write_committed(dir.path());
    let before = listing(dir.path());
    let db = Database::open(dir.path(), reader_options()).expect("reader");
    let v = vec![0.5f32; DIM];
    let filter = srvdb::Filter::parse(Some(r#"{"n": 1}"#), None).expect("filter");
    let metas = [Some(Metadata::from_text("{}"))];
    let attempts: Vec<(&str, srvdb::Result<()>)> = vec![
        ("add", db.write(&Write::add(&["new"], &v))),
        ("upsert", db.write(&Write::upsert(&["id-1"], &v))),
        ("delete", db.remove(&Delete::ids(&["id-1"])).map(drop)),
        (
            "delete where",
            db.remove(&Delete::matching(&filter)).map(drop),
        ),
        (
            "update",
            db.update(&Update::ids(&["id-2"]).metadatas(&metas)),
        ),
        ("create_field_index", db.create_field_index("n")),
        ("drop_field_index", db.drop_field_index("n").map(drop)),
        (
            "create_index",
            db.create_index(&IndexSpec::flat(Quantization::Int8))
                .map(drop),
        ),
        ("drop_index", db.drop_index().map(drop)),
        ("compact", db.compact()),
    ];
    for (name, result) in attempts {
        match result {
            Err(Error::ReadOnly { reason }) => {
                assert!(reason.contains("read_only"), "{name}: {reason}")
            }
            other => panic!("{name} on a reader: expected ReadOnly, got {other:?}"),
        }
    }
    // Nothing pending to make durable: persist and close succeed and write nothing.
    db.persist().expect("persist on a reader");
    assert_sees(&db, &data, "after refused writes");
    db.close().expect("close reader");
    assert_eq!(
        listing(dir.path()),
        before,
        "a refused write changed a file"
    );
    let writer = Database::open(dir.path(), writer_options()).expect("writer after readers");
    assert_sees(&writer, &data, "writer after the readers");
}

#[test]
fn a_writer_opens_beside_readers_and_readers_are_refused_beside_a_writer() {
    let _serial = no_spawn_meanwhile();
    let dir = tempdir();
    let data = write_committed(dir.path());
    let reader = Database::open(dir.path(), reader_options()).expect("reader");
    // The reader holds no lock once open: a writer opens beside it.
    let writer = Database::open(dir.path(), writer_options()).expect("writer beside a reader");
    let err = Database::open(dir.path(), reader_options()).expect_err("reader beside a writer");
    assert_locked_by(&err, LockHolder::Writer);
    assert!(err.to_string().contains("locked by a writer"), "{err}");
    let err = reader.reopened().expect_err("refresh beside a writer");
    assert_locked_by(&err, LockHolder::Writer);
    let err = Database::open(dir.path(), writer_options()).expect_err("second writer");
    assert_locked_by(&err, LockHolder::Writer);
    assert_sees(&reader, &data, "reader beside a writer");
    drop(writer);
    Database::open(dir.path(), reader_options()).expect("reader once the writer left");

    // While a reader opens it holds the shared lock (taken here by hand, as an opening reader
    // holds it): a writer is refused then, and told that readers hold it.
    let opening = DirLock::acquire_shared(dir.path()).expect("shared lock");
    let err = Database::open(dir.path(), writer_options()).expect_err("writer while one opens");
    match &err {
        Error::Locked { path, holder } => {
            assert_eq!(path, dir.path());
            assert_eq!(*holder, LockHolder::Readers);
        }
        other => panic!("expected Locked by readers, got {other:?}"),
    }
    assert!(err.to_string().contains("locked by readers"), "{err}");
    Database::open(dir.path(), reader_options()).expect("readers open together");
    drop(opening);
    Database::open(dir.path(), writer_options()).expect("writer once no reader is opening");
}

/// Metadata `{"n": i, "gen": g}`: a writer's rewrite of row `i` in generation `g`.
fn meta_of(i: usize, generation: usize) -> Metadata {
    Metadata::from_text(format!("{{\"n\": {i}, \"gen\": {generation}}}"))
}

/// Readers keep serving exactly the commit they opened (ids, vectors, metadata and the top 10
/// against brute force) while a writer, beside them, commits many times (adds, metadata
/// rewrites that make redb reuse pages, deletes, upserts), builds an index and compacts;
/// `reopened` then holds exactly the writer's last commit.
#[test]
fn readers_keep_their_commit_while_a_writer_commits_and_compacts_then_refresh() {
    let _serial = no_spawn_meanwhile();
    for storage in [StorageKind::Mmap, StorageKind::File, StorageKind::OnDemand] {
        let dir = tempdir();
        let data = write_committed(dir.path());
        let ctx = format!("{storage:?}");
        let reader = Database::open(dir.path(), reader_options().with_storage(storage))
            .unwrap_or_else(|e| panic!("{ctx}: reader: {e}"));
        let writer = Database::open(dir.path(), writer_options()).expect("writer");

        // The writer's version of the records, kept as the reference for the refresh.
        let mut current: BTreeMap<String, (Vec<f32>, String)> = (0..ROWS)
            .map(|i| {
                let id = format!("id-{i}");
                let v = data[i * DIM..(i + 1) * DIM].to_vec();
                (id, (v, format!("{{\"n\": {i}}}")))
            })
            .collect();
        let mut rng = Rng::new(seed() ^ 0x77);
        for generation in 1..=6 {
            // Rewrite every row's metadata: the old pages are freed and reused.
            let ids = common::ids(0..ROWS);
            let metas: Vec<Option<Metadata>> =
                (0..ROWS).map(|i| Some(meta_of(i, generation))).collect();
            let live: Vec<&str> = ids
                .iter()
                .map(String::as_str)
                .filter(|id| current.contains_key(*id))
                .collect();
            let live_metas: Vec<Option<Metadata>> = ids
                .iter()
                .zip(&metas)
                .filter(|(id, _)| current.contains_key(id.as_str()))
                .map(|(_, m)| m.clone())
                .collect();
            writer
                .update(&Update::ids(&live).metadatas(&live_metas))
                .expect("update metadata");
            for (id, m) in live.iter().zip(&live_metas) {
                let m = m.as_ref().expect("metadata");
                current.get_mut(*id).expect("live").1 = m.as_str().to_owned();
            }
            // New rows, a delete and an upsert.
            let new_ids: Vec<String> = (0..20).map(|j| format!("new-{generation}-{j}")).collect();
            let new_vectors = rng.vectors(20, DIM);
            writer
                .write(&Write::add(&srvdb::store::str_refs(&new_ids), &new_vectors))
                .expect("add");
            for (j, id) in new_ids.iter().enumerate() {
                let v = new_vectors[j * DIM..(j + 1) * DIM].to_vec();
                current.insert(id.clone(), (v, String::new()));
            }
            let gone = format!("id-{}", generation * 7);
            writer
                .remove(&Delete::ids(&[gone.as_str()]))
                .expect("delete");
            current.remove(&gone);
            let changed = format!("id-{}", generation * 11);
            let v = rng.vectors(1, DIM);
            writer
                .write(&Write::upsert(&[changed.as_str()], &v))
                .expect("upsert");
            current.insert(changed, (v, String::new()));
            writer.persist().expect("commit");
            if generation == 3 {
                writer
                    .create_index(&IndexSpec::flat(Quantization::Int8))
                    .expect("index");
            }
            // The reader's first read of metadata comes only after the writer's pages were
            // reused (a reader that read them earlier would keep them in redb's cache).
            if generation == 6 {
                assert_sees(
                    &reader,
                    &data,
                    &format!("{ctx}: after the writer's 6 commits"),
                );
            }
        }
        writer.compact().expect("compact");
        assert_sees(
            &reader,
            &data,
            &format!("{ctx}: after the writer's compaction"),
        );
        writer.close().expect("close writer");
        assert_sees(&reader, &data, &format!("{ctx}: after the writer closed"));

        let fresh = reader.reopened().expect("refresh");
        drop(reader);
        assert_eq!(
            fresh.count(),
            current.len() as u64,
            "{ctx}: refreshed count"
        );
        let mut want_ids: Vec<String> = current.keys().cloned().collect();
        let mut got_ids = fresh.ids();
        want_ids.sort();
        got_ids.sort();
        assert_eq!(got_ids, want_ids, "{ctx}: refreshed ids");
        for (id, (vector, meta)) in current.iter().step_by(13) {
            let record = fresh.get(id).expect("get").expect("row");
            assert_eq!(&record.vector, vector, "{ctx}: {id}");
            let got = record
                .metadata
                .map(|m| m.as_str().to_owned())
                .unwrap_or_default();
            assert_eq!(&got, meta, "{ctx}: metadata of {id}");
        }
        let reference: Vec<(String, Vec<f32>)> = current
            .iter()
            .map(|(id, (v, _))| (id.clone(), v.clone()))
            .collect();
        assert_top10(&fresh, &reference, &mut rng, &format!("{ctx}: refreshed"));
    }
}

/// A child process of this test binary, opened on `dir` read-only or for writing; it prints
/// one line (`opened <count> <top ids>` or `error <holder> <message>`), then answers each line
/// sent to its stdin: `search` prints the `opened` line again from the handle it holds,
/// `refresh` first reopens a reader (`Database::reopened`). It keeps the database open until
/// its stdin closes.
struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Box<dyn Iterator<Item = String> + Send>,
    line: String,
}

const CHILD_TEST: &str = "readers_in_many_processes_keep_their_commit_beside_a_writer";

impl Peer {
    fn start(dir: &Path, mode: &str) -> Peer {
        let exe = std::env::current_exe().expect("test binary");
        let mut child = spawn_alone(
            Command::new(exe)
                .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
                .env("SRVDB_RO_CHILD", dir)
                .env("SRVDB_RO_MODE", mode)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null()),
        );
        let stdout = child.stdout.take().expect("stdout");
        let lines = Box::new(BufReader::new(stdout).lines().map_while(Result::ok));
        let stdin = child.stdin.take();
        let mut peer = Peer {
            child,
            stdin,
            lines,
            line: String::new(),
        };
        peer.line = peer.next_answer();
        peer
    }

    /// The child's next `opened` or `error` line ("" if it ended first).
    fn next_answer(&mut self) -> String {
        for l in self.lines.by_ref() {
            // The harness prints "test <name> ... " without a newline before the first line.
            if let Some(i) = l.find("opened ").or_else(|| l.find("error ")) {
                return l[i..].to_owned();
            }
        }
        String::new()
    }

    /// Sends `command` and returns the child's answer.
    fn ask(&mut self, command: &str) -> String {
        let stdin = self.stdin.as_mut().expect("child's stdin");
        writeln!(stdin, "{command}").expect("write to child");
        stdin.flush().expect("flush to child");
        self.next_answer()
    }

    fn stop(mut self) {
        drop(self.stdin.take());
        self.lines.by_ref().for_each(drop);
        let status = self.child.wait().expect("reap child");
        assert!(status.success(), "child failed: {status}");
    }
}

/// The line a child prints for `db`: its count and the top 5 ids of the test's query.
fn answer_of(db: &Database) -> String {
    let query = Rng::new(seed() ^ 0xc41d).vectors(1, DIM);
    let hits = db.search(&query, 5).expect("child search");
    let ids: Vec<String> = hits.into_iter().map(|h| h.id).collect();
    format!("opened {} {}", db.count(), ids.join(","))
}

fn child_main(dir: &str, mode: &str) {
    let options = if mode == "read" {
        reader_options()
    } else {
        writer_options()
    };
    match Database::open(dir, options) {
        Ok(mut db) => {
            println!("{}", answer_of(&db));
            std::io::stdout().flush().expect("flush");
            let mut command = String::new();
            loop {
                command.clear();
                if !std::io::stdin()
                    .read_line(&mut command)
                    .is_ok_and(|n| n > 0)
                {
                    break;
                }
                if command.trim() == "refresh" {
                    match db.reopened() {
                        Ok(fresh) => db = fresh,
                        Err(Error::Locked { holder, .. }) => {
                            println!("error {} locked", holder.name());
                            std::io::stdout().flush().expect("flush");
                            continue;
                        }
                        Err(e) => panic!("refresh: {e}"),
                    }
                }
                println!("{}", answer_of(&db));
                std::io::stdout().flush().expect("flush");
            }
            drop(db);
        }
        Err(Error::Locked { holder, .. }) => println!("error {} locked", holder.name()),
        Err(e) => println!("error other {e}"),
    }
}

/// `err` is `Locked`, held by `holder`.
fn assert_locked_by(err: &Error, holder: LockHolder) {
    match err {
        Error::Locked { holder: got, .. } => assert_eq!(*got, holder, "{err:?}"),
        other => panic!("expected Locked by {holder:?}, got {other:?}"),
    }
}

/// The `opened` line expected for `reference` (brute force).
fn want_line(reference: &[(String, Vec<f32>)]) -> String {
    let query = Rng::new(seed() ^ 0xc41d).vectors(1, DIM);
    let want: Vec<String> = common::brute_force(Metric::Cosine, &query, reference, 5)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    format!("opened {} {}", reference.len(), want.join(","))
}

/// Three reader processes serve the commit they opened while a writer in this process changes
/// the top 5 of their query (adds a better match, deletes one of the old top 5), commits and
/// compacts; a reader process started meanwhile is refused, and so is a refresh; once the
/// writer closes, a refresh in each process reads its commit. A writer process refuses readers
/// anywhere.
#[test]
fn readers_in_many_processes_keep_their_commit_beside_a_writer() {
    if let (Ok(dir), Ok(mode)) = (
        std::env::var("SRVDB_RO_CHILD"),
        std::env::var("SRVDB_RO_MODE"),
    ) {
        child_main(&dir, &mode);
        return;
    }
    let _alone = SPAWNING_TEST.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempdir();
    let data = write_committed(dir.path());
    let mut reference = items(&data, DIM);
    let old_line = want_line(&reference);

    let mut readers: Vec<Peer> = (0..3).map(|_| Peer::start(dir.path(), "read")).collect();
    for (i, r) in readers.iter().enumerate() {
        assert_eq!(r.line, old_line, "reader process {i} (seed {})", seed());
    }
    // A writer opens beside them and changes their query's answer.
    let writer = Database::open(dir.path(), writer_options()).expect("writer beside readers");
    let query = Rng::new(seed() ^ 0xc41d).vectors(1, DIM);
    writer
        .write(&Write::add(&["best"], &query))
        .expect("add the query itself");
    reference.push(("best".to_owned(), query.clone()));
    let old_top = common::brute_force(Metric::Cosine, &query, &reference, 2)[1]
        .0
        .clone();
    writer
        .remove(&Delete::ids(&[old_top.as_str()]))
        .expect("delete an old top hit");
    reference.retain(|(id, _)| *id != old_top);
    writer.persist().expect("commit");
    writer.compact().expect("compact");
    let new_line = want_line(&reference);
    assert_ne!(new_line, old_line);

    for (i, r) in readers.iter_mut().enumerate() {
        assert_eq!(
            r.ask("search"),
            old_line,
            "reader process {i} beside the writer"
        );
        assert_eq!(
            r.ask("refresh"),
            "error writer locked",
            "refresh of reader {i}"
        );
    }
    let refused = Peer::start(dir.path(), "read");
    assert_eq!(refused.line, "error writer locked");
    refused.stop();
    writer.close().expect("close writer");

    for (i, r) in readers.iter_mut().enumerate() {
        assert_eq!(
            r.ask("search"),
            old_line,
            "reader process {i} after the writer"
        );
        assert_eq!(r.ask("refresh"), new_line, "reader process {i} refreshed");
    }
    let here = Database::open(dir.path(), reader_options()).expect("reader here");
    assert_eq!(answer_of(&here), new_line);
    drop(here);
    for r in readers {
        r.stop();
    }

    // A writer process: readers anywhere are refused while it is open.
    let writer = Peer::start(dir.path(), "write");
    assert_eq!(writer.line, new_line, "writer process");
    let err = Database::open(dir.path(), reader_options()).expect_err("reader beside a writer");
    assert_locked_by(&err, LockHolder::Writer);
    let refused = Peer::start(dir.path(), "read");
    assert_eq!(refused.line, "error writer locked");
    refused.stop();
    writer.stop();
    Database::open(dir.path(), reader_options()).expect("reader after the writer process");
}

#[test]
fn reopened_reader_follows_a_directory_replaced_by_a_newer_commit() {
    let _serial = no_spawn_meanwhile();
    let root = tempdir();
    let live = root.path().join("db");
    let data = write_committed(&live);
    let reader = Database::open(&live, reader_options()).expect("reader");
    // Nothing changed: the reopened handle holds the same commit.
    let same = reader.reopened().expect("reopen");
    assert_sees(&same, &data, "reopened with nothing new");
    drop(same);

    // A writer may also build the next version beside it and swap the directories.
    let next = root.path().join("db.next");
    std::fs::create_dir(&next).expect("mkdir");
    let more = Rng::new(seed() ^ 0xabc).vectors(ROWS, DIM);
    {
        let w = Database::open(&next, writer_options()).expect("writer of the next version");
        let ids = common::ids(0..ROWS);
        w.write(&Write::add(&srvdb::store::str_refs(&ids), &more))
            .expect("add");
        w.close().expect("close");
    }
    std::fs::rename(&live, root.path().join("db.old")).expect("rename live away");
    std::fs::rename(&next, &live).expect("rename next into place");

    // The old handle still reads the commit it opened.
    assert_eq!(
        reader.search(&data[..DIM], 1).expect("search")[0].id,
        "id-0"
    );
    let refreshed = reader.reopened().expect("refresh");
    let hits = refreshed.search(&more[DIM..2 * DIM], 1).expect("search");
    assert_eq!(
        hits[0].id, "id-1",
        "the refreshed reader sees the new commit"
    );
    assert_eq!(
        refreshed.get("id-1").expect("get").expect("row").vector,
        more[DIM..2 * DIM]
    );

    drop((reader, refreshed));
    let writer = Database::open(root.path().join("db.old"), writer_options()).expect("writer");
    assert!(matches!(writer.reopened(), Err(Error::InvalidInput { .. })));
}

#[test]
fn read_only_open_of_missing_or_damaged_databases_creates_nothing() {
    let _serial = no_spawn_meanwhile();
    let root = tempdir();
    // A directory that does not exist is not created.
    let missing = root.path().join("missing");
    let err = Database::open(&missing, reader_options()).expect_err("missing");
    assert!(matches!(err, Error::ReadOnly { .. }), "{err:?}");
    assert!(!missing.exists(), "a read-only open created the directory");

    // An empty directory gets no LOCK, no metadata.db.
    let empty = root.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let err = Database::open(&empty, reader_options()).expect_err("empty");
    assert!(matches!(err, Error::ReadOnly { .. }), "{err:?}");
    assert!(
        err.to_string().contains("open it for writing once"),
        "{err}"
    );
    assert!(listing(&empty).is_empty(), "{:?}", listing(&empty).keys());

    // A damaged metadata.db is Corrupt, and stays as it was.
    let damaged = root.path().join("damaged");
    write_committed(&damaged);
    let meta = damaged.join("metadata.db");
    let mut bytes = std::fs::read(&meta).expect("read");
    for b in bytes.iter_mut().take(512) {
        *b ^= 0xA5;
    }
    std::fs::write(&meta, &bytes).expect("damage");
    let before = listing(&damaged);
    let err = Database::open(&damaged, reader_options()).expect_err("damaged");
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    assert_eq!(
        listing(&damaged),
        before,
        "a read-only open changed a damaged database"
    );

    // metadata.db gone, vectors.bin still there: Corrupt, nothing created.
    let no_meta = root.path().join("no-meta");
    write_committed(&no_meta);
    std::fs::remove_file(no_meta.join("metadata.db")).expect("rm");
    let before = listing(&no_meta);
    let err = Database::open(&no_meta, reader_options()).expect_err("no metadata.db");
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    assert_eq!(listing(&no_meta), before);

    // An empty database (no dimension yet) opens; a dimension it would have to record is
    // refused rather than written.
    let fresh = root.path().join("fresh");
    Database::open(&fresh, OpenOptions::default())
        .expect("create")
        .close()
        .expect("close");
    let before = listing(&fresh);
    let db = Database::open(&fresh, reader_options()).expect("empty reader");
    assert_eq!(db.count(), 0);
    assert!(db.search(&[1.0; DIM], 3).expect("search").is_empty());
    drop(db);
    let err = Database::open(&fresh, reader_options().with_dimension(DIM as u32))
        .expect_err("dimension to record");
    assert!(matches!(err, Error::ReadOnly { .. }), "{err:?}");
    assert_eq!(listing(&fresh), before);
    assert!(Database::in_memory(reader_options()).is_err());
}

/// The writer child of the crash case: commits `ROWS` rows, then adds more without committing
/// and aborts, leaving uncommitted rows and a store that needs recovery.
fn crashing_writer(dir: &str) {
    let data = Rng::new(seed()).vectors(2 * ROWS, DIM);
    let options = OpenOptions {
        auto_commit_rows: 0,
        ..writer_options()
    };
    let db = Database::open(dir, options).expect("open");
    let ids = common::ids(0..2 * ROWS);
    let ids = srvdb::store::str_refs(&ids);
    let metas: Vec<Option<Metadata>> = (0..ROWS)
        .map(|i| Some(Metadata::from_text(format!("{{\"n\": {i}}}"))))
        .collect();
    db.write(&Write::add(&ids[..ROWS], &data[..ROWS * DIM]).metadatas(&metas))
        .expect("add");
    db.persist().expect("commit");
    db.write(&Write::add(&ids[ROWS..], &data[ROWS * DIM..]))
        .expect("add uncommitted");
    std::process::abort();
}

#[test]
fn a_crashed_writer_is_recovered_by_a_writer_not_a_reader() {
    if let Ok(dir) = std::env::var("SRVDB_RO_CRASH") {
        crashing_writer(&dir);
        return;
    }
    let _alone = SPAWNING_TEST.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempdir();
    let status = spawn_alone(
        Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "a_crashed_writer_is_recovered_by_a_writer_not_a_reader",
                "--test-threads=1",
            ])
            .env("SRVDB_RO_CRASH", dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .wait()
    .expect("run child");
    assert!(!status.success(), "the child should have aborted");
    let _serial = no_spawn_meanwhile();
    let before = listing(dir.path());
    match Database::open(dir.path(), reader_options()) {
        Err(Error::ReadOnly { reason }) => {
            assert!(
                reason.contains("open the database once for writing"),
                "{reason}"
            )
        }
        // Recovery is needed by the rows (a torn tail) at the least; a reader that opened
        // anyway must at least hold only the committed rows.
        Ok(db) => panic!("a reader opened a crashed database ({} rows)", db.count()),
        Err(e) => panic!("expected ReadOnly, got {e:?}"),
    }
    assert_eq!(
        listing(dir.path()),
        before,
        "a read-only open repaired something"
    );
    Database::open(dir.path(), writer_options())
        .expect("recovering writer")
        .close()
        .expect("close");
    let reader = Database::open(dir.path(), reader_options()).expect("reader after recovery");
    let data = Rng::new(seed()).vectors(2 * ROWS, DIM);
    assert_sees(&reader, &data[..ROWS * DIM], "after recovery");
}

/// Rows appended after the last commit (a writer poisoned mid-batch, or a power cut before its
/// close cut them) are a tail only a writer may cut: readers open beside it, read exactly the
/// committed rows, and leave every byte as it was. Both storage kinds.
#[test]
fn readers_ignore_an_uncommitted_tail_and_leave_it() {
    let _serial = no_spawn_meanwhile();
    let dir = tempdir();
    let data = write_committed(dir.path());
    let vectors = dir.path().join("vectors.bin");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&vectors)
        .expect("open vectors.bin");
    // Two whole rows' worth of bytes past the committed ones, and a torn half row.
    file.write_all(&vec![0x5au8; 4096 * 2 + 100])
        .expect("append a tail");
    drop(file);
    let before = listing(dir.path());
    for kind in [StorageKind::Mmap, StorageKind::File] {
        let db = Database::open(dir.path(), reader_options().with_storage(kind))
            .expect("reader beside an uncommitted tail");
        assert_sees(&db, &data, &format!("uncommitted tail, {kind:?}"));
        drop(db);
        assert_eq!(
            listing(dir.path()),
            before,
            "a reader changed the directory"
        );
    }
    // The next writer cuts it and sees the same rows.
    let db = Database::open(dir.path(), writer_options()).expect("writer");
    assert_eq!(db.count(), ROWS as u64);
}
