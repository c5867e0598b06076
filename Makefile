# Two commands matter on a fresh machine: `make run` and `make test`. Each installs what it needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run up down test lint fmt broker clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip uv
	@$(BIN)/uv pip install --python $(BIN)/python -q -e '.[test,lint]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv with Millrace and its test tools

# The bench extra (matplotlib, locust) only when a bench target needs it.
BENCH_STAMP := $(VENV)/.installed-bench
BENCH_ARGS ?=
LOCUST_HOST ?= http://localhost:$(or $(MILLRACE_PORT),8080)
DEV_KEY := $(or $(MILLRACE_HOME),.millrace)/dev-key

.PHONY: bench locust

$(BENCH_STAMP): $(STAMP) pyproject.toml
	@$(BIN)/uv pip install --python $(BIN)/python -q -e '.[bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) ## start a pipeline of its own, load it for 60 s, compare with Kafka/ClickHouse baselines (BENCH_ARGS="--duration 120")
	@$(BIN)/python -m bench $(BENCH_ARGS)

locust: $(BENCH_STAMP) ## locust, headless, against a running Millrace (`make up` first; key from .millrace/dev-key)
	@test -n "$$MILLRACE_KEY" -o -s $(DEV_KEY) || { echo "no key: run 'make up' first or set MILLRACE_KEY"; exit 1; }
	@MILLRACE_KEY="$${MILLRACE_KEY:-$$(cat $(DEV_KEY))}" $(BIN)/locust -f bench/locustfile.py \
		--headless -u 50 -r 10 -t 60s --host $(LOCUST_HOST)

# The fuzz extra (atheris) only for `make fuzz`. FUZZ_RUNS inputs for atheris, then the long hypothesis profile.
FUZZ_STAMP := $(VENV)/.installed-fuzz
FUZZ_RUNS ?= 500000

.PHONY: fuzz

$(FUZZ_STAMP): $(STAMP) pyproject.toml
	@$(BIN)/uv pip install --python $(BIN)/python -q -e '.[fuzz]'
	@touch $(FUZZ_STAMP)

fuzz: $(FUZZ_STAMP) ## coverage-guided fuzzing of every parser (atheris, FUZZ_RUNS=500000), then the long property tests
	@$(BIN)/python tests/fuzz/fuzz_parsers.py -atheris_runs=$(FUZZ_RUNS)
	@HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest tests/test_fuzz.py -q --hypothesis-show-statistics

run: $(STAMP) ## start Kafka, worker (embedded ClickHouse) and gateway in the foreground; Ctrl-C stops all
	@$(BIN)/millrace run

up: $(STAMP) ## the same in the background; returns when the gateway is ready
	@$(BIN)/millrace up

down: $(STAMP) ## stop everything `make up` started
	@$(BIN)/millrace down

test: $(STAMP) ## the whole suite against a real Kafka broker and the real ClickHouse engine
	@$(BIN)/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: that is a failure"; exit 1; fi; exit $$rc

lint: $(STAMP) ## ruff and mypy
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .
	@$(BIN)/mypy

fmt: $(STAMP)
	@$(BIN)/ruff format .
	@$(BIN)/ruff check --fix .

clean: ## remove local state (broker data, embedded ClickHouse, keys cache)
	rm -rf .millrace
