# sessionbench: `make bench` runs the main job, `make test` runs every check.
# Both create .venv if it is missing and install the project into it.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ARGS   ?=
# pytest-benchmark scenarios in a quick mode (30 paired rounds each); see README "Regression gate".
BENCH_GATE := tests/benchmarks -m benchmark_scenario --benchmark-enable --benchmark-only \
              --benchmark-min-rounds=30 --benchmark-sort=name -q

.PHONY: help bench bench-gate bench-baseline test lint typecheck pytest loadtest serve clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

bench: $(VENV)/.installed  ## side-by-side comparison on embedded servers: table + results/<time>/
	$(BIN)/sessionbench compare $(ARGS)

test: lint typecheck pytest bench-gate  ## ruff, mypy --strict, the whole test suite and the benchmark gate

lint: $(VENV)/.installed-dev  ## ruff check and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-dev  ## mypy --strict on sessionbench/, the checkout's store/ and loadtests/ shortcuts, and dashboards/
	$(BIN)/mypy sessionbench store loadtests dashboards

pytest: $(VENV)/.installed-dev  ## the test suite on real (embedded) PostgreSQL and Redis
	$(BIN)/python -m pytest $(ARGS)

bench-gate: $(VENV)/.installed-dev  ## benchmark scenarios (quick) vs sessionbench/bench/baselines/ratios.json; fails beyond the noise
	@mkdir -p .benchmarks
	$(BIN)/python -m pytest $(BENCH_GATE) --benchmark-json=.benchmarks/gate.json
	$(BIN)/sessionbench regress --threshold 0.25 sessionbench/bench/baselines/ratios.json .benchmarks/gate.json

bench-baseline: $(VENV)/.installed-dev  ## re-measure sessionbench/bench/baselines/ratios.json from 6 runs (then review and commit it)
	@mkdir -p .benchmarks
	for i in 1 2 3 4 5 6; do $(BIN)/python -m pytest $(BENCH_GATE) --benchmark-json=.benchmarks/baseline-$$i.json || exit 1; done
	$(BIN)/sessionbench regress --save sessionbench/bench/baselines/ratios.json .benchmarks/baseline-[1-6].json

loadtest: $(VENV)/.installed  ## the service on embedded servers + a short headless Locust run
	$(BIN)/sessionbench loadtest $(ARGS)

serve: $(VENV)/.installed  ## the HTTP service on embedded servers (127.0.0.1:8000)
	$(BIN)/sessionbench serve $(ARGS)

clean:  ## remove the venv and generated files
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .benchmarks .hypothesis
