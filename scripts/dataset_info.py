"""Snakemake glue for zephyr.data.mixtures.dataset_info."""

from zephyr import files, logs
from zephyr.data import mixtures

logs.setup(snakemake.log[0])
files.write_json(snakemake.output[0], mixtures.dataset_info(snakemake.params.tasks))
