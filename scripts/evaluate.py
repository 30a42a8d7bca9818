"""Snakemake glue for zephyr.evaluation.tasks.evaluate_files, or reward_files for a task computed from pair
scores (call those functions directly outside Snakemake)."""

from pathlib import Path

from zephyr import devices, logs, study
from zephyr.evaluation import tasks
from zephyr.includes import include_tasks
from zephyr.model import bnb

logs.setup(snakemake.log[0])
include_tasks(snakemake.config)
task = snakemake.wildcards.task
if study.TASKS[task].from_pair_scores:  # no model to load: the policy's and its reference's pair scores
    tasks.reward_files(snakemake.input.policy_scores, snakemake.input.reference_scores, snakemake.input.data,
                       snakemake.output.metrics, snakemake.output.records, model=snakemake.wildcards.model,
                       variant=snakemake.wildcards.variant, settings=snakemake.params.settings)
else:
    parent = snakemake.input.get("parent")
    models = [Path(m).parent for m in (snakemake.input.model, parent) if m]
    bnb.for_job(bnb.needed(formats=[snakemake.params.get("qlora")], model_dirs=models))  # before peft, transformers
    devices.for_job(snakemake.threads, snakemake.resources, sum(devices.inference_memory_mb(m) for m in models))
    tasks.evaluate_files(
        task,
        Path(snakemake.input.model).parent,
        snakemake.input.data,
        snakemake.output.metrics,
        snakemake.output.records,
        model=snakemake.wildcards.model,
        variant=snakemake.wildcards.variant,
        settings=snakemake.params.settings,
        format=snakemake.wildcards.get("format", study.AS_TRAINED if "adapter" in snakemake.input.keys()
                                       else study.DENSE),
        parent_dir=Path(parent).parent if parent else None,
        # a QLoRA variant as trained: its base (`model`) quantized as it was for training, the adapter on top
        adapter_dir=Path(snakemake.input.adapter).parent if "adapter" in snakemake.input.keys() else None,
        qlora=snakemake.params.get("qlora"),
    )
