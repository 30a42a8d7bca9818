"""Snakemake glue for zephyr.report.table.qlora: the files of the config's QLoRA rows (the rule's inputs)."""

from zephyr import logs, paths
from zephyr.evaluation.results import read_metrics
from zephyr.includes import include_tasks
from zephyr.report import table

logs.setup(snakemake.log[0])
include_tasks(snakemake.config)
metrics = read_metrics(paths.Layout(snakemake.config).qlora_metrics())
table.write_csv(table.qlora(snakemake.params.rows, metrics, snakemake.params.formats), snakemake.output[0])
