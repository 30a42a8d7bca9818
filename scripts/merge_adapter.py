"""Snakemake glue for zephyr.export.merge_adapter (call that function directly outside Snakemake)."""

from pathlib import Path

from zephyr import devices, export, logs

logs.setup(snakemake.log[0])
devices.for_job(snakemake.threads, snakemake.resources)
export.merge_adapter(
    Path(snakemake.input.base).parent,
    Path(snakemake.input.adapter).parent,
    Path(snakemake.output.manifest).parent,
    card=snakemake.params.card,
)
