"""Snakemake glue for zephyr.training.train (call that function directly outside Snakemake)."""

from pathlib import Path

from zephyr import devices, logs, training

logs.setup(snakemake.log[0])
devices.set_threads(snakemake.threads)
training.train(
    f"{snakemake.wildcards.model}/{snakemake.wildcards.variant}",
    snakemake.params.hyperparameters,
    Path(snakemake.input.base).parent,
    snakemake.input.train,
    snakemake.input.validation,
    Path(snakemake.output.adapter).parent,
    snakemake.params.checkpoints,
    seed=snakemake.params.seed,
    lora_targets=snakemake.params.lora_targets,
    qlora=snakemake.params.qlora,
)
