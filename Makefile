# TaskHub developer commands. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
BIN := $(VENV)/bin
UV := .local/uv/bin/uv
UV_VERSION := 0.13.8
DB_NAME ?= taskhub
# The dev stack's settings (PgBouncer, replica, Redis): the one source of its URLs for
# every target that talks to it.
STACK_ENV = eval "$$(scripts/devstack.sh env)"

.PHONY: help install services packages stack stack-down test-stack broker migrate admin dev lint format test test-fast test-compat chaos bench bench-scale bench-stack bench-servers clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(UV):
	python3 -m venv .local/uv
	.local/uv/bin/pip install -q uv==$(UV_VERSION)

$(VENV)/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --python python3.11
	touch $@

install: $(VENV)/.installed ## Create the virtualenv with the locked dependencies

services: ## Make sure PostgreSQL runs on 127.0.0.1:5432 for the tests (starts or installs it)
	scripts/ensure-postgres.sh $(DB_NAME)

packages: ## Install PostgreSQL, PgBouncer and Redis (Debian packages) when missing
	scripts/devstack.sh packages

stack: ## Start the dev data stack: primary, replica, PgBouncer, Redis (.local/devstack)
	scripts/devstack.sh up

stack-down: ## Stop the dev data stack (keeps its data; `scripts/devstack.sh purge` wipes it)
	scripts/devstack.sh down

test-stack: install packages ## Start the tests' data stack (.local/teststack, on the test ports)
	$(BIN)/python -m tests.stack up

.local/secret-key:
	mkdir -p .local && umask 077 && python3 -c 'import secrets; print(secrets.token_urlsafe(48))' > $@

migrate: install stack ## Apply database migrations to the dev stack (starts it)
	$(STACK_ENV) && $(BIN)/taskhub migrate

admin: migrate ## Create the bootstrap admin in the dev stack (idempotent)
	$(STACK_ENV) && $(BIN)/taskhub bootstrap-admin --credentials-file .local/admin-credentials

broker: ## Make sure RabbitMQ runs on 127.0.0.1:5672 (starts the project's own node if needed)
	scripts/ensure-rabbitmq.sh

dev: install stack broker .local/secret-key admin ## Run API (http://127.0.0.1:8000), worker, relay, beat and a mail sink (Ctrl-C stops all)
	$(STACK_ENV) && \
	  TASKHUB_AUTH__SECRET_KEY=$$(cat .local/secret-key) TASKHUB_LOG_JSON=false \
	  TASKHUB_WEBHOOKS__ALLOWED_NETWORKS='["127.0.0.0/8","::1/128"]' \
	  exec $(BIN)/honcho --procfile Procfile start

lint: install ## ruff, mypy (strict) and the import layering contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install ## Format and autofix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: install services packages test-stack lint ## Run every test (lint included)
	$(BIN)/pytest

test-fast: lint ## Lint and the unit tests of the pure parts (tests/unit: no database, no stack; under a minute)
	$(BIN)/pytest tests/unit

test-compat: install services packages test-stack ## The API tests with every fast path off (the libraries' own behaviour, kit/internals.py)
	TASKHUB_FAST_PATHS__ENABLED=false $(BIN)/pytest tests/api tests/data

CHAOS_SECONDS ?= 300
CHAOS_SEED ?=

chaos: install packages ## Seeded fault-injection run that reconciles every effect (CHAOS_SECONDS=300, CHAOS_SEED=random; docs/reliability.md)
	CHAOS_SECONDS=$(CHAOS_SECONDS) CHAOS_SEED=$(CHAOS_SEED) $(BIN)/python -m tests.chaos

bench: install ## Benchmark the API against a raw-asyncpg reference (bench/results/latest.md)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

bench-scale: install ## 1M vs 10M tasks: each list read, get and create, and their plans (bench/results/scale.md, explain-*.md)
	$(BIN)/python bench/scale.py $(BENCH_ARGS)
	BENCH_DB_NAME=taskhub_scale_10m $(BIN)/python bench/scale_plans.py

bench-stack: install ## Benchmark the whole stack as `make dev` runs it, CPU of every process (bench/results/stack.md)
	$(BIN)/python bench/stack.py $(BENCH_ARGS)

bench-servers: install ## The API under uvicorn and granian, 1 and 2 workers (bench/results/servers.md)
	$(BIN)/python bench/servers.py $(BENCH_ARGS)

clean: ## Remove the virtualenv and caches (keeps .local data)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
