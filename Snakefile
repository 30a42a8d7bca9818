"""Zephyr: the ZEPHYR study as a workflow. See README.md; `snakemake -n` shows what would run."""

from snakemake.utils import min_version

min_version("9.0")


report: "report/workflow.rst"


# Every rule's software as one Apptainer image, built from the same pins as the venv and envs/*.yaml
# (`apptainer build containers/zephyr.sif containers/zephyr.def`); used with --sdm apptainer.
container: "containers/zephyr.sif"


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
