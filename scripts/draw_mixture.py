"""Snakemake glue for zephyr.data.mixtures.draw_files (call that function directly outside Snakemake)."""

from zephyr import logs
from zephyr.data import mixtures

logs.setup(snakemake.log[0])
mixtures.draw_files(
    snakemake.wildcards.mixture,
    snakemake.params.spec,
    records=snakemake.input.records,
    exclude=snakemake.input.exclude,
    out=dict(snakemake.output.items()),
    least=snakemake.params.least,
)
