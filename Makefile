# sessionbench: `make bench` runs the main job, `make test` runs every check.
# Both create .venv if it is missing and install the project into it.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: help bench test lint typecheck pytest loadtest serve clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

bench: $(VENV)/.installed  ## side-by-side comparison on embedded servers: table + results/<time>/
	$(BIN)/sessionbench compare $(ARGS)

test: lint typecheck pytest  ## ruff, mypy --strict and the whole test suite

lint: $(VENV)/.installed-dev  ## ruff check and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-dev  ## mypy --strict on store/ and bench/
	$(BIN)/mypy store bench

pytest: $(VENV)/.installed-dev  ## the test suite on real (embedded) PostgreSQL and Redis
	$(BIN)/python -m pytest $(ARGS)

loadtest: $(VENV)/.installed  ## the service on embedded servers + a short headless Locust run
	$(BIN)/sessionbench loadtest $(ARGS)

serve: $(VENV)/.installed  ## the HTTP service on embedded servers (127.0.0.1:8000)
	$(BIN)/sessionbench serve $(ARGS)

clean:  ## remove the venv and generated files
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .benchmarks .hypothesis
