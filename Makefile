# Two commands on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8080
DATA ?= ./goflypy-data
# hnswlib builds from source; -march=native wheels crash on other CPUs.
export HNSWLIB_NO_NATIVE := 1

.PHONY: serve test install lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,dev]'
	touch $@

install: $(VENV)/.installed

serve: install
	$(PY) -m goflypy serve --host $(HOST) --port $(PORT) --data-dir $(DATA) --demo

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check goflypy tests bench
	$(VENV)/bin/mypy goflypy

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
