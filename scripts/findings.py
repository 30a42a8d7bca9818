"""Snakemake glue for zephyr.report.findings (the study's tree read through zephyr.report.compare)."""

from zephyr import logs, paths
from zephyr.includes import include_tasks
from zephyr.report import compare, findings, table

logs.setup(snakemake.log[0])
config = snakemake.config
include_tasks(config)
results = compare.read(config, paths.Layout(config))
table.write_csv(findings.table(findings.findings(config, results)), snakemake.output.findings)
table.write_csv(findings.dpo_validation_table(config, results), snakemake.output.dpo_validation)
