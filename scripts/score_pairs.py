"""Snakemake glue for zephyr.evaluation.tasks.score_pairs_file (call that function directly outside Snakemake)."""

from pathlib import Path

from zephyr import devices, logs
from zephyr.evaluation import tasks
from zephyr.model import bnb

logs.setup(snakemake.log[0])
model_dir = Path(snakemake.input.model).parent
bnb.for_job(bnb.needed(model_dirs=[model_dir]))  # before transformers is imported
devices.for_job(snakemake.threads, snakemake.resources, devices.inference_memory_mb(model_dir))
tasks.score_pairs_file(model_dir, snakemake.input.data, snakemake.output[0], snakemake.params.settings)
