# Developer entry points. CI runs .ci/run, which calls `make test`.
SHELL := /bin/bash

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
PYTEST_ARGS ?=

.PHONY: install migrate run test lint worker clean pg-test

# The stamp is newer than pyproject.toml once the deps are installed, so a
# second `make install` does nothing until pyproject.toml changes.
install: $(VENV)/.installed

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	touch $@

migrate: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py createcachetable

run: migrate
	$(BIN)/python manage.py seed_demo
	exec $(BIN)/python manage.py serve --host $(HOST) --port $(PORT)

# pytest exits 5 when it collected nothing: that must not pass as green.
test: install
	bash scripts/ensure_chromium.sh
	@rc=0; $(BIN)/pytest $(PYTEST_ARGS) || rc=$$?; \
	if [ "$$rc" -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; \
	exit "$$rc"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

worker: install
	$(BIN)/python manage.py autoloader_worker

# var/ is the default data dir (AUTOLOADER_DATA_DIR); the venv is kept.
clean:
	rm -rf var/

# Whole suite against a throwaway PostgreSQL 15 (see scripts/with_postgres.sh).
pg-test:
	bash scripts/with_postgres.sh $(MAKE) test
