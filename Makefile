# rackflow — two commands: `make demo` and `make test`. Everything they need is installed from here.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.rackflow-installed
PYTEST_ARGS ?=

.PHONY: demo test lint bench apt venv ui clean constraints

apt:
	bash scripts/install-apt.sh

$(STAMP): pyproject.toml devfleet/pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e ".[test]" -e ./devfleet
	touch $(STAMP)

venv: $(STAMP)

# rackflow's React pages: plugins/rackflow_plugin/www (Node 20+ and npm) -> www/dist/rackflow.umd.js.
WWW := plugins/rackflow_plugin/www
UI_STAMP := $(WWW)/dist/rackflow.umd.js

$(WWW)/node_modules/.package-lock.json: $(WWW)/package.json $(WWW)/package-lock.json
	cd $(WWW) && npm ci --no-audit --no-fund

$(UI_STAMP): $(WWW)/node_modules/.package-lock.json $(shell find $(WWW)/src -type f) $(WWW)/vite.config.ts $(WWW)/tsconfig.json
	cd $(WWW) && npm run build

ui: $(UI_STAMP)

demo: apt venv ui
	$(PY) -m rackflow_devfleet demo

test: apt venv ui
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check providers plugins devfleet dags tests bench
	$(VENV)/bin/ruff format --check providers plugins devfleet dags tests bench
	$(VENV)/bin/mypy providers plugins devfleet

bench: apt venv ui
	$(PY) -m bench

# Re-pin after changing dependencies in pyproject.toml.
constraints:
	$(PIP) freeze --exclude-editable | grep -v '^rackflow' > constraints.txt

clean:
	rm -rf $(VENV) .rackflow $(WWW)/node_modules $(WWW)/dist
