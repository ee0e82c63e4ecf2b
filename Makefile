# MCP: build, test, lint, demo and benchmark entry points.
# `make test` on a fresh Debian host installs and configures everything the
# tests need (podman, runc, an image registry, test images) first.

CARGO      ?= cargo
ENV_DIR    ?= $(CURDIR)/.test-env
TEST_ENV    = $(ENV_DIR)/env

.PHONY: all build test test-env test-python python lint fmt proto man mcp mcp-agent mcp-master demo demo-down demo-fleet demo-fleet-down bench clean

all: lint test build

build:
	$(CARGO) build --workspace --release

mcp:
	$(CARGO) build --release -p mcp-cli --bin mcp

mcp-agent:
	$(CARGO) build --release -p mcp-agent --bin mcp-agent

mcp-master:
	$(CARGO) build --release -p mcp-master --bin mcp-master

# Writes man/ anew from the binaries' clap definitions: a page for mcp,
# mcp-agent and mcp-master and one for each of their subcommands. A test
# (e2e man_pages) fails while a committed page differs from what this writes.
man:
	$(CARGO) build --bins -p mcp-cli -p mcp-agent -p mcp-master
	rm -f man/*.1
	mkdir -p man
	for bin in mcp mcp-agent mcp-master; do target/debug/$$bin generate-man man || exit 1; done

# Regenerates the gRPC code from proto/ (a pure-Rust protobuf compiler runs in
# mcp-proto's build script; no system protoc is needed).
proto:
	touch mcp-proto/proto/mcp/v1/*.proto
	$(CARGO) build -p mcp-proto

test-env:
	MCP_ENV_DIR=$(ENV_DIR) scripts/test-env.sh

VENV        = $(ENV_DIR)/venv
PY_PKG      = bindings/python

# Ends with a check that the tests left nothing running (processes,
# containers, volumes): scripts/leftovers.sh.
test: test-env
	. $(TEST_ENV) && scripts/leftovers.sh snapshot
	. $(TEST_ENV) && $(CARGO) build --workspace --bins --exclude mcp-bench && $(CARGO) test --workspace --exclude mcp-bench --no-fail-fast
	$(MAKE) test-python
	. $(TEST_ENV) && scripts/leftovers.sh check

# The Python bindings, installed into the test environment's venv with pip
# (a debug build, sharing the workspace's target directory), tested with
# pytest against real agents, their stubs checked against the module, and
# the examples and tests type-checked in mypy's strict mode.
test-python: test-env
	PATH=$(VENV)/bin:$$PATH MATURIN_PEP517_ARGS="--profile dev" $(VENV)/bin/pip install -q --no-build-isolation --force-reinstall --no-deps ./$(PY_PKG)
	. $(TEST_ENV) && cd $(PY_PKG) && $(VENV)/bin/python -m pytest -q
	cd /tmp && $(VENV)/bin/python -m mypy.stubtest metacircular_mcp --allowlist $(CURDIR)/$(PY_PKG)/stubtest-allowlist.txt
	$(VENV)/bin/python -m mypy --strict examples/python $(PY_PKG)/tests

# A release build of the bindings, into the test environment's venv.
python: test-env
	PATH=$(VENV)/bin:$$PATH $(VENV)/bin/pip install -q --no-build-isolation --force-reinstall --no-deps ./$(PY_PKG)

# Also checks the crate layers: the front ends and mcp-core link no SQLite,
# runtime backend or agent library (scripts/check-layers.sh).
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	scripts/check-layers.sh

fmt:
	$(CARGO) fmt --all

demo:
	scripts/demo.sh up

demo-down:
	scripts/demo.sh down

demo-fleet:
	scripts/demo-fleet.sh up

demo-fleet-down:
	scripts/demo-fleet.sh down

bench: test-env python
	scripts/bench-env.sh
	. $(TEST_ENV) && $(CARGO) build --release --workspace --bins && \
		$(CARGO) run --release -p mcp-bench -- --write BENCHMARKS.md

clean:
	$(CARGO) clean
	rm -rf $(ENV_DIR)/containers.conf
