//! The command line's surface: `--help` printed "flag --help needs a value" and failed, and a
//! misspelled flag was silently ignored (`--dimm 3` ingested as if no --dim was given). These
//! checks need no component: clap answers before the sandbox is built.

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
