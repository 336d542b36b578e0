# `make demo` and `make test` work on a fresh clone: they create .venv, install the pinned
# package, then run. The install is redone only when pyproject.toml changes.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= 2

.PHONY: install demo test lint slurm-profile clean-demo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first and alone: pip then takes the exact pinned wheel instead of resolving a newer one.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Rules call the `internseg` console script, so the venv's bin goes first on PATH.
RUN_IN_VENV := PATH=$(abspath $(BIN)):$$PATH

demo: install
	$(RUN_IN_VENV) snakemake --profile profiles/default --cores $(CORES) all

test: install
	$(RUN_IN_VENV) python -m pytest $(PYTEST_ARGS)

lint: install
	$(RUN_IN_VENV) snakemake --lint
	$(RUN_IN_VENV) snakefmt --check Snakefile workflow/

clean-demo:
	rm -rf resources/demo work/demo results/demo
