# Two commands do all the set-up: `make run` (the default experiment) and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.zephyr-installed
CORES ?= 2
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: setup run report test dryrun plan envs lint clean dag check-default timings check-config

setup: $(STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-nodeps.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

run: setup
	$(BIN)/snakemake --cores $(CORES)
	$(BIN)/snakemake --report results/report.html

# Which of the study's effects the finished run shows beyond their uncertainty (after `make run`).
check-default: setup
	$(BIN)/python -m zephyr.report.effects $(CONFIG)

# A config checked as the workflow reads it, before any run: `make check-config CONFIG=my.yaml` names the file,
# line and key of a mistake (Snakemake's own --configfile parse only says "not valid JSON or YAML").
check-config: setup
	$(BIN)/python -m zephyr.config $(CONFIG)

# Where a finished run's minutes went: job time per rule, the critical path, idle core-time.
timings: setup
	$(BIN)/python -m zephyr.report.timings

report: setup
	$(BIN)/snakemake --report results/report.html

test: setup
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python -m pytest

dryrun: setup
	$(BIN)/snakemake -n --quiet rules
	$(BIN)/snakemake -n --quiet rules --configfile config/paper.yaml

# Each training run in numbers (records, global batch, optimizer steps, warmup): `make plan CONFIG=config/paper.yaml`
plan: setup
	$(BIN)/python -m zephyr.plan $(CONFIG)

envs: setup
	$(BIN)/python -m zephyr.environment --write
	$(BIN)/python -c "from zephyr.model import hyperparameters; hyperparameters.write_trl_fields()"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile rules

clean:  # every output, checkpoints included
	rm -rf resources logs .snakemake benchmarks results/records results/mixtures \
	  results/adapters results/checkpoints results/models results/metrics results/figures results/llamafactory \
	  results/*.csv results/*.dot results/*.svg results/report.html

# DAG pictures of any config: `make dag` or `make dag CONFIG=config/paper.yaml` writes results/dag.svg
# (every job) and results/rulegraph.svg (every rule), with their DOT sources next to them.
CONFIG ?= config.yaml
dag: setup
	@command -v dot >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing graphviz (apt)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends graphviz >/dev/null; \
	  else echo "make dag needs graphviz's dot: apt-get install graphviz" >&2; exit 1; fi; }
	mkdir -p results
	$(BIN)/snakemake --rulegraph dot --configfile $(CONFIG) > results/rulegraph.dot
	dot -Tsvg results/rulegraph.dot -o results/rulegraph.svg
	$(BIN)/snakemake --dag dot --configfile $(CONFIG) > results/dag.dot
	dot -Tsvg results/dag.dot -o results/dag.svg
