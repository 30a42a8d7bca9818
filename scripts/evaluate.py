"""Snakemake glue for zephyr.evaluation.tasks.evaluate_files (call that function directly outside Snakemake)."""

from pathlib import Path

from zephyr import devices, logs, study
from zephyr.evaluation import tasks

logs.setup(snakemake.log[0])
parent = snakemake.input.get("parent")
models = [Path(m).parent for m in (snakemake.input.model, parent) if m]
devices.for_job(snakemake.threads, snakemake.resources, sum(devices.inference_memory_mb(m) for m in models))
task = snakemake.params.get("task") or snakemake.wildcards.task
form = snakemake.wildcards.get("form", "dense")
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
