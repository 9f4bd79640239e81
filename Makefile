# slnb: two commands on a fresh clone, `make report` and `make test`; each installs into .venv first if needed.
SHELL := /bin/bash
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.slnb-installed
TORCH_VERSION ?= 2.13.0
FIELD  ?= demo
NBDEV_WORKERS ?= 2
export SLNB_REAL_DATA ?= $(abspath ../shared/data/real)
export MPLBACKEND ?= Agg
export PYTHONHASHSEED ?= 0

.PHONY: install test check-export check-clean test-nbs test-py test-slow report lab train bench docs clean distclean export

install: $(STAMP)

# torch first, pinned: the CPU wheel on disk; a looser requirement would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name slnb --display-name "Python (slnb)" >/dev/null
	@touch $@
	@echo "slnb installed into $(VENV)"

export: install
	$(BIN)/nbdev-export

# slnb/ must be exactly what nbdev-export makes of nbs/ (checked in a scratch copy: the tree is not touched)
check-export: install
	@tmp=$$(mktemp -d); cp -r pyproject.toml nbs slnb $$tmp/; \
	(cd $$tmp && $(CURDIR)/$(BIN)/nbdev-export) || { rm -rf $$tmp; exit 1; }; \
	if ! diff -r -x __pycache__ slnb $$tmp/slnb; then \
	  echo "FAIL: slnb/ differs from what nbdev-export makes of nbs/ (edit the notebooks, or run nbdev-update, then nbdev-export)"; \
	  rm -rf $$tmp; exit 1; fi; rm -rf $$tmp; echo "ok: slnb/ is what nbdev-export makes of nbs/"

# notebooks (library and report templates) must be committed clean
check-clean: install
	@tmp=$$(mktemp -d); mkdir -p $$tmp/reports; cp -r pyproject.toml nbs $$tmp/; cp -r reports/templates $$tmp/reports/; \
	(cd $$tmp && $(CURDIR)/$(BIN)/nbdev-clean && $(CURDIR)/$(BIN)/nbdev-clean --fname reports/templates) || { rm -rf $$tmp; exit 1; }; \
	if ! diff -r nbs $$tmp/nbs || ! diff -r reports/templates $$tmp/reports/templates; then \
	  echo "FAIL: notebooks are not clean: run 'nbdev-clean' and 'nbdev-clean --fname reports/templates'"; \
	  rm -rf $$tmp; exit 1; fi; rm -rf $$tmp; echo "ok: notebooks are clean"

test-nbs: install
	$(BIN)/nbdev-test --n-workers $(NBDEV_WORKERS) --timing

test-py: install
	$(BIN)/python -m pytest tests/

test: check-export check-clean test-nbs test-py

# cells flagged `#| slow` run only here
test-slow: install
	$(BIN)/nbdev-test --n-workers $(NBDEV_WORKERS) --flags slow

report: install
	$(BIN)/slnb report --field $(FIELD)

lab: install
	$(BIN)/python -m pip install -q -e ".[lab]"
	$(BIN)/jupyter lab

train: install
	$(BIN)/slnb train --all

bench: install
	-$(BIN)/python -m pip install -q "caustics>=1.0" 2>/dev/null || echo "caustics did not install: bench/simulate.py skips it"
	@set -e; for f in bench/*.py; do echo "== $$f"; $(BIN)/python $$f; done

docs: install
	@command -v quarto >/dev/null || { echo "make docs needs quarto (https://quarto.org); the notebooks in nbs/ are the documentation meanwhile"; exit 0; }; \
	$(BIN)/nbdev-docs

clean:
	rm -rf _proc _docs build dist *.egg-info .pytest_cache
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +
	find reports -mindepth 1 -maxdepth 1 -type d -not -name templates -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
