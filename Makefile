# Two commands matter on a fresh machine: `make run` and `make test`. Each installs what it needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install native run up down status test test-reliability lint fmt broker clean lock chromium

# Installs come from uv.lock, never from pyproject's ranges: `uv sync --locked` installs exactly
# the locked versions (Millrace itself editable) and removes anything else from .venv. A lock
# that no longer matches pyproject.toml stops the install: `make lock` updates it (docs/install.md).
# uv itself is pinned: the lock file's format belongs to the uv that wrote it.
UV_VERSION := 0.13.9
UV := $(BIN)/uv
UV_STAMP := $(VENV)/.uv-$(UV_VERSION)
SYNC := UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --locked -q

$(UV_STAMP):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q 'uv==$(UV_VERSION)'
	@rm -f $(VENV)/.uv-*
	@touch $(UV_STAMP)

# `uv lock --check` needs no network when the lock is current. Its own message is printed too: it
# also fails when the check itself could not run (no index for a newly added package, say).
define check_lock
	@out=$$($(UV) lock --check 2>&1) || { echo "$$out" >&2; \
	if grep -q 'needs to be updated' <<<"$$out"; then \
		echo "uv.lock is out of date with pyproject.toml: run 'make lock', then commit uv.lock with pyproject.toml." >&2; \
	else echo "could not check uv.lock against pyproject.toml (see above)" >&2; fi; exit 1; }
endef

$(STAMP): $(UV_STAMP) pyproject.toml uv.lock
	$(check_lock)
	@$(SYNC) --extra test --extra lint
	@touch $(STAMP)

# LOCK_ARGS="--upgrade-package aiohttp" (or "--upgrade") to move locked versions on; without it
# `uv lock` keeps every version it can and changes only what pyproject.toml requires.
LOCK_ARGS ?=
lock: $(UV_STAMP) ## update uv.lock after editing the dependencies in pyproject.toml (LOCK_ARGS="--upgrade-package NAME")
	@$(UV) lock $(LOCK_ARGS)

# The parsers compiled with mypyc (formats/native.py) into build/native/. The command itself
# knows whether the build is current (a digest of the sources and the interpreter), so it runs
# every time and returns at once when there is nothing to do. Without a C compiler it says so
# and the parsers run from source.
native: $(STAMP) ## compile the parsers with mypyc when their sources changed (`make install` does it too)
	@$(BIN)/python -m ops.native

install: $(STAMP) native ## create .venv with Millrace and its test tools, and compile the parsers

# The bench extra (matplotlib, locust) only when a bench target needs it.
BENCH_STAMP := $(VENV)/.installed-bench
BENCH_ARGS ?=
LOCUST_HOST ?= http://localhost:$(or $(MILLRACE_PORT),8080)
DEV_KEY := $(or $(MILLRACE_HOME),.millrace)/dev-key

.PHONY: bench locust

# --inexact: add the extra's packages and remove nothing (the fuzz extra may be there too).
# A re-install of the base ($(STAMP)) removes them again, and then this stamp is older than it.
$(BENCH_STAMP): $(STAMP) pyproject.toml uv.lock
	@$(SYNC) --inexact --extra test --extra lint --extra bench
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) native ## start a pipeline of its own, load it for 60 s, compare with Kafka/ClickHouse baselines (BENCH_ARGS="--duration 120")
	@$(BIN)/python -m bench $(BENCH_ARGS)

locust: $(BENCH_STAMP) ## locust, headless, against a running Millrace (`make up` first; key from .millrace/dev-key)
	@test -n "$$MILLRACE_KEY" -o -s $(DEV_KEY) || { echo "no key: run 'make up' first or set MILLRACE_KEY"; exit 1; }
	@MILLRACE_KEY="$${MILLRACE_KEY:-$$(cat $(DEV_KEY))}" $(BIN)/locust -f bench/locustfile.py \
		--headless -u 50 -r 10 -t 60s --host $(LOCUST_HOST)

# The fuzz extra (atheris) only for `make fuzz`. FUZZ_RUNS inputs for atheris, then the long hypothesis profile.
FUZZ_STAMP := $(VENV)/.installed-fuzz
FUZZ_RUNS ?= 500000

.PHONY: fuzz

$(FUZZ_STAMP): $(STAMP) pyproject.toml uv.lock
	@$(SYNC) --inexact --extra test --extra lint --extra fuzz
	@touch $(FUZZ_STAMP)

fuzz: $(FUZZ_STAMP) ## coverage-guided fuzzing of every parser (atheris, FUZZ_RUNS=500000), then the long property tests
	@$(BIN)/python tests/fuzz/fuzz_parsers.py -atheris_runs=$(FUZZ_RUNS)
	@HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest tests/test_fuzz.py -q --hypothesis-show-statistics

run: $(STAMP) native ## start Kafka, worker (embedded ClickHouse) and gateway in the foreground; Ctrl-C stops all
	@$(BIN)/millrace run

up: $(STAMP) native ## the same in the background; returns when the gateway is ready
	@$(BIN)/millrace up

down: $(STAMP) ## stop everything `make up` started
	@$(BIN)/millrace down

status: $(STAMP) ## each process (pid, uptime, restarts, ready), consumer lag, dead letters; exit 1 if not all ready
	@$(BIN)/millrace status

# The explorer's browser tests (tests/explorer) drive Debian's Chromium, never a downloaded one.
# Installed with apt-get when missing (as root, or with password-less sudo); where that cannot
# be done this stops with the reason instead of letting those tests be skipped.
CHROMIUM := /usr/bin/chromium
chromium: ## install Debian's chromium for the explorer's browser tests when it is missing
	@test -x $(CHROMIUM) || { \
	command -v apt-get >/dev/null || { echo "the explorer's browser tests need Chromium at $(CHROMIUM) and there is no apt-get here: install Chromium there" >&2; exit 1; }; \
	sudo=; [ "$$(id -u)" = 0 ] || sudo="sudo -n"; \
	echo "installing Debian's chromium (apt-get) for the explorer's browser tests"; \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 \
	|| { $$sudo apt-get update -q && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } \
	|| { echo "could not install chromium with apt-get (see above): the explorer's browser tests need $(CHROMIUM)" >&2; exit 1; }; \
	test -x $(CHROMIUM) || { echo "apt-get installed chromium but $(CHROMIUM) is missing" >&2; exit 1; }; }

# The long chaos runs (marked `reliability`) only in `make test-reliability`.
test: $(STAMP) native chromium ## the whole suite against a real Kafka broker and the real ClickHouse engine
	@$(BIN)/python -m pytest -m "not reliability"; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: that is a failure"; exit 1; fi; exit $$rc

# The chaos tests alone, with their figures (requests sent, acknowledged, stored, lost, duplicated,
# 503s, seconds until each killed process was ready again). `make test` runs the first too;
# the second (three brokers, MILLRACE_KAFKA_BROKERS=3, about 90 s) only runs here.
test-reliability: $(STAMP) ## SIGKILL worker, gateway and broker(s) of a `make up` under load, then two of three brokers; print the figures
	@$(BIN)/python -m pytest tests/test_cli_run.py tests/test_kafka_cluster.py -k "heals_itself or survive" -q -s

lint: $(STAMP) ## ruff and mypy
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .
	@$(BIN)/mypy

fmt: $(STAMP)
	@$(BIN)/ruff format .
	@$(BIN)/ruff check --fix .

clean: ## remove local state (broker data, embedded ClickHouse, keys cache)
	rm -rf .millrace
