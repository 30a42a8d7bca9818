"""The metric files' schema: each evaluation writes one tidy CSV, the tables and the effects read them
(so the report depends on the evaluation's files, not the evaluation on the report).

A file has a row per metric (model, variant, format, task, metric, value, stderr, n) and what it was
computed in (dtype, compute, device): the variant is its bare name (`M0`), the format (`study.FORMATS`:
`dense`, `nf4`, `as-trained`...) a column of its own.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .. import files

METRIC_FIELDS = ["model", "variant", "format", "task", "metric", "value", "stderr", "n", "dtype", "compute",
                 "device"]
#: The columns that say which evaluation a row is of: a metric file's key (`zephyr.paths.MetricKey`).
KEY_FIELDS = ["model", "variant", "format", "task"]


class MetricsError(ValueError):
    """A metric file that is not the evaluation it is read as."""


def write_metrics(path: str | Path, model: str, variant: str, format: str, task: str, summary: dict,
                  computed_in: dict) -> pd.DataFrame:
    """One tidy CSV per evaluation: a row per numeric metric of `summary`, with its standard error where
    `summary["stderr"]` has one (empty otherwise); its `n` and `computed_in` (dtype, compute, device:
    `precision.record`) go in every row."""
    n, stderr = summary.get("n"), summary.get("stderr", {})
    rows = [
        {"model": model, "variant": variant, "format": format, "task": task, "metric": key, "value": float(value),
         "stderr": stderr.get(key), "n": n, **computed_in}
        for key, value in summary.items()
        if key != "n" and isinstance(value, (int, float)) and not isinstance(value, bool)
    ]
    frame = pd.DataFrame(rows, columns=METRIC_FIELDS)
    with files.atomic(path) as handle:
        frame.to_csv(handle, index=False, lineterminator="\n")
    return frame


def read_metrics(paths: dict[tuple[str, str, str, str], str | Path]) -> pd.DataFrame:
    """The rows of metric files keyed by (model, variant, format, task) (`zephyr.paths`); a file whose rows
    are of another key (or lack one of its columns: written before the format had a column) is refused."""
    frames = []
    for key, path in paths.items():
        frame = pd.read_csv(path, dtype={field: str for field in KEY_FIELDS})
        missing = [field for field in KEY_FIELDS if field not in frame]
        found = set(frame[KEY_FIELDS].itertuples(index=False, name=None)) if not missing else set()
        if missing or found - {key}:
            raise MetricsError(f"{path}: " + (f"no {', '.join(missing)} column" if missing else
                                              f"rows of {sorted(found - {key})}, not of {key}")
                               + f"; rerun its evaluation ({files.rebuild_command(path)})")
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=METRIC_FIELDS)
