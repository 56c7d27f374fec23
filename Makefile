# Developer entry points. CI runs .ci/run, which calls `make test`.
SHELL := /bin/bash

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
PYTEST_ARGS ?=

.PHONY: install install-app migrate run test lint worker clean pg-test serve soak bench

# The stamps are newer than pyproject.toml once the deps are installed, so a second
# install does nothing until pyproject.toml changes. `make run` and `make serve` install
# the product alone (`.`); `make test`, `make lint` and `make install` the development
# tool-chain too (`.[dev]`: pytest, Playwright, moto, schemathesis, pyspark, ruff).
install: $(VENV)/.installed
install-app: $(VENV)/.installed-app

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-app: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	touch $@ $(VENV)/.installed-app

migrate: install-app
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py createcachetable

run: migrate
	$(BIN)/python manage.py seed_demo
	exec $(BIN)/python manage.py serve --host $(HOST) --port $(PORT)

# pytest exits 5 when it collected nothing: that must not pass as green.
test: install
	bash scripts/ensure_chromium.sh
	bash scripts/ensure_spark_jars.sh
	@rc=0; $(BIN)/pytest $(PYTEST_ARGS) || rc=$$?; \
	if [ "$$rc" -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; \
	exit "$$rc"

# Production mode: DEBUG off, secrets from the environment (DJANGO_SECRET_KEY,
# DJANGO_ALLOWED_HOSTS, DATABASE_URL, ...), gunicorn + WhiteNoise, AUTOLOADER_WORKERS
# background workers (default 2). `check --deploy` prints what is not production-grade.
# Behind no TLS proxy (a trial on loopback): DJANGO_SECURE_SSL_REDIRECT=0. See docs/deploy.md.
serve: export DJANGO_DEBUG = 0
serve: install-app
	$(BIN)/python manage.py check --deploy
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py createcachetable
	$(BIN)/python manage.py init_catalog
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	HOST=$(HOST) PORT=$(PORT) PYTHON=$(BIN)/python exec bash deploy/serve.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

worker: install-app
	$(BIN)/python manage.py autoloader_worker

# var/ is the default data dir (AUTOLOADER_DATA_DIR); the venv is kept.
clean:
	rm -rf var/ var-landing/

# Whole suite against a throwaway PostgreSQL 15 (see scripts/with_postgres.sh).
pg-test:
	bash scripts/with_postgres.sh $(MAKE) test

# The reliability suite at soak size (docs/reliability.md): 200 crash trials, 20 race
# storms, 5,000 fuzzed requests. On PostgreSQL: bash scripts/with_postgres.sh make soak
soak: install
	RELIABILITY_TRIALS=200 RELIABILITY_FUZZ_REQUESTS=5000 $(BIN)/pytest tests/reliability --timeout=7200 $(PYTEST_ARGS)

# Benchmarks (docs/benchmarks.md): each prints a table and writes bench/results/*.json.
# Ratios are measured side by side in one run; clearing history runs on PostgreSQL.
bench: install
	$(BIN)/python bench/run_throughput.py
	$(BIN)/python bench/dry_run_scale.py
	bash scripts/with_postgres.sh $(BIN)/python bench/clear_history_scale.py
	$(BIN)/python bench/api_load.py
	$(BIN)/python bench/console_list.py
	$(BIN)/python bench/spark_vs_iceberg.py
	$(BIN)/python bench/s3_listing.py
	$(BIN)/python bench/refresh_publish.py
