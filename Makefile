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
