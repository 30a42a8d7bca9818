"""Zephyr: the ZEPHYR study as a workflow. See README.md; `snakemake -n` shows what would run."""

import sys

from snakemake.utils import min_version

min_version("9.0")


report: "report/workflow.rst"


# Every rule's software as one Apptainer image, built from the same pins as the venv and envs/*.yaml
# (`apptainer build containers/zephyr.sif containers/zephyr.def`); used with --sdm apptainer.
container: "containers/zephyr.sif"


# Every config file is read strictly first (the zephyr package of this checkout; rules/common.smk
# says why the path): a key given twice, a YAML syntax error or an empty file stops here with one
# line naming the file, line and column. Snakemake's own reading would not name them.
sys.path.insert(0, workflow.basedir)
from zephyr import config as zconfig

CONFIG_FILES = zconfig.for_workflow(
    zconfig.read_workflow_files, workflow.overwrite_configfiles or ["config.yaml"]
)


# A --configfile replaces the default instead of being merged into it key by key, so that
# `--configfile config/paper.yaml` runs exactly the paper's experiment.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/datasets.smk"
include: "rules/records.smk"
include: "rules/mixtures.smk"
include: "rules/models.smk"
include: "rules/training.smk"
include: "rules/llamafactory.smk"
include: "rules/export.smk"
include: "rules/evaluate.smk"
include: "rules/draws.smk"
include: "rules/report.smk"


# Fetching needs the network, which many clusters' compute nodes lack: on SLURM these jobs run where
# snakemake runs (the login node), and every job after them reads local files only.
localrules:
    fetch_dataset,
    fetch_model,


# A run's GPU limit below what a rule declares is an error (Snakemake would quietly lower the job's).
zresources.check_gpu_limit(workflow.resource_settings, workflow.rules)


rule all:
    default_target: True
    input:
        all_mixtures(),
        all_models(),
        final_outputs(),
        paths.study_file(),


# Every output of a draw but what reads its other draws (the claims, and the study record written after them):
# what `make run DRAWS=N` runs of draw 1 before draws 2..N. (Not --omit-from claims: Snakemake plans the whole
# DAG first, and stops on the claims' missing input, the other draws' study.json.)
rule draw_alone:
    input:
        all_mixtures(),
        all_models(),
        [f for f in final_outputs() if f not in rules.claims.output],
