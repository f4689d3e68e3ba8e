//! The command line's surface: `--help` printed "flag --help needs a value" and failed, and a
//! misspelled flag was silently ignored (`--dimm 3` ingested as if no --dim was given). These
//! checks need no component (clap answers before the sandbox is built), except the last, which
//! runs a filtered search.

mod common;

use std::process::{Command, Output};

fn srvdb_host(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_srvdb-host"))
        .args(args)
        .output()
        .expect("run srvdb-host")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_prints_usage_and_succeeds() {
    let out = srvdb_host(&["--help"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("Usage: srvdb-host"), "{stdout}");
    for command in ["info", "ingest", "search", "compact", "add-text", "query"] {
        assert!(stdout.contains(command), "no {command} in:\n{stdout}");
    }
    for flag in [
        "--component",
        "--memory-mib",
        "--fuel",
        "--deadline-secs",
        "--quiet",
    ] {
        assert!(stdout.contains(flag), "no {flag} in:\n{stdout}");
    }

    let out = srvdb_host(&["search", "--help"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    for flag in [
        "--query ",
        "--query-file",
        "--row",
        "-k",
        "--where ",
        "--where-document",
    ] {
        assert!(stdout.contains(flag), "no {flag} in:\n{stdout}");
    }
}

#[test]
fn an_unknown_flag_is_an_error_that_names_it() {
    for args in [
        &["ingest", "db", "v.f32", "--dimm", "3"][..],
        &["--no-such-flag", "info", "db"],
        &["info", "db", "--no-such-flag"],
    ] {
        let out = srvdb_host(args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let flag = args.iter().find(|a| a.starts_with("--")).expect("a flag");
        assert!(
            stderr.contains(&format!("unexpected argument '{flag}'")),
            "{args:?}:\n{stderr}"
        );
    }
}

#[test]
fn usage_errors_are_refused_before_any_work() {
    let cases: &[(&[&str], &str)] = &[
        (&[], "Usage"),
        (
            &["frobnicate", "db"],
            "unrecognized subcommand 'frobnicate'",
        ),
        (&["ingest", "db"], "<FILE>"),
        (&["search", "db"], "--query"),
        (
            &["search", "db", "--query", "1,2", "--query-file", "q.npy"],
            "cannot be used with",
        ),
        (
            &["search", "db", "--query", "1,x"],
            "invalid value 'x' for '--query",
        ),
        (&["ingest", "db", "v.npy", "--batch", "0"], "--batch"),
        (
            &["search", "db", "--query", "1", "-k", "many"],
            "invalid value 'many'",
        ),
    ];
    for (args, says) in cases {
        let out = srvdb_host(args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(
            stderr.contains(says),
            "{args:?}: want {says:?} in\n{stderr}"
        );
    }
}

/// `search --where`: the hits are the k best of the matching records (brute force here over a
/// database written natively), and a malformed filter fails naming its part.
#[test]
fn search_where_returns_the_best_matching_records() {
    use srvdb::{Database, Metadata, OpenOptions, Store, Write};
    let component = common::component_config().component;
    let dir = tempfile::tempdir().expect("tmp");
    let n = 60;
    let dim = 4;
    let vectors: Vec<f32> = (0..n * dim)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    let ids: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let metas: Vec<Option<Metadata>> = (0..n)
        .map(|i| {
            Some(Metadata::from_text(format!(
                "{{\"year\": {}}}",
                1990 + i % 30
            )))
        })
        .collect();
    {
        let db = Database::open(dir.path(), OpenOptions::default()).expect("open");
        db.write(&Write::add(&id_refs, &vectors).metadatas(&metas))
            .expect("add");
        db.close().expect("close");
    }
    let query = [0.3f32, -0.2, 0.9, 0.1];
    let cosine = |v: &[f32]| {
        let dot: f64 = v.iter().zip(&query).map(|(a, b)| f64::from(a * b)).sum();
        let norm = |x: &[f32]| x.iter().map(|a| f64::from(a * a)).sum::<f64>().sqrt();
        dot / (norm(v) * norm(&query))
    };
    // Brute force over the rows with year > 2010.
    let mut want: Vec<(f64, String)> = (0..n)
        .filter(|i| 1990 + i % 30 > 2010)
        .map(|i| (cosine(&vectors[i * dim..(i + 1) * dim]), ids[i].clone()))
        .collect();
    want.sort_by(|a, b| b.0.total_cmp(&a.0));
    let db_arg = dir.path().to_str().expect("utf-8 path");
    let component_arg = component.to_str().expect("utf-8 path");
    let out = srvdb_host(&[
        "search",
        db_arg,
        "--query",
        "0.3,-0.2,0.9,0.1",
        "-k",
        "3",
        "--where",
        r#"{"year": {"$gt": 2010}}"#,
        "--component",
        component_arg,
        "--quiet",
    ]);
    assert!(out.status.success(), "{out:?}");
    let stdout = text(&out.stdout);
    let got: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    let expected: Vec<&str> = want.iter().take(3).map(|(_, id)| id.as_str()).collect();
    assert_eq!(got, expected, "{stdout}");

    let out = srvdb_host(&[
        "search",
        db_arg,
        "--query",
        "0.3,-0.2,0.9,0.1",
        "--where",
        r#"{"year": {"$foo": 1}}"#,
        "--component",
        component_arg,
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr.contains("invalid filter at where.year.$foo"),
        "{stderr}"
    );
}

/// `index create|info|drop` and `search --oversample/--exact`: the index is reported and
/// searched through (hits equal brute force computed here: with 40 rows, oversample 10 keeps
/// every row as a candidate, so the rescored answer is exact), and bad values are refused.
#[test]
fn index_commands_build_report_and_drop_the_index() {
    use srvdb::{Database, OpenOptions, Store};
    let component = common::component_config().component;
    let dir = tempfile::tempdir().expect("tmp");
    let (n, dim) = (40, 4);
    let vectors: Vec<f32> = (0..n * dim)
        .map(|i| ((i * 53 % 97) as f32 / 48.0) - 1.0)
        .collect();
    let ids: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
    {
        let db = Database::open(dir.path(), OpenOptions::default()).expect("open");
        db.add(&ids, &vectors, &[]).expect("add");
        db.close().expect("close");
    }
    let query = [0.5f32, 0.1, -0.7, 0.2];
    let cosine = |v: &[f32]| {
        let dot: f64 = v.iter().zip(&query).map(|(a, b)| f64::from(a * b)).sum();
        let norm = |x: &[f32]| x.iter().map(|a| f64::from(a * a)).sum::<f64>().sqrt();
        dot / (norm(v) * norm(&query))
    };
    let mut want: Vec<(f64, String)> = (0..n)
        .map(|i| (cosine(&vectors[i * dim..(i + 1) * dim]), ids[i].clone()))
        .collect();
    want.sort_by(|a, b| b.0.total_cmp(&a.0));
    let expected: Vec<&str> = want.iter().take(4).map(|(_, id)| id.as_str()).collect();
    let db_arg = dir.path().to_str().expect("utf-8 path");
    let component_arg = component.to_str().expect("utf-8 path");
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--component", component_arg, "--quiet"]);
        let out = srvdb_host(&all);
        assert!(out.status.success(), "{args:?}: {out:?}");
        text(&out.stdout)
    };
    let created = run(&["index", "create", db_arg, "--quantization", "binary"]);
    assert!(
        created.contains("flat over binary codes: 40 rows"),
        "{created}"
    );
    let info = run(&["index", "info", db_arg]);
    assert!(info.contains("flat over binary codes: 40 rows"), "{info}");
    for scan in [&["--oversample", "10"][..], &["--exact"]] {
        let mut args = vec!["search", db_arg, "--query", "0.5,0.1,-0.7,0.2", "-k", "4"];
        args.extend_from_slice(scan);
        let stdout = run(&args);
        let got: Vec<&str> = stdout
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .collect();
        assert_eq!(got, expected, "{scan:?}: {stdout}");
    }
    let dropped = run(&["index", "drop", db_arg]);
    assert!(dropped.contains("index dropped"), "{dropped}");
    let info = run(&["index", "info", db_arg]);
    assert!(info.contains("no index"), "{info}");

    // A flat index without codes is refused by the engine (the one place that checks specs).
    let out = srvdb_host(&["index", "create", db_arg, "--component", component_arg]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains("quantization"), "{out:?}");

    for (args, says) in [
        (
            &["index", "create", db_arg, "--quantization", "int4"][..],
            "unknown quantization",
        ),
        (
            &["index", "create", db_arg, "--kind", "tree"],
            "unknown index kind",
        ),
        (
            &["index", "create", db_arg, "--kind", "hnsw", "--m", "x"],
            "invalid value 'x'",
        ),
        (
            &["search", db_arg, "--query", "1", "--ef", "many"],
            "invalid value 'many'",
        ),
        (
            &["search", db_arg, "--query", "1", "--ef", "8", "--exact"],
            "cannot be used with",
        ),
        (
            &["search", db_arg, "--query", "1", "--oversample", "x"],
            "invalid value 'x'",
        ),
    ] {
        let out = srvdb_host(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(says),
            "{args:?}: want {says:?} in\n{stderr}"
        );
    }
}

/// `index create --kind hnsw [--m] [--ef-construction] [--quantization int8]`, `index info`
/// and `search --ef`: the graph is reported with its parameters and searched through (hits
/// equal brute force computed here: with 60 rows an ef of 60 reaches every row), and values
/// the engine refuses fail with its message.
#[test]
fn hnsw_index_commands_build_report_and_search() {
    use srvdb::{Database, OpenOptions, Store};
    let component = common::component_config().component;
    let dir = tempfile::tempdir().expect("tmp");
    let (n, dim) = (60, 4);
    let vectors: Vec<f32> = (0..n * dim)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    let ids: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
    {
        let db = Database::open(dir.path(), OpenOptions::default()).expect("open");
        db.add(&ids, &vectors, &[]).expect("add");
        db.close().expect("close");
    }
    let query = [0.5f32, -0.3, 0.7, 0.1];
    let cosine = |v: &[f32]| {
        let dot: f64 = v.iter().zip(&query).map(|(a, b)| f64::from(a * b)).sum();
        let norm = |x: &[f32]| x.iter().map(|a| f64::from(a * a)).sum::<f64>().sqrt();
        dot / (norm(v) * norm(&query))
    };
    let mut want: Vec<(f64, String)> = (0..n)
        .map(|i| (cosine(&vectors[i * dim..(i + 1) * dim]), ids[i].clone()))
        .collect();
    want.sort_by(|a, b| b.0.total_cmp(&a.0));
    let expected: Vec<&str> = want.iter().take(5).map(|(_, id)| id.as_str()).collect();
    let db_arg = dir.path().to_str().expect("utf-8 path");
    let component_arg = component.to_str().expect("utf-8 path");
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--component", component_arg, "--quiet"]);
        let out = srvdb_host(&all);
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let ok = |args: &[&str]| {
        let (code, stdout, stderr) = run(args);
        assert_eq!(code, Some(0), "{args:?}: {stdout}{stderr}");
        stdout
    };
    let created = ok(&["index", "create", db_arg, "--kind", "hnsw", "--m", "8"]);
    assert!(
        created.contains("hnsw over f32 vectors (m 8, ef_construction 200): 60 rows"),
        "{created}"
    );
    let created = ok(&[
        "index",
        "create",
        db_arg,
        "--kind",
        "hnsw",
        "--quantization",
        "int8",
        "--ef-construction",
        "50",
    ]);
    assert!(
        created.contains("hnsw over int8 codes (m 16, ef_construction 50): 60 rows"),
        "{created}"
    );
    let info = ok(&["index", "info", db_arg]);
    assert!(
        info.contains("hnsw over int8 codes (m 16, ef_construction 50): 60 rows"),
        "{info}"
    );
    for scan in [&["--ef", "60"][..], &["--exact"], &[]] {
        let mut args = vec!["search", db_arg, "--query", "0.5,-0.3,0.7,0.1", "-k", "5"];
        args.extend_from_slice(scan);
        let stdout = ok(&args);
        let got: Vec<&str> = stdout
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .collect();
        assert_eq!(got, expected, "{scan:?}: {stdout}");
    }
    for (args, says) in [
        (
            &["search", db_arg, "--query", "0.5,-0.3,0.7,0.1", "--ef", "0"][..],
            "ef 0 is out of range",
        ),
        (
            &["index", "create", db_arg, "--kind", "hnsw", "--m", "1"],
            "m 1 is out of range",
        ),
        (
            &[
                "index",
                "create",
                db_arg,
                "--quantization",
                "int8",
                "--m",
                "8",
            ],
            "flat",
        ),
        (
            &[
                "index",
                "create",
                db_arg,
                "--kind",
                "hnsw",
                "--quantization",
                "binary",
            ],
            "graph traverses on int8 codes",
        ),
    ] {
        let (code, stdout, stderr) = run(args);
        assert_eq!(code, Some(1), "{args:?}: {stdout}{stderr}");
        assert!(
            stderr.contains(says),
            "{args:?}: want {says:?} in\n{stderr}"
        );
    }
    // The failures changed nothing.
    let info = ok(&["index", "info", db_arg]);
    assert!(info.contains("hnsw over int8 codes"), "{info}");
}
