"""Snakemake glue for zephyr.table.quantization and zephyr.figures.quantization."""

from pathlib import Path

from zephyr import export, figures, logs, table

logs.setup(snakemake.log[0])
perplexities = table.read_metrics(snakemake.input.perplexity)
sizes = {}
for csv, manifest in zip(snakemake.input.perplexity, snakemake.input.models):
    model, variant, name = Path(csv).parts[-3:]
    sizes[(model, variant, name.removeprefix("perplexity-").removesuffix(".csv"))] = export.weights_size(
        Path(manifest).parent
    )
frame = table.quantization(perplexities, sizes)
table.write_csv(frame, snakemake.output.table)
figures.quantization(frame, snakemake.output.figure)
