"""Snakemake glue for zephyr.paths.study_record: the study's record, once every final output is written."""

from zephyr import files, logs, paths

logs.setup(snakemake.log[0])
files.write_json(snakemake.output[0], paths.study_record(snakemake.params.config, snakemake.params.config_files,
                                                         snakemake.input))
