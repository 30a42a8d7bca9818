"""Snakemake glue for zephyr.report.table.qlora."""

from zephyr import logs
from zephyr.report import table

logs.setup(snakemake.log[0])
table.write_csv(table.qlora(snakemake.params.rows, table.read_metrics(snakemake.input), snakemake.params.forms),
                snakemake.output[0])
