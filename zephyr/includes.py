"""The evaluation-task modules a config includes (`evaluation.include`, lm-evaluation-harness' include_path):
imported by every process that reads the task registry. A base module, so that the jobs' scripts import it
without the config checks' dependencies."""

from __future__ import annotations

import importlib

from .keys import KeyedError


def include_tasks(config: dict) -> None:
    """Import the task modules the config's `evaluation.include` names: each registers its tasks
    (`zephyr.evaluation.tasks.register`). `zephyr.config.validate` calls this, and so does each job's script."""
    for name in config.get("evaluation", {}).get("include", []):
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise KeyedError(f"cannot import {name!r} ({err}); is its folder on PYTHONPATH?", ("include",)) from None
