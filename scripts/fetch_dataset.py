"""Snakemake glue for zephyr.data.sources.fetch_dataset (call that function directly outside Snakemake)."""

from pathlib import Path

from zephyr import logs
from zephyr.data import sources

logs.setup(snakemake.log[0])
params = snakemake.params.fetch
sources.fetch_dataset(
    snakemake.wildcards.dataset,
    params["source"],
    Path(snakemake.output.manifest).parent,
    expected_rows=params["rows"],
    allow_row_change=params["allow_row_change"],
    lock_file=params["lock"],
)
