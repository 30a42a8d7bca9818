"""Snakemake glue for zephyr.data.mixtures.dataset_info."""

from pathlib import Path

from zephyr import files, logs
from zephyr.data import mixtures

logs.setup(snakemake.log[0])
info = mixtures.dataset_info(snakemake.params.tasks, Path(snakemake.output[0]).parent)
files.write_json(snakemake.output[0], info)
