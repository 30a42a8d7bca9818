"""Snakemake glue for zephyr.report.table.quantization_from_files and zephyr.report.figures.quantization:
the files of the forms the config quantizes (the rule's inputs)."""

from zephyr import logs, paths, study
from zephyr.report import figures, table

logs.setup(snakemake.log[0])
frame = table.quantization_from_files(
    paths.quantization_metrics(snakemake.config),
    {key: paths.variant_model(*key, file=None) for key in study.quantized_forms(snakemake.config)},
)
table.write_csv(frame, snakemake.output.table)
figures.quantization(frame, snakemake.output.figure)
