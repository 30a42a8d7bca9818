"""The metric files' schema: each evaluation writes one tidy CSV, the tables and the effects read them
(so the report depends on the evaluation's files, not the evaluation on the report).

A file has a row per metric (model, variant, task, metric, value, stderr, n) and what it was computed in
(dtype, compute, device); its variant names the form too (`study.form_name`: `M0-nf4`). Read back, the
rows carry the form in a column of its own.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .. import files
from ..study import form_name

METRIC_FIELDS = ["model", "variant", "task", "metric", "value", "stderr", "n", "dtype", "compute", "device"]


def write_metrics(path: str | Path, model: str, variant: str, form: str, task: str, summary: dict,
                  computed_in: dict) -> pd.DataFrame:
    """One tidy CSV per evaluation: a row per numeric metric of `summary`, with its standard error where
    `summary["stderr"]` has one (empty otherwise); its `n` and `computed_in` (dtype, compute, device:
    `precision.record`) go in every row."""
    n, stderr = summary.get("n"), summary.get("stderr", {})
    rows = [
        {"model": model, "variant": form_name(variant, form), "task": task, "metric": key, "value": float(value),
         "stderr": stderr.get(key), "n": n, **computed_in}
        for key, value in summary.items()
        if key != "n" and isinstance(value, (int, float)) and not isinstance(value, bool)
    ]
    frame = pd.DataFrame(rows, columns=METRIC_FIELDS)
    with files.atomic(path) as handle:
        frame.to_csv(handle, index=False, lineterminator="\n")
    return frame


def read_metrics(paths: dict[tuple[str, str, str, str], str | Path]) -> pd.DataFrame:
    """The rows of metric files keyed by (model, variant, form, task) (`zephyr.paths`), each with its
    key's model, variant and form."""
    frames = [pd.read_csv(path).assign(model=model, variant=variant, form=form)
              for (model, variant, form, _), path in paths.items()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*METRIC_FIELDS, "form"])
