# agent-fleet: `make run` starts the fleet, `make test` runs every test; both set up first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CODEX_VERSION := 0.169.0
CODEX_DIR := .tools/codex
export FLEET_CODEX_BIN ?= $(CURDIR)/$(CODEX_DIR)/node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex

.PHONY: setup run test test-fast soak bench lint clean

setup: $(VENV)/.installed $(CODEX_DIR)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# The pinned Codex CLI, project-local (never global): fleetd finds it under .tools/codex.
$(CODEX_DIR)/.installed:
	mkdir -p $(CODEX_DIR)
	npm install --prefix $(CODEX_DIR) --no-audit --no-fund --loglevel=error @openai/codex@$(CODEX_VERSION)
	$(FLEET_CODEX_BIN) --version
	touch $@

run: setup
	$(BIN)/fleetd --foreground

test: setup
	$(BIN)/ruff check fleetd fleetctl shared tests bench
	$(BIN)/pytest

test-fast: setup
	$(BIN)/pytest -x -q -m "not slow"

# The fault-injection soak at length (CI runs 200 tasks): random kills of children and of the
# whole daemon, then proof from the databases that nothing was lost.
# `make soak AGENT_FLEET_SOAK_TASKS=500 AGENT_FLEET_SOAK_SEED=42` (the seed is printed).
AGENT_FLEET_SOAK_TASKS ?= 2000
soak: setup
	AGENT_FLEET_SOAK_TASKS=$(AGENT_FLEET_SOAK_TASKS) $(BIN)/pytest -q -s -p no:cacheprovider tests/faults/test_soak.py

bench: setup
	$(BIN)/python -m bench

lint: setup
	$(BIN)/ruff check fleetd fleetctl shared tests bench

clean:
	rm -rf $(VENV) .tools .pytest_cache .ruff_cache
