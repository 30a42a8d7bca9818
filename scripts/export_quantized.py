"""Snakemake glue for zephyr.model.quantize.quantize (call that function directly outside Snakemake)."""

from pathlib import Path

from zephyr import devices, logs
from zephyr.model import bnb, quantize

logs.setup(snakemake.log[0])
bnb.for_job(bnb.needed(formats=[snakemake.wildcards.format]))  # quantizes: fails here if bitsandbytes is missing
devices.for_job(snakemake.threads, snakemake.resources, devices.inference_memory_mb(Path(snakemake.input[0]).parent))
quantize.quantize(
    Path(snakemake.input[0]).parent,
    Path(snakemake.output.manifest).parent,
    snakemake.wildcards.format,
    snakemake.params.precision,
)
