"""Snakemake glue for zephyr.data.mixtures.draw_files (call that function directly outside Snakemake)."""

from zephyr import logs
from zephyr.data import mixtures

logs.setup(snakemake.log[0])
# the record files come in the order of the mixture's components (rules/common.smk's mixture_inputs)
components = [c["dataset"] for c in snakemake.params.spec["components"]]
mixtures.draw_files(
    snakemake.wildcards.mixture,
    snakemake.params.spec,
    records=dict(zip(components, snakemake.input.records, strict=True)),
    exclude=snakemake.input.exclude,
    out=dict(snakemake.output.items()),
    least=snakemake.params.least,
)
