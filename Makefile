# Bullant: `make run` starts the platform, `make test` runs the suite; both set up what they need first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
NODE_STAMP := node_modules/.installed-$(shell cat package.json package-lock.json | cksum | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: setup run test test-unit proto proto-check lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

$(NODE_STAMP): package.json package-lock.json
	# `npm ci` refuses this lock file: npm records only the optional platform binary it installed.
	npm install --no-audit --no-fund --loglevel=error
	@rm -f node_modules/.installed-*
	@touch $@

run: setup
	$(BIN)/bullant serve all --gateway

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: setup
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

proto: setup
	$(PY) scripts/genproto.py

# Fails when gen/ differs from what the protos generate (including new or deleted files).
proto-check: proto
	@if [ -n "$$(git status --porcelain -- gen)" ]; then \
		echo "gen/ is stale: run 'make proto' and commit the result"; git status --short -- gen; exit 1; \
	fi
	@echo "gen/ is up to date"

lint: setup $(NODE_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	cd protos && ../node_modules/.bin/buf lint

bench: setup
	@test -f $(subst .installed-,.bench-installed-,$(STAMP)) || { $(PY) -m pip install --quiet -e '.[dev,bench]' \
		&& rm -f $(VENV)/.bench-installed-* && touch $(subst .installed-,.bench-installed-,$(STAMP)); }
	$(PY) -m bench

clean:
	rm -rf $(VENV) node_modules var .pytest_cache .mypy_cache .ruff_cache
