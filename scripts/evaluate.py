"""Snakemake glue for zephyr.evaluation.evaluate_files (call that function directly outside Snakemake)."""

from pathlib import Path

from zephyr import devices, evaluation, logs

logs.setup(snakemake.log[0])
devices.for_job(snakemake.threads, snakemake.resources)
task = snakemake.params.get("task") or snakemake.wildcards.task
form = snakemake.wildcards.get("form", "dense")
parent = snakemake.input.get("parent")
evaluation.evaluate_files(
    task,
    Path(snakemake.input.model).parent,
    snakemake.input.data,
    snakemake.output.metrics,
    snakemake.output.records,
    model=snakemake.wildcards.model,
    variant=snakemake.wildcards.variant + ("" if form == "dense" else f"-{form}"),
    settings=snakemake.params.settings,
    parent_dir=Path(parent).parent if parent else None,
)
