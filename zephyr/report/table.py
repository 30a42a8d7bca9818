"""The study's tables from the tidy metric rows (`zephyr.evaluation.results`): Table 1 (and its
standard errors), MCQA, QLoRA, quantization. The tables only select and scale.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from .. import files
from ..evaluation.results import read_metrics
from ..study import (
    AS_TRAINED,
    DENSE,
    MCQA,
    PAPER_TABLE1,
    QLORA,
    QUANTIZATION,
    TABLE1,
    is_papers_model,
    row_shows,
    slot_model,
    table_columns,
)

MISSING = "–"  # what the paper prints where a metric does not apply (M0 has no reward accuracy)


def table1(rows: list[dict], metrics: pd.DataFrame, decimals: int = 2, *, stderr: bool = False) -> pd.DataFrame:
    """The paper's Table 1 (or, with `stderr`, the standard error of each of its cells): one line per
    configured row (label, model, variant), MISSING where not measured, and a task shown only in marked
    rows (reward accuracy) only in the rows that ask for it (`reward: true`)."""
    return _layout(rows, metrics, table_columns(TABLE1), decimals, stderr)


VERSUS_COLUMNS = ["Model", "metric", "paper", "reproduction", "difference", "stderr", "ran", "report's model"]


def versus_paper(reproduced: pd.DataFrame, stderr: pd.DataFrame, rows: list[dict], models: dict) -> pd.DataFrame:
    """Each Table 1 cell beside the paper's published value (`study.PAPER_TABLE1`, by the report's row the
    config's row stands for: its `paper`, else its label, and by column), with
    the difference, the reproduction's standard error, the model that ran in the row's slot and whether
    it is the report's (`models`: the config's); rows and cells the paper does not have are left out."""
    out = []
    for spec, (_, row), (_, errors) in zip(rows, reproduced.iterrows(), stderr.iterrows(), strict=True):
        published = PAPER_TABLE1.get(spec.get("paper") or row["Model"], {})
        source = models[spec["model"]]["source"]
        for column in table_columns(TABLE1):
            paper = published.get(column)
            if paper is None or row[column] == MISSING:
                continue
            value = float(row[column])
            out.append({"Model": row["Model"], "metric": column, "paper": paper, "reproduction": value,
                        "difference": round(value - paper, 2),
                        "stderr": float(errors[column]) if errors[column] != MISSING else None,
                        "ran": slot_model(source), "report's model": is_papers_model(spec["model"], source)})
    return pd.DataFrame(out, columns=VERSUS_COLUMNS)


def mcqa(rows: list[dict], metrics: pd.DataFrame, decimals: int = 2) -> pd.DataFrame:
    """MCQA accuracy (%) of Table 1's rows, with its standard error."""
    shown = table_columns(MCQA)
    return _with_stderr(_layout(rows, metrics, shown, decimals, False), _layout(rows, metrics, shown, decimals, True),
                        shown)


def qlora(rows: list[dict], metrics: pd.DataFrame, formats: Iterable[str] = (), decimals: int = 2) -> pd.DataFrame:
    """The QLoRA variants as Table 1 shows its rows, with MCQA and perplexity, each beside its standard
    error (`±`), in two formats each: as trained (the 4-bit base with its adapter, unmerged: the model QLoRA
    trained) and merged into the dense base; and for the merge, the perplexity of each quantized format in
    `formats` (the merge quantized again) beside its own."""
    table = table_columns(QLORA)
    cells = {**{column: (spec, None) for column, spec in table.items()},
             **{f"Perplexity ({format})": (table["Perplexity"], format) for format in formats}}
    frames = []
    for format, what in ((AS_TRAINED, "as trained: 4-bit base + adapter"), (DENSE, "merged, dense")):
        shown = [{**r, "label": f"{r['label']} ({what})"} for r in rows]
        values, errors = [pd.DataFrame({"Model": [r["label"] for r in shown]}) for _ in range(2)]
        for column, (spec, export) in cells.items():
            if export is not None and format == AS_TRAINED:  # the exports quantize the merge, not this model
                values[column] = errors[column] = MISSING
                continue
            values[column] = _layout(shown, metrics, {column: spec}, decimals, False, export or format)[column]
            errors[column] = _layout(shown, metrics, {column: spec}, decimals, True, export or format)[column]
        frames.append(_with_stderr(values, errors, cells))
    return pd.concat(frames, ignore_index=True)


def _with_stderr(values: pd.DataFrame, errors: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """Each column followed by its standard error (`column ±`)."""
    out = values[["Model"]].copy()
    for column in columns:
        out[column], out[f"{column} ±"] = values[column], errors[column]
    return out


def _layout(rows: list[dict], metrics: pd.DataFrame, columns: dict, decimals: int, stderr: bool,
            format: str = DENSE) -> pd.DataFrame:
    index = metrics.set_index(["model", "variant", "format", "task", "metric"])["stderr" if stderr else "value"]
    out = []
    for row in rows:
        line = {"Model": row["label"]}
        for column, (task, metric, scale) in columns.items():
            key = (row["model"], row["variant"], format, task, metric)
            shown = key in index and pd.notna(index[key]) and row_shows(row, task)
            line[column] = round(float(index[key]) * scale, decimals) if shown else MISSING
        out.append(line)
    return pd.DataFrame(out, columns=["Model", *columns])


def quantization(perplexities: pd.DataFrame, sizes: dict[tuple[str, str, str], int]) -> pd.DataFrame:
    """Variant, format, size on disk, perplexity (with its standard error) and its change
    against the unquantized model (in %).

    `perplexities` are metric rows; `sizes` maps (model, variant, format) to bytes of weights.
    """
    rows = []
    for (model, variant, format), size in sizes.items():
        match = ((perplexities["model"] == model) & (perplexities["variant"] == variant)
                 & (perplexities["format"] == format))
        ppl = perplexities.loc[match & (perplexities["metric"] == QUANTIZATION[1])].iloc[0]
        rows.append({"model": model, "variant": variant, "format": format,
                     "size_mb": round(size / 2**20, 2), "perplexity": float(ppl["value"]),
                     "perplexity_stderr": round(float(ppl["stderr"]), 3)})
    frame = pd.DataFrame(rows)
    dense = frame[frame["format"] == DENSE].set_index(["model", "variant"])["perplexity"]
    frame["change_pct"] = [  # + 0.0 turns a rounded -0.0 into 0.0
        round(100 * (r.perplexity / dense[(r.model, r.variant)] - 1), 2) + 0.0 for r in frame.itertuples()
    ]
    frame["perplexity"] = frame["perplexity"].round(3)
    return frame


def quantization_from_files(metric_files: dict[tuple[str, str, str, str], str | Path],
                            model_dirs: dict[tuple[str, str, str], str | Path]) -> pd.DataFrame:
    """`quantization` from the workflow's files: the metric files (`zephyr.paths.quantization_metrics`)
    and the folder of each (model, variant, format), for its size on disk."""
    sizes = {key: files.weights_size(folder) for key, folder in model_dirs.items()}
    return quantization(read_metrics(metric_files), sizes)


def write_csv(frame: pd.DataFrame, path: str | Path) -> None:
    with files.atomic(path) as handle:
        frame.to_csv(handle, index=False, lineterminator="\n")
