"""Snakemake glue for zephyr.data.records.format_dataset (call that function directly outside Snakemake)."""

from pathlib import Path

from zephyr import logs
from zephyr.data import records

logs.setup(snakemake.log[0])
records.format_dataset(
    snakemake.wildcards.dataset,
    Path(snakemake.input.data).parent,
    snakemake.output[0],
    snakemake.params.format["formatter"],
    snakemake.params.format["options"],
)
