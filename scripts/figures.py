"""Snakemake glue for zephyr.report.figures.appendix."""

from zephyr import logs
from zephyr.report import figures

logs.setup(snakemake.log[0])
figures.appendix(
    dict(zip(snakemake.params.runs, snakemake.input)),
    snakemake.params.variants,
    snakemake.params.hyperparameters,
    dict(snakemake.output.items()),
)
