"""Snakemake glue for zephyr.data.mixtures.gather_warnings: the config's warnings and the draws'."""

from zephyr import logs
from zephyr.data import mixtures

logs.setup(snakemake.log[0])
mixtures.gather_warnings(snakemake.input, snakemake.output[0], snakemake.params.config_warnings)
