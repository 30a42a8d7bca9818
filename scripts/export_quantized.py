"""Snakemake glue for zephyr.export.quantize (call that function directly outside Snakemake)."""

from pathlib import Path

from zephyr import devices, export, logs

logs.setup(snakemake.log[0])
devices.for_job(snakemake.threads, snakemake.resources)
export.quantize(
    Path(snakemake.input[0]).parent,
    Path(snakemake.output.manifest).parent,
    snakemake.wildcards.precision,
)
