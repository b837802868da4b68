# Two set-up commands: `make demo` (install + run the whole pipeline offline) and `make test`.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export CYBER_DATA_DIR ?= $(CURDIR)/data
# The demo runs in a home of its own (instance, data, pipeline config); `make ui` serves it.
# `make ui UI_HOME=` serves the CLI's instance instead (DAGSTER_HOME and CYBER_DATA_DIR above).
DEMO_HOME ?= $(CURDIR)/.demo
UI_HOME ?= $(DEMO_HOME)
PORT ?= 3000
DEMO_ARGS ?=

.PHONY: install demo test lint ui bench clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0  # the CPU build first: a bare torch pulls GBs of CUDA
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/cyber-pipelines demo --home $(DEMO_HOME) $(DEMO_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy cyber_pipelines assets sensors

# Two workers, a test file each (xdist --dist loadfile): most of the slow tests wait on Dagster runs,
# servers and subprocesses, so the two cores overlap them (measured: 6.5 min instead of 12).
test: lint
	$(BIN)/pytest -q -n 2 --dist loadfile

# Checks the port first: when it is taken it says so and starts nothing (no daemon left behind).
ui: install
	$(BIN)/cyber-pipelines ui $(if $(UI_HOME),--home $(UI_HOME)) --port $(PORT)

bench: install
	@for b in benchmarks/*.py; do echo "$$b"; $(BIN)/python $$b; done

clean:
	rm -rf data .demo .dagster_home/* .pytest_cache .mypy_cache .ruff_cache

# The production configuration without containers (PostgreSQL, Celery workers on Redis, gRPC code server,
# daemon, webserver on PORT); see cyber_pipelines/localprod.py. `local-prod-stop` stops exactly what it started.
.PHONY: local-prod local-prod-stop
local-prod: install
	$(BIN)/python -m cyber_pipelines.localprod start --port $(PORT)

local-prod-stop:
	$(BIN)/python -m cyber_pipelines.localprod stop
