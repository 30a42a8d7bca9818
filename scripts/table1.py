"""Snakemake glue for zephyr.report.table.table1."""

from zephyr import logs
from zephyr.report import table

logs.setup(snakemake.log[0])
frame = table.table1(snakemake.params.rows, table.read_metrics(snakemake.input))
table.write_csv(frame, snakemake.output[0])
