# Two commands do all the set-up: `make run` (the default experiment) and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.zephyr-installed
CORES ?= 1
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: setup run test dryrun envs lint clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-nodeps.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

run: setup
	$(BIN)/snakemake --cores $(CORES)

test: setup
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python -m pytest

dryrun: setup
	$(BIN)/snakemake -n --quiet rules
	$(BIN)/snakemake -n --quiet rules --configfile config/paper.yaml

envs: setup
	$(BIN)/python -m zephyr.environment --write

lint: setup
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile rules

clean:
	rm -rf results/records results/mixtures resources logs benchmarks/*/ .snakemake
