"""Evaluation: a batched scoring engine, one runner per task of `zephyr.study.TASKS`, and the
metric definitions matched to their reference implementations."""
