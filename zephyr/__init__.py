"""Zephyr: the logic of the ZEPHYR study workflow, importable without Snakemake.

In pipeline order: `data` (sources → generators/formats → records → mixtures), `model` (base-model
sources, the model folder, prompts, training, merge, quantize, cards), `evaluation` (the scoring
engine, the task runners, the metric definitions) and `report` (tables, figures). `study` holds the
vocabulary they all share; `config`, `lock`, `files`, `logs`, `devices`, `resources` and `environment` are
the plumbing.
"""
