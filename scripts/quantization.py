"""Snakemake glue for zephyr.report.table.quantization_from_files and zephyr.report.figures.quantization."""

from pathlib import Path

from zephyr import logs
from zephyr.report import figures, table

logs.setup(snakemake.log[0])
frame = table.quantization_from_files(
    snakemake.input.perplexity, [Path(m).parent for m in snakemake.input.models]
)
table.write_csv(frame, snakemake.output.table)
figures.quantization(frame, snakemake.output.figure)
