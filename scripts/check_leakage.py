"""Snakemake glue for zephyr.data.mixtures.check_leakage_files (call that function directly outside Snakemake)."""

from zephyr import logs
from zephyr.data import mixtures

logs.setup(snakemake.log[0])
mixtures.check_leakage_files(snakemake.params.plan, snakemake.params.parts, snakemake.output[0])
