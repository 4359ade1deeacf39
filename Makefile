# rackflow — two commands: `make demo` and `make test`. Everything they need is installed from here.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.rackflow-installed
PYTEST_ARGS ?=

.PHONY: demo test lint bench apt venv clean constraints

apt:
	bash scripts/install-apt.sh

$(STAMP): pyproject.toml devfleet/pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e ".[test]" -e ./devfleet
	touch $(STAMP)

venv: $(STAMP)

demo: apt venv
	$(PY) -m rackflow_devfleet demo

test: apt venv
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check providers plugins devfleet dags tests bench
	$(VENV)/bin/ruff format --check providers plugins devfleet dags tests bench
	$(VENV)/bin/mypy providers plugins devfleet

bench: apt venv
	$(PY) -m bench

# Re-pin after changing dependencies in pyproject.toml.
constraints:
	$(PIP) freeze --exclude-editable | grep -v '^rackflow' > constraints.txt

clean:
	rm -rf $(VENV) .rackflow
