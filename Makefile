# One command per task. `make run` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint typecheck test-sqlite test-postgres bench migrate clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## run: the sandbox (local Google) and the service on SQLite, with demo data
run: $(STAMP)
	$(PY) -m app.devrun

migrate: $(STAMP)
	$(BIN)/alembic upgrade head

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

test-sqlite: $(STAMP)
	LEADMAIL_TEST_DB=sqlite $(PY) -m pytest

# The PostgreSQL pass runs every test that touches the database, on a database of its own.
test-postgres: $(STAMP)
	@if $(PY) -m tests.postgres_probe; then \
		LEADMAIL_TEST_DB=postgres $(PY) -m pytest -m db; \
	else \
		echo "*** SKIPPED the PostgreSQL pass: no PostgreSQL answers at $${TEST_POSTGRES_URL:-127.0.0.1:5432} (set TEST_POSTGRES_URL to use another) ***"; \
	fi

## test: lint, types, then every test on SQLite and on PostgreSQL when one answers
test: lint typecheck test-sqlite test-postgres

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
