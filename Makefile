# TaskHub developer commands. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
BIN := $(VENV)/bin
UV := .local/uv/bin/uv
UV_VERSION := 0.13.8
DB_NAME ?= taskhub
export TASKHUB_DB__URL ?= postgresql+asyncpg://postgres@127.0.0.1:5432/$(DB_NAME)

.PHONY: help install services packages stack stack-down broker migrate admin dev lint format test bench clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(UV):
	python3 -m venv .local/uv
	.local/uv/bin/pip install -q uv==$(UV_VERSION)

$(VENV)/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --python python3.11
	touch $@

install: $(VENV)/.installed ## Create the virtualenv with the locked dependencies

services: ## Make sure PostgreSQL runs (starts or installs it if needed)
	scripts/ensure-postgres.sh $(DB_NAME)

packages: ## Install PostgreSQL, PgBouncer and Redis (Debian packages) when missing
	scripts/devstack.sh packages

stack: ## Start the local data stack: primary, replica, PgBouncer, Redis (.local/devstack)
	scripts/devstack.sh up

stack-down: ## Stop the local data stack (keeps its data; `scripts/devstack.sh purge` wipes it)
	scripts/devstack.sh down

.local/secret-key:
	mkdir -p .local && umask 077 && python3 -c 'import secrets; print(secrets.token_urlsafe(48))' > $@

migrate: install services ## Apply database migrations
	$(BIN)/taskhub migrate

admin: migrate ## Create the bootstrap admin (idempotent)
	$(BIN)/taskhub bootstrap-admin --credentials-file .local/admin-credentials

broker: ## Make sure RabbitMQ runs on 127.0.0.1:5672 (starts the project's own node if needed)
	scripts/ensure-rabbitmq.sh

dev: install stack broker .local/secret-key ## Run API (http://127.0.0.1:8000), worker, relay, beat and a mail sink (Ctrl-C stops all)
	eval "$$(scripts/devstack.sh env)" && $(BIN)/taskhub migrate && \
	  $(BIN)/taskhub bootstrap-admin --credentials-file .local/admin-credentials && \
	  TASKHUB_AUTH__SECRET_KEY=$$(cat .local/secret-key) TASKHUB_LOG_JSON=false \
	  TASKHUB_WEBHOOKS__ALLOW_PRIVATE_NETWORKS=true \
	  exec $(BIN)/honcho --procfile Procfile start

lint: install ## ruff, mypy (strict) and the import layering contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install ## Format and autofix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: install services packages lint ## Run every test (lint included)
	$(BIN)/pytest

bench: install ## Benchmark the API against a raw-asyncpg reference (bench/results/latest.md)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean: ## Remove the virtualenv and caches (keeps .local data)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
