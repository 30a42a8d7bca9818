"""Snakemake glue for zephyr.evaluation.tasks.evaluate_files (call that function directly outside Snakemake)."""

from pathlib import Path

from zephyr import devices, logs, study
from zephyr.evaluation import tasks

logs.setup(snakemake.log[0])
devices.for_job(snakemake.threads, snakemake.resources)
task = snakemake.params.get("task") or snakemake.wildcards.task
form = snakemake.wildcards.get("form", "dense")
parent = snakemake.input.get("parent")
tasks.evaluate_files(
    task,
    Path(snakemake.input.model).parent,
    snakemake.input.data,
    snakemake.output.metrics,
    snakemake.output.records,
    model=snakemake.wildcards.model,
    variant=study.form_name(snakemake.wildcards.variant, form),
    settings=snakemake.params.settings,
    parent_dir=Path(parent).parent if parent else None,
)
