//! Read-only opening (`OpenOptions::read_only`): readers share the directory's lock, in one
//! process and across processes, see exactly the last commit (checked against a brute-force
//! scan of the vectors the test wrote), refuse every write with `Error::ReadOnly` without
//! touching a byte, and exclude writers (and are excluded by them) with a `Locked` error that
//! says who holds the lock. A read-only open of a missing, damaged or crashed database creates
//! and repairs nothing.

mod common;

use common::{assert_topk, items, seed, tempdir, Rng};
use srvdb::quant::{IndexSpec, Quantization};
use srvdb::{
    Database, Delete, Error, LockHolder, Metadata, Metric, OpenOptions, StorageKind, Store, Update,
    Write,
};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

const DIM: usize = 12;
const ROWS: usize = 300;

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
    for (i, (id, vector)) in reference.iter().enumerate().step_by(37) {
        let record = db.get(id).expect("get").expect("committed row present");
        assert_eq!(&record.vector, vector, "{context}: {id}");
        let meta = record.metadata.expect("metadata");
        assert_eq!(meta.as_str(), format!("{{\"n\": {i}}}"), "{context}: {id}");
    }
    let mut rng = Rng::new(seed() ^ 0x5eed);
    for q in 0..5 {
        let query = rng.vectors(1, DIM);
        let hits = db.search(&query, 10).expect("search");
        assert_topk(
            Metric::Cosine,
            &query,
            &reference,
            &hits,
            10,
            1e-4,
            &format!("{context}: query {q}"),
        );
    }
}

#[test]
fn readers_see_exactly_the_committed_rows_on_every_storage() {
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
fn writer_and_readers_exclude_each_other_in_one_process() {
    let dir = tempdir();
    write_committed(dir.path());
    let reader = Database::open(dir.path(), reader_options()).expect("reader");
    let err = Database::open(dir.path(), writer_options()).expect_err("writer beside a reader");
    match &err {
        Error::Locked { path, holder } => {
            assert_eq!(path, dir.path());
            assert_eq!(*holder, LockHolder::Readers);
        }
        other => panic!("expected Locked by readers, got {other:?}"),
    }
    assert!(err.to_string().contains("locked by readers"), "{err}");
    drop(reader);

    let writer = Database::open(dir.path(), writer_options()).expect("writer once readers left");
    let err = Database::open(dir.path(), reader_options()).expect_err("reader beside a writer");
    assert_locked_by(&err, LockHolder::Writer);
    assert!(err.to_string().contains("locked by a writer"), "{err}");
    let err = Database::open(dir.path(), writer_options()).expect_err("second writer");
    assert_locked_by(&err, LockHolder::Writer);
    drop(writer);
    Database::open(dir.path(), reader_options()).expect("reader once the writer left");
}

/// A child process of this test binary, opened on `dir` read-only or for writing; it prints
/// one line (`opened <count> <top ids>` or `error <holder> <message>`) and keeps the database
/// open until its stdin closes.
struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    line: String,
}

const CHILD_TEST: &str = "readers_in_many_processes_and_a_writer_exclude_each_other";

impl Peer {
    fn start(dir: &Path, mode: &str) -> Peer {
        let exe = std::env::current_exe().expect("test binary");
        let mut child = Command::new(exe)
            .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
            .env("SRVDB_RO_CHILD", dir)
            .env("SRVDB_RO_MODE", mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
        let mut line = String::new();
        for l in lines.by_ref() {
            // The harness prints "test <name> ... " without a newline before the child's line.
            if let Some(i) = l.find("opened ").or_else(|| l.find("error ")) {
                line = l[i..].to_owned();
                break;
            }
        }
        // Keep reading, so the child's later output (the harness's summary) has a reader.
        std::thread::spawn(move || lines.for_each(drop));
        let stdin = child.stdin.take();
        Peer { child, stdin, line }
    }

    fn stop(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().expect("reap child");
        assert!(status.success(), "child failed: {status}");
    }
}

fn child_main(dir: &str, mode: &str) {
    let options = if mode == "read" {
        reader_options()
    } else {
        writer_options()
    };
    match Database::open(dir, options) {
        Ok(db) => {
            let mut rng = Rng::new(seed() ^ 0xc41d);
            let query = rng.vectors(1, DIM);
            let hits = db.search(&query, 5).expect("child search");
            let ids: Vec<String> = hits.into_iter().map(|h| h.id).collect();
            println!("opened {} {}", db.count(), ids.join(","));
            std::io::stdout().flush().expect("flush");
            // Hold the database open until the parent closes our stdin.
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
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

#[test]
fn readers_in_many_processes_and_a_writer_exclude_each_other() {
    if let (Ok(dir), Ok(mode)) = (
        std::env::var("SRVDB_RO_CHILD"),
        std::env::var("SRVDB_RO_MODE"),
    ) {
        child_main(&dir, &mode);
        return;
    }
    let dir = tempdir();
    let data = write_committed(dir.path());
    let reference = items(&data, DIM);
    let query = Rng::new(seed() ^ 0xc41d).vectors(1, DIM);
    let want: Vec<String> = common::brute_force(Metric::Cosine, &query, &reference, 5)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let want_line = format!("opened {ROWS} {}", want.join(","));

    let readers: Vec<Peer> = (0..3).map(|_| Peer::start(dir.path(), "read")).collect();
    for (i, r) in readers.iter().enumerate() {
        assert_eq!(r.line, want_line, "reader process {i} (seed {})", seed());
    }
    // A writer in this process, and in another, is refused while they read.
    let err = Database::open(dir.path(), writer_options()).expect_err("writer beside readers");
    assert_locked_by(&err, LockHolder::Readers);
    let refused = Peer::start(dir.path(), "write");
    assert_eq!(refused.line, "error readers locked");
    refused.stop();
    // A reader in this process joins them.
    let here = Database::open(dir.path(), reader_options()).expect("reader beside readers");
    assert_sees(&here, &data, "reader beside three reader processes");
    drop(here);
    for r in readers {
        r.stop();
    }

    // Now a writer process holds it: readers anywhere are refused.
    let writer = Peer::start(dir.path(), "write");
    assert_eq!(writer.line, want_line, "writer process");
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
    let root = tempdir();
    let live = root.path().join("db");
    let data = write_committed(&live);
    let reader = Database::open(&live, reader_options()).expect("reader");
    // Nothing changed: the reopened handle holds the same commit.
    let same = reader.reopened().expect("reopen");
    assert_sees(&same, &data, "reopened with nothing new");
    drop(same);

    // A writer cannot touch `live` while the reader is open; it builds the next version
    // beside it and swaps the directories.
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
    let dir = tempdir();
    let status = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "a_crashed_writer_is_recovered_by_a_writer_not_a_reader",
            "--test-threads=1",
        ])
        .env("SRVDB_RO_CRASH", dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run child");
    assert!(!status.success(), "the child should have aborted");
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
