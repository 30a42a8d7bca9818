"""Snakemake glue for zephyr.model.training.launch (call zephyr.model.training.train directly outside Snakemake)."""

from pathlib import Path

from zephyr import devices, logs
from zephyr.model import bnb, hyperparameters, training

logs.setup(snakemake.log[0])
spec = dict(
    name=f"{snakemake.wildcards.model}/{snakemake.wildcards.variant}",
    hyper=snakemake.params.hyperparameters,
    base_dir=str(Path(snakemake.input.base).parent),
    train_path=snakemake.input.train,
    validation_path=snakemake.input.validation,
    out_dir=str(Path(snakemake.output.adapter).parent),
    checkpoint_root=snakemake.params.checkpoints,
    seed=snakemake.params.seed,
    lora_targets=snakemake.params.lora_targets,
    qlora=snakemake.params.qlora,
    precision=snakemake.params.precision,
)
bnb.for_job(training.needs_bitsandbytes(spec))  # before transformers and TRL (which imports peft) are imported
# small runs share a GPU
booking = hyperparameters.gpu_booking_mb(spec["hyper"], spec["base_dir"], spec["precision"], spec["qlora"])
gpus = devices.for_job(snakemake.threads, snakemake.resources, booking)
training.launch(spec, processes=len(gpus), threads=snakemake.threads, log_file=snakemake.log[0])
