"""Zephyr: the logic of the ZEPHYR study workflow, importable without Snakemake.

Modules by stage: sources (raw datasets), formats (raw rows → unified records), records (the format
stage), generators (offline data in real schemas), mixtures (sampled mixtures and held-out sets),
config (validation), files (atomic I/O), environment (pinned conda envs), logs.
"""
