"""Snakemake glue for zephyr.report.table.quantization_from_files and zephyr.report.figures.quantization:
the files of the formats the config exports (the rule's inputs, models in `study.exported_formats`' order)."""

from pathlib import Path

from zephyr import logs, paths, study
from zephyr.report import figures, table

logs.setup(snakemake.log[0])
frame = table.quantization_from_files(
    paths.Layout(snakemake.config).quantization_metrics(),
    {key: str(Path(manifest).parent)
     for key, manifest in zip(study.exported_formats(snakemake.config), snakemake.input.models, strict=True)},
)
table.write_csv(frame, snakemake.output.table)
figures.quantization(frame, snakemake.output.figure)
