# `make demo` and `make test` work on a fresh clone: they create .venv, install the pinned
# package, then run. The install is redone only when pyproject.toml changes.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= 2

.PHONY: install demo test test-all lint slurm-profile clean-demo device-wheels

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
	$(RUN_IN_VENV) snakemake --profile profiles/default --cores $(CORES) all table15

# one worker per core, a test file per worker (module fixtures are built once): most tests wait
# on a subprocess importing torch, so two files side by side take 15 % less than one after another
PYTEST_ARGS ?= -n $(CORES) --dist loadfile

test: install
	$(RUN_IN_VENV) python -m pytest $(PYTEST_ARGS)

# what CI runs: the suite and the whole demo DAG at its own budget (about 20 minutes more)
test-all: install
	$(RUN_IN_VENV) python -m pytest -m "" $(PYTEST_ARGS)

lint: install
	$(RUN_IN_VENV) snakemake --lint
	$(RUN_IN_VENV) snakefmt --check Snakefile workflow/

clean-demo:
	rm -rf resources/demo work/demo results/demo

# The wheels the GPU machine's image lacks, for its CPython 3.12, into .whl/ (ignored): the
# device command `bash benchmarks/device_check.sh` installs them (benchmarks/README.md).
device-wheels: install
	$(BIN)/python benchmarks/device_wheels.py --dest .whl

# Lets `snakemake --profile slurm ...` work from any directory: Snakemake looks a bare
# profile name up in the working directory, then in its user config dir (platformdirs:
# $XDG_CONFIG_HOME/snakemake, else ~/.config/snakemake on Linux), then the site dir. Asked
# of Snakemake itself when installed, since platformdirs differs by OS. A link, not a
# copy: the profile keeps following this checkout.
USER_CONFIG_DIR_PY := from snakemake.common import get_appdirs; print(get_appdirs().user_config_dir)
slurm-profile:
	@dir=$$($(BIN)/python -c '$(USER_CONFIG_DIR_PY)' 2>/dev/null) \
		|| dir="$${XDG_CONFIG_HOME:-$$HOME/.config}/snakemake"; \
	link="$$dir/slurm"; \
	if [ -e "$$link" ] && [ ! -L "$$link" ]; then \
		echo "$$link exists and is not a link; move it away first" >&2; exit 1; fi; \
	mkdir -p "$$dir" && ln -sfn "$(CURDIR)/profiles/slurm" "$$link" \
		&& echo "$$link -> $(CURDIR)/profiles/slurm"
