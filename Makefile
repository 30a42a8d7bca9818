# Two commands do all the set-up: `make run` (the default experiment) and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.zephyr-installed
# Every core by default (`make run CORES=2` pins it); the jobs' declared memory (compute.memory_mb) is
# capped at what the machine has available, so parallel jobs fit its RAM.
CORES ?= all
MEM_MB ?= $(shell awk '/MemAvailable/ {print int($$2 / 1024 * 0.9)}' /proc/meminfo 2>/dev/null || echo 8000)
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: setup run report test dryrun plan envs lint clean clean-shared studies dag check-default timings check-config verify docs

setup: $(STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-nodeps.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# The study to run or read: CONFIG (default config.yaml); SEEDS=N its replicate N (every seed moved, its own
# outputs: `make run SEEDS=2`, then `make check-default SEEDS=2`). Each study writes under its own
# folder (`make studies` lists them); only shared inputs (raw data, base models, records) are shared.
# DRAWS=N (default: the config's `draws`, 1) runs the study's N draws, compared item by item in draw 1's claims:
# draw k moves only the training seeds, in results/{experiment}-draw{k}/, and takes the base models' outputs from
# draw 1. `make run DRAWS=3` runs draw 1 but its claims, draws 2 and 3, then draw 1's claims; the targets that read
# a study (check-default, timings, verify, report...) read draw 1, with DRAWS=3 too.
CONFIG ?= config.yaml
SEEDED_CONFIG = $(if $(SEEDS),$(shell $(BIN)/python -m zephyr.studies draw $(SEEDS) $(CONFIG)),$(CONFIG))
# every draw's config in run order, draw 1 first (`python -m zephyr.studies draws` writes 2..N): asked once
DRAW_CONFIGS = $(eval DRAW_CONFIGS := $$(shell $(BIN)/python -m zephyr.studies draws $(DRAWS) $(SEEDED_CONFIG)))$(DRAW_CONFIGS)
STUDY_CONFIG = $(or $(firstword $(DRAW_CONFIGS)),$(error the study's draws: see the error above))
OTHER_DRAWS = $(wordlist 2,$(words $(DRAW_CONFIGS)),$(DRAW_CONFIGS))
OUTPUTS = $(shell $(BIN)/python -m zephyr.studies dir $(STUDY_CONFIG))
SNAKEMAKE_RUN = $(BIN)/snakemake --cores $(CORES) --resources mem_mb=$(MEM_MB)

run: setup
	$(SNAKEMAKE_RUN)$(if $(OTHER_DRAWS), draw_alone) --configfile $(STUDY_CONFIG)
	$(if $(OTHER_DRAWS),$(foreach draw,$(OTHER_DRAWS),$(SNAKEMAKE_RUN) --configfile $(draw) &&) $(SNAKEMAKE_RUN) --configfile $(STUDY_CONFIG))
	$(BIN)/snakemake --configfile $(STUDY_CONFIG) --report $(OUTPUTS)/report.html

# Which of the study's effects the finished run shows beyond their uncertainty (after `make run`).
check-default: setup
	$(BIN)/python -m zephyr.report.effects $(STUDY_CONFIG)

# Every stored artifact of a study (datasets, records, models, mixtures, adapters, exports, pair scores) checked
# in full against its manifest, one line each; exit 1 on any mismatch: `make verify CONFIG=...`.
verify: setup
	$(BIN)/python -m zephyr.verify $(STUDY_CONFIG)

# Every study under results/: its folder, name, config fingerprint and whether it is complete.
studies: setup
	$(BIN)/python -m zephyr.studies list

# A config checked as the workflow reads it, before any run: `make check-config CONFIG=my.yaml` names the file,
# line and key of a mistake (Snakemake's own --configfile parse only says "not valid JSON or YAML").
check-config: setup
	$(BIN)/python -m zephyr.config $(CONFIG)

# Where a finished run's minutes went: job time per rule, the critical path, idle core-time.
timings: setup
	$(BIN)/python -m zephyr.report.timings $(STUDY_CONFIG)

report: setup
	$(BIN)/snakemake --configfile $(STUDY_CONFIG) --report $(OUTPUTS)/report.html

test: setup
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python -m pytest

dryrun: setup
	$(BIN)/snakemake -n --quiet rules
	$(BIN)/snakemake -n --quiet rules --configfile config/paper.yaml

# Each training run in numbers (records, global batch, optimizer steps, warmup): `make plan CONFIG=config/paper.yaml`
plan: setup
	$(BIN)/python -m zephyr.plan $(STUDY_CONFIG)

# The configuration reference, docs/configuration.md, from schemas/config.schema.yaml (after changing the schema;
# tests/test_docs.py fails on a stale page).
docs: setup
	$(BIN)/python -m zephyr.docs

envs: setup
	$(BIN)/python -m zephyr.environment --write
	$(BIN)/python -c "from zephyr.model import hyperparameters; hyperparameters.write_trl_fields()"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile rules

# One study's outputs, checkpoints included (the default, CONFIG=..., SEEDS=N, DRAWS=N: every draw, or STUDY=name
# as `make studies` lists it); shared files stay.
clean: setup
	$(BIN)/python -m zephyr.studies clean $(if $(STUDY),--study $(STUDY),$(DRAW_CONFIGS))

# What studies share (raw datasets, base models, formatted records), rebuilt by the next run that needs it.
clean-shared:
	rm -rf resources

# DAG pictures of any study: `make dag` or `make dag CONFIG=config/paper.yaml` writes {outputs}/dag.svg
# (every job) and results/rulegraph.svg (every rule), with their DOT sources next to them.
dag: setup
	@command -v dot >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing graphviz (apt)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends graphviz >/dev/null; \
	  else echo "make dag needs graphviz's dot: apt-get install graphviz" >&2; exit 1; fi; }
	mkdir -p $(OUTPUTS)
	$(BIN)/snakemake --rulegraph dot --configfile $(STUDY_CONFIG) > $(OUTPUTS)/rulegraph.dot
	dot -Tsvg $(OUTPUTS)/rulegraph.dot -o $(OUTPUTS)/rulegraph.svg
	$(BIN)/snakemake --dag dot --configfile $(STUDY_CONFIG) > $(OUTPUTS)/dag.dot
	dot -Tsvg $(OUTPUTS)/dag.dot -o $(OUTPUTS)/dag.svg
