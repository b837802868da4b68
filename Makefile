# Two set-up commands: `make demo` (install + run the whole pipeline offline) and `make test`.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME := $(CURDIR)/.dagster_home
export CYBER_DATA_DIR ?= $(CURDIR)/data

.PHONY: install demo test lint ui bench clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/cyber-pipelines demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy cyber_pipelines assets sensors

test: lint
	$(BIN)/pytest -q

ui: install
	@mkdir -p $(DAGSTER_HOME) && test -f $(DAGSTER_HOME)/dagster.yaml || cp dagster.yaml $(DAGSTER_HOME)/
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

bench: install
	@for b in benchmarks/*.py; do echo "$$b"; $(BIN)/python $$b; done

clean:
	rm -rf data .dagster_home/* .pytest_cache .mypy_cache .ruff_cache
