# Two commands matter most: `make local` (deploy to the local stack) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export ANSIBLE_HOME ?= $(CURDIR)/.ansible
# The local stack `make local` uses (Molecule and pytest run their own, on other ports).
export NDIS_LOCAL_STACK_DIR ?= /tmp/ndis-local-stack

.PHONY: help venv collections local local-up local-down local-env local-status iam lint pytest molecule molecule-docker ee test test-docker bench clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(BIN)/.installed: requirements.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or run make PYTHON=python3" >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

venv: $(BIN)/.installed  ## Create the virtualenv with the pinned packages

collections: venv  ## Make sure the collections in requirements.yml are installed
	$(BIN)/python -m dbops.collections requirements.yml

local-up: collections  ## Start the local stack (PostgreSQL 16 + pgvector, moto)
	$(BIN)/dbops-local-stack start

local: local-up  ## Deploy the whole site to the local stack and print the verify summary
	$(BIN)/ansible-playbook site.yml -l local

local-down: venv  ## Stop the local stack and remove its state
	$(BIN)/dbops-local-stack down

local-env: venv  ## Print export lines for psql and aws against the local stack
	@$(BIN)/dbops-local-stack env

local-status: venv  ## Show what the local stack runs where
	@$(BIN)/dbops-local-stack status

# The jobs' IAM policies for one environment (iam/policies.yml with its inventory): printed, and written to iam/<env>/.
ENV ?= local
iam: collections  ## Render and print the jobs' IAM policy documents for ENV (local, staging, prod) into iam/ENV/
	$(BIN)/ansible-playbook playbooks/iam.yml -l $(ENV)

lint: collections  ## yamllint, ansible-lint (production profile) and ruff: the pre-commit hooks
	$(BIN)/yamllint --strict .
	$(BIN)/ansible-lint --offline
	$(BIN)/ruff check .

# Tests run in a random order (pytest-randomly); the seed is printed first and, after a failure, last:
# make pytest PYTEST_ARGS='--randomly-seed=N' replays that order, PYTEST_ARGS='-p no:randomly' keeps file order.
PYTEST_ARGS ?=
# The suite runs on PYTEST_WORKERS pytest-xdist workers (each with a local stack of its own, tests/conftest.py);
# 0 runs it in one process. The 20 slowest tests are listed after each run.
PYTEST_WORKERS ?= 2
pytest: collections  ## Python tests against the real embedded PostgreSQL and moto, in a random order
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --durations=20 $(PYTEST_ARGS)

molecule: collections  ## Molecule default scenario: create, converge, idempotence, check, verify, destroy
	$(BIN)/molecule test -s default

# The Docker steps run under docker/engine.sh: the engine that answers, or (root on Debian)
# a dockerd installed and started for the run and stopped after it. Images the registry
# cannot give are built locally (docker/images.sh) and kept between runs.
molecule-docker: collections  ## Molecule docker scenario: pgvector/pgvector:pg16 (or a local build) and moto containers
	BIN=$(BIN) docker/engine.sh docker/molecule.sh

ee: collections  ## Build the execution environment (ansible-builder) and run site.yml in it against a local stack
	BIN=$(BIN) docker/engine.sh docker/ee.sh

test-docker: collections  ## CI's second step: the Docker scenario and the execution environment, one engine for both
	BIN=$(BIN) docker/engine.sh docker/test.sh

test: lint pytest molecule  ## Everything CI runs

bench: local-up  ## Benchmarks against the local stack: tables of ratios against baselines
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean: local-down  ## Remove the virtualenv
	rm -rf $(VENV) .ansible
