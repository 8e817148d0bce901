# django-zkflags. `make demo` and `make test` work on a fresh machine (see README).
VENV := .venv
PY := $(VENV)/bin/python
ZKDIR := .zk
ZKPORT ?= 2181
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: setup demo zk-start zk-stop test test-fast lint format bench bench-smoke tox clean

setup:
	bash scripts/bootstrap.sh test

demo: setup zk-start
	bash scripts/demo.sh $(HOST) $(PORT) $(ZKPORT)

zk-start: setup
	$(PY) -m tests.support.zookeeper start --dir $(ZKDIR) --port $(ZKPORT)

zk-stop:
	$(PY) -m tests.support.zookeeper stop --dir $(ZKDIR)

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q tests/unit

lint: setup
	$(PY) -m ruff check django_zkflags tests example_project bench
	$(PY) -m ruff format --check django_zkflags tests example_project bench
	$(PY) -m mypy

format: setup
	$(PY) -m ruff format django_zkflags tests example_project bench
	$(PY) -m ruff check --fix django_zkflags tests example_project bench

bench:
	bash scripts/bootstrap.sh "test,bench"
	$(PY) bench/run.py

bench-smoke: setup
	$(PY) bench/run.py --smoke

tox: setup
	$(VENV)/bin/pip install -q tox
	$(VENV)/bin/tox

clean:
	rm -rf $(VENV) .tox .pytest_cache .ruff_cache build dist *.egg-info
