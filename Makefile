# ato-stream tasks. `make help` lists them.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: help setup run test lint bench bench-metrics-floor bench-kafka loadtest dev-up dev-down run-kafka clean

help: ## list the tasks
	@grep -E '^[a-z-]+:.*## ' Makefile | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

setup: $(STAMP) ## create .venv and install ato-stream with its test tools

run: $(STAMP) ## run the main job on embedded defaults (generator in, JSON-lines out)
	$(VENV)/bin/ato run

loadtest: $(STAMP) ## load test against the dev broker: make loadtest ARGS="steady --find-max"
	$(VENV)/bin/ato loadtest $(ARGS)

dev-up: $(STAMP) ## start a local Tansu broker and Redis, with topics and generated traffic
	$(VENV)/bin/ato dev up

run-kafka: $(STAMP) ## run the journey flow on the dev broker (examples/kafka.toml)
	$(VENV)/bin/ato run --config examples/kafka.toml

dev-down: $(STAMP) ## stop the local servers
	$(VENV)/bin/ato dev down

lint: $(STAMP) ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint ## lint, then the whole test suite
	NUMBA_DISABLE_JIT=0 $(VENV)/bin/pytest -q

bench: $(STAMP) ## in-process benchmark (prints a JSON line)
	$(PY) -m load_tests.bench_inprocess

bench-metrics-floor: $(STAMP) ## least CPU live metrics cost here, against a 10 % budget (JSON line)
	$(PY) -m load_tests.bench_metrics_floor

bench-kafka: $(STAMP) ## Kafka benchmark on a local Tansu broker (prints a JSON line)
	$(PY) -m load_tests.bench_kafka

clean: ## remove the venv, caches and run outputs
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
