# The two commands of the README's quick start: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TSTAMP := $(VENV)/.installed-test

.PHONY: run test bench clean

$(PY):
	@test -n "$(PYTHON)" || { echo "need Python 3.11 (python3.11 or python3 on PATH)"; exit 1; }
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

## make bench: every benchmark in bench/ (each prints ratios to a baseline of the same run)
bench: $(TSTAMP)
	$(PY) bench/ingest.py
	$(PY) bench/postgres.py
	$(PY) bench/latency.py
	$(PY) bench/notify.py
	$(PY) bench/web.py

clean:
	rm -rf $(VENV) redline.db redline.db-wal redline.db-shm events.jsonl
