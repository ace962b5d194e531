# The two commands of the README's quick start: `make run` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TSTAMP := $(VENV)/.installed-test

.PHONY: run test test-sqlite test-postgres bench lint clean

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	@touch $@

$(TSTAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP) $@

## make run: install, migrate the SQLite database, ingest seeds/ and keep watching
run: $(STAMP)
	$(VENV)/bin/redline --config config.toml run

## make test: install the test dependencies and run the whole suite (SQLite and PostgreSQL)
test: $(TSTAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(TSTAMP)
	$(PY) bench/ingest.py

clean:
	rm -rf $(VENV) redline.db redline.db-wal redline.db-shm events.jsonl
