"""Snakemake glue for zephyr.data.mixtures.gather_warnings."""

from zephyr import logs
from zephyr.data import mixtures

logs.setup(snakemake.log[0])
mixtures.gather_warnings(snakemake.input, snakemake.output[0])
