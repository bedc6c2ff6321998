# Bullant: `make run` starts the platform, `make test` runs the suite; both set up what they need first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# A new lock (or pyproject.toml) means a new install; see README "Dependencies".
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements/dev.txt requirements/torch.txt | cksum | cut -d' ' -f1)
BENCH_STAMP := $(VENV)/.bench-installed-$(shell cat requirements/bench.txt | cksum | cut -d' ' -f1)
NODE_STAMP := node_modules/.installed-$(shell cat package.json package-lock.json | cksum | cut -d' ' -f1)
# Where torch's CPU build comes from when the machine's own pip configuration (index, find-links) has none.
TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu
PYTEST_ARGS ?=
# Test processes: the suite mostly waits (servers, subprocesses, timers), so more processes than cores pay off.
TEST_WORKERS ?= 4

.PHONY: setup torch run test test-unit proto proto-check lint lock lock-check upgrade bench clean

setup: $(STAMP)

# Installs exactly the lock: every file checked against its hash, no resolution, no newer release.
$(STAMP): pyproject.toml requirements/dev.txt requirements/torch.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) scripts/lock.py check
	$(PY) -m pip install --quiet --require-hashes --no-deps -r requirements/dev.txt
	$(MAKE) --no-print-directory torch
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	@rm -f $(VENV)/.installed-*
	@touch $@

# torch's CPU build, pinned by requirements/torch.txt: from the machine's own pip sources when they have it (a local
# wheel directory, a mirror), else from the PyTorch CPU index.
torch:
	@$(PY) -m pip install --quiet --no-deps --no-index -r requirements/torch.txt 2>/dev/null \
		|| $(PY) -m pip install --quiet --no-deps --index-url $(TORCH_INDEX_URL) -r requirements/torch.txt

$(NODE_STAMP): package.json package-lock.json
	# Exactly package-lock.json (complete for every platform buf ships for); buf's postinstall only relinks its binary.
	npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@rm -f node_modules/.installed-*
	@touch $@

run: setup
	$(BIN)/bullant serve all --gateway

test: setup
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadscope $(PYTEST_ARGS)

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
	@test -f $(BENCH_STAMP) || { $(PY) -m pip install --quiet --require-hashes --no-deps -r requirements/bench.txt \
		&& $(PY) -m pip check && rm -f $(VENV)/.bench-installed-* && touch $(BENCH_STAMP); }
	$(PY) -m bench

# Writes requirements/ again after a change to pyproject.toml's dependencies, moving no pin that still fits
# (uv, the resolver, comes from the current lock).
lock: $(BIN)/uv
	$(PY) scripts/lock.py compile

# Moves every pin to the newest release allowed: commit it on its own, with the suite green.
upgrade: $(BIN)/uv
	$(PY) scripts/lock.py compile --upgrade

$(BIN)/uv:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes --no-deps -r requirements/dev.txt

lock-check:
	@$(PYTHON) scripts/lock.py check && echo "requirements/ is up to date with pyproject.toml"

clean:
	rm -rf $(VENV) node_modules var .pytest_cache .mypy_cache .ruff_cache
