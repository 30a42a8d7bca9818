"""Snakemake glue for zephyr.report.table.table1 and .mcqa: Table 1, its standard errors, the MCQA table."""

from zephyr import logs
from zephyr.report import table

logs.setup(snakemake.log[0])
metrics = table.read_metrics(snakemake.input)
rows = snakemake.params.rows
table.write_csv(table.table1(rows, metrics), snakemake.output.table1)
table.write_csv(table.table1(rows, metrics, stderr=True), snakemake.output.stderr)
table.write_csv(table.mcqa(rows, metrics), snakemake.output.mcqa)
