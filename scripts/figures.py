"""Snakemake glue for zephyr.figures.appendix."""

from zephyr import figures, logs

logs.setup(snakemake.log[0])
figures.appendix(
    dict(zip(snakemake.params.runs, snakemake.input)),
    snakemake.params.variants,
    snakemake.params.hyperparameters,
    dict(snakemake.output.items()),
)
