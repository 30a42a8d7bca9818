"""Snakemake glue for zephyr.data.mixtures.gather_warnings: the config's warnings, the draws' and the runs'
(zephyr.model.truncation.summary_warnings)."""

from zephyr import files, logs
from zephyr.data import mixtures
from zephyr.model import truncation

logs.setup(snakemake.log[0])
runs = [{"mixture": mixture, **row} for path, mixture in zip(snakemake.input.runs, snakemake.params.run_mixtures)
        for row in truncation.summary_warnings(files.read_json(path))]
mixtures.gather_warnings(snakemake.input.mixtures, snakemake.output[0], snakemake.params.config_warnings, runs)
