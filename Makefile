# SrvDB developer commands. `make demo` and `make test` are all a newcomer needs.
#
# Nothing here sets RUSTFLAGS: it would replace the wasm32 `+simd128` flags that
# .cargo/config.toml sets for the WASI build.

CARGO ?= cargo
RUSTUP ?= rustup
WASM_TARGET := wasm32-wasip2

.PHONY: all demo test toolchain fmt-check clippy-native wasm-check wasm-clippy component \
        cargo-test node-test bench fmt clippy clean

all: test

# The steps of `make test` run in the order listed, even under `make -j`.
.NOTPARALLEL:

## demo: build in release mode and run examples/demo.rs (ingest, reopen, search, recall).
demo:
	$(CARGO) run --release --example demo

## test: every check CI runs, in order; stops at the first failure.
test: toolchain fmt-check clippy-native wasm-check wasm-clippy component cargo-test node-test
	@echo "==> make test: all steps passed"

# Installs what the checks need, only if it is missing.
toolchain:
	@echo "==> [1/8] toolchain: rustfmt, clippy, $(WASM_TARGET) target"
	@$(RUSTUP) component list --installed | grep -q '^rustfmt' || $(RUSTUP) component add rustfmt
	@$(RUSTUP) component list --installed | grep -q '^clippy' || $(RUSTUP) component add clippy
	@$(RUSTUP) target list --installed | grep -qx '$(WASM_TARGET)' || $(RUSTUP) target add $(WASM_TARGET)

fmt-check: toolchain
	@echo "==> [2/8] cargo fmt --all -- --check"
	$(CARGO) fmt --all -- --check

clippy-native: toolchain
	@echo "==> [3/8] cargo clippy --workspace --all-targets -- -D warnings"
	$(CARGO) clippy --workspace --all-targets -- -D warnings

wasm-check: toolchain
	@echo "==> [4/8] cargo check -p srvdb --target $(WASM_TARGET)"
	$(CARGO) check -p srvdb --target $(WASM_TARGET)

wasm-clippy: toolchain
	@echo "==> [5/8] cargo clippy -p srvdb --target $(WASM_TARGET) -- -D warnings"
	$(CARGO) clippy -p srvdb --target $(WASM_TARGET) -- -D warnings

## component: the WASI component target/wasm32-wasip2/component/srvdb.wasm.
component: toolchain
	@echo "==> [6/8] cargo build -p srvdb --target $(WASM_TARGET) --profile component"
	$(CARGO) build -p srvdb --target $(WASM_TARGET) --profile component
	@ls -l target/$(WASM_TARGET)/component/srvdb.wasm

# Release mode: the crash-recovery and concurrency tests would crawl in debug, and the host's
# sandbox tests take 42 s in debug against 3 s in release.
cargo-test: toolchain component
	@echo "==> [7/8] cargo test --release -p srvdb -p srvdb-host"
	$(CARGO) test --release -p srvdb -p srvdb-host

# The same component under Node.js through jco (a second WASI runtime). Skipped without node.
node-test: component
	@echo "==> [8/8] node tests/node/run.mjs (jco)"
	@if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then \
		cd tests/node && npm install --no-audit --no-fund --loglevel=error && rm -rf out && node run.mjs; \
	else \
		echo "SKIP: node/npm not found; the jco scenario did not run"; \
	fi

## bench: the criterion benchmarks in benches/.
bench:
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
