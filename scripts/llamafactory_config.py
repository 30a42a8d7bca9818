"""Snakemake glue for zephyr.model.llamafactory.write_run_config."""

from zephyr import logs
from zephyr.model import bnb, llamafactory

logs.setup(snakemake.log[0])
bnb.for_job(False)  # writes a YAML: TRL's configs import peft, and peft bitsandbytes, which it never uses
llamafactory.write_run_config(
    snakemake.output[0],
    f"{snakemake.wildcards.model}/{snakemake.wildcards.variant}",
    snakemake.params.variant,
    snakemake.params.hyperparameters,
    base_manifest=snakemake.input.base,
    dataset_info=snakemake.input.dataset_info,
    parent_config=snakemake.input.get("parent"),
    lora_targets=snakemake.params.lora_targets,
    bf16=snakemake.params.bf16,
)
