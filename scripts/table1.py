"""Snakemake glue for zephyr.report.table (Table 1, its standard errors, the paper beside it, MCQA) and
zephyr.report.figures.versus_paper."""

from zephyr import logs, paths
from zephyr.evaluation.results import read_metrics
from zephyr.includes import include_tasks
from zephyr.report import figures, table

logs.setup(snakemake.log[0])
include_tasks(snakemake.config)
rows = snakemake.params.rows
metrics = read_metrics(paths.Layout(snakemake.config).table1_metrics(rows))
table1, stderr = table.table1(rows, metrics), table.table1(rows, metrics, stderr=True)
versus = table.versus_paper(table1, stderr, rows, snakemake.params.models)
table.write_csv(table1, snakemake.output.table1)
table.write_csv(stderr, snakemake.output.stderr)
table.write_csv(versus, snakemake.output.versus_paper)
figures.versus_paper(versus, snakemake.output.figure)
table.write_csv(table.mcqa(rows, metrics), snakemake.output.mcqa)
