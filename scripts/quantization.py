"""Snakemake glue for zephyr.table.quantization_from_files and zephyr.figures.quantization."""

from pathlib import Path

from zephyr import figures, logs, table

logs.setup(snakemake.log[0])
frame = table.quantization_from_files(
    snakemake.input.perplexity, [Path(m).parent for m in snakemake.input.models]
)
table.write_csv(frame, snakemake.output.table)
figures.quantization(frame, snakemake.output.figure)
