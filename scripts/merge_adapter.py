"""Snakemake glue for zephyr.model.merge.merge_adapter (call that function directly outside Snakemake)."""

from pathlib import Path

from zephyr import devices, logs
from zephyr.model import bnb, merge

logs.setup(snakemake.log[0])
bnb.for_job(bnb.needed(model_dirs=[Path(snakemake.input.base).parent]))  # before peft imports it
devices.for_job(snakemake.threads, snakemake.resources)
merge.merge_adapter(
    Path(snakemake.input.base).parent,
    Path(snakemake.input.adapter).parent,
    Path(snakemake.output.manifest).parent,
    card=snakemake.params.card,
    precision=snakemake.params.precision,
)
