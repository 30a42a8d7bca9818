"""A finished study's results, read once, and two of its models compared item by item.

The pipeline checks (`effects`) and the report's findings (`findings`) both compare models on the
same items: Table 1's metrics on the same questions, pairs and windows. `paired` gives the difference
with the standard error of the difference from those items (a paired bootstrap for BLEU, per-item
differences for the rest); where a side's items are missing it falls back to the two standard errors
combined as if independent, and says so.

The study's roles (M0, M1 (D_S), M1 (D_L), M2, M0 DPO; a schedule's twin) are read from the config by
what each variant is (parent, trainer, mixture, schedule), never from its name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .. import files, paths
from ..evaluation.metrics import bleu, bleu_stderr, mean_stderr, rouge_items
from ..evaluation.results import read_metrics
from ..paths import VALIDATION_ITEMS
from ..study import DENSE, TASKS, trained, trainer_of
from .uncertainty import Measure

#: Per-item scores of a task's metric in its item rows (`{task}.jsonl`).
ITEM_SCORE = {"hellaswag": "acc_norm", "mcqa": "acc_norm"}


@dataclass
class Results:
    """Everything a finished study wrote that the checks and findings read."""

    metrics: pd.DataFrame
    histories: dict[tuple[str, str], pd.DataFrame] = field(default_factory=dict)
    items: dict[tuple[str, str, str, str], list[dict]] = field(default_factory=dict)
    summaries: dict[tuple[str, str], dict] = field(default_factory=dict)
    validation_items: dict[tuple[str, str], list[float]] = field(default_factory=dict)


@dataclass
class Comparison:
    """`a` against `b` on one metric: their values, a - b, its standard error, and on how many items."""

    a: float
    b: float
    se: float
    n: int
    paired: bool
    #: the ids of the items compared, and each item's difference a - b where the metric is a mean over items
    ids: frozenset | None = None
    items: dict | None = None

    @property
    def diff(self) -> float:
        return self.a - self.b

    def text(self, digits: int = 2) -> str:
        how = "paired" if self.paired else "unpaired"
        return (f"{self.a:.{digits}f} vs {self.b:.{digits}f}, difference {self.diff:+.{digits}f} "
                f"({how} stderr {self.se:.{digits}f}, n {self.n})")

    def measure(self) -> Measure:
        return Measure(self.diff, self.se, self.n, self.ids, self.items)


def read(config: dict, layout: paths.Layout) -> Results:
    """The study's metric rows, item rows, training histories, summaries and validation items: the files
    of them its tables read that it has written."""
    found = {key: Path(path) for key, path in layout.all_metrics().items() if Path(path).is_file()}
    results = Results(read_metrics(found))
    for model, variant, format, task in found:
        rows = Path(layout.task_metrics(model, variant, task, format, "jsonl"))
        if rows.is_file():
            results.items[(model, variant, format, task)] = files.read_rows(rows)
    for model, name in trained(config):
        where = {f: Path(layout.adapter(model, name, f)) for f in ("log_history.csv", "summary.json",
                                                                    VALIDATION_ITEMS)}
        if where["log_history.csv"].is_file():
            results.histories[(model, name)] = pd.read_csv(where["log_history.csv"])
        if where["summary.json"].is_file():
            results.summaries[(model, name)] = files.read_json(where["summary.json"])
        if where[VALIDATION_ITEMS].is_file():
            losses = pd.read_csv(where[VALIDATION_ITEMS])["eval_loss"].tolist()
            if losses:
                results.validation_items[(model, name)] = losses
    return results


def value(results: Results, model: str, variant: str, task: str, metric: str,
          format: str = DENSE) -> pd.Series | None:
    m = results.metrics
    rows = m[(m["model"] == model) & (m["variant"] == variant) & (m["task"] == task) & (m["metric"] == metric)
             & (m["format"] == format)]
    return rows.iloc[0] if len(rows) else None


def paired(results: Results, a: tuple[str, str], b: tuple[str, str], task: str, metric: str,
           scale: float = 1.0) -> Comparison | None:
    """Model `a` against model `b` (each (model, variant)) on `task`'s `metric`, in the tables' `scale`;
    None when either was not measured."""
    first, second = (value(results, *side, task, metric) for side in (a, b))
    if first is None or second is None:
        return None
    rows = [results.items.get((*side, "dense", task)) for side in (a, b)]
    if all(rows):
        by_id = {r["id"]: r for r in rows[1]}
        common = [(r, by_id[r["id"]]) for r in rows[0] if r["id"] in by_id]
        if len(common) >= 2:
            return _paired_items(task, metric, common, scale)
    se = math.hypot(first["stderr"], second["stderr"]) * scale
    return Comparison(first["value"] * scale, second["value"] * scale, se, int(min(first["n"], second["n"])), False)


def _paired_items(task: str, metric: str, common: list[tuple[dict, dict]], scale: float) -> Comparison:
    n = len(common)
    ids = [x["id"] for x, _ in common]
    if task == "gsm8k":
        refs = [x["reference"] for x, _ in common]
        mine, base = [x["prediction"] for x, _ in common], [y["prediction"] for _, y in common]
        if metric == "bleu":
            return Comparison(bleu(mine, refs), bleu(base, refs), bleu_stderr(mine, refs, baseline=base), n, True,
                              frozenset(ids))
        a, b = ([100 * item[metric] for item in rouge_items(side, refs)] for side in (mine, base))
    else:
        key = ITEM_SCORE.get(task, metric)
        score = TASKS[task].item_score or (lambda row: row[key])
        a, b = ([scale * score(r) for r in side] for side in zip(*common))
    diffs = [x - y for x, y in zip(a, b)]
    return Comparison(sum(a) / n, sum(b) / n, mean_stderr(diffs), n, True, frozenset(ids), dict(zip(ids, diffs)))


def dpo_validation(results: Results, model: str, variant: str) -> tuple[float, int, int] | None:
    """A DPO run's final validation reward accuracy as k of its n pairs. TRL logs the mean of per-batch means;
    k is that times n, rounded: exact when every evaluation batch is full (the configs' n is a multiple of
    `per_device_eval_batch_size`), within one pair otherwise."""
    history = results.histories.get((model, variant), pd.DataFrame())
    column = "eval_rewards/accuracies"
    accuracy = history.dropna(subset=[column])[column] if column in history else pd.Series(dtype=float)
    n = results.summaries.get((model, variant), {}).get("validation_records")
    if accuracy.empty or not n:
        return None
    p = float(accuracy.iloc[-1])
    return p, round(p * n), int(n)


def log_perplexity_change(quantized: list[dict], dense: list[dict]) -> tuple[float, float, int]:
    """log(perplexity of `quantized` / perplexity of `dense`) scored on the same windows (their item rows:
    window, nll, tokens), with its paired standard error (the ratio estimator's, window by window)."""
    by_window = {r["window"]: r for r in dense}
    pairs = [(q, by_window[q["window"]]) for q in quantized if q["window"] in by_window]
    k, tokens = len(pairs), sum(d["tokens"] for _, d in pairs)
    diffs = [q["nll"] - d["nll"] for q, d in pairs]
    change = sum(diffs) / tokens
    spread = sum((x - change * d["tokens"]) ** 2 for x, (_, d) in zip(diffs, pairs))
    se = math.sqrt(k / (k - 1) * spread) / tokens if k > 1 else float("nan")
    return change, se, k


# ---- the study's roles, from what each variant is --------------------------------------------------


def pretrained(config: dict) -> set[str]:
    """The models with real weights (a model built from scratch is random: not held to any effect)."""
    return {name for name, spec in config["models"].items() if spec["source"]["kind"] != "scratch"}


def _schedule(config: dict, variant: str) -> str | None:
    return config["hyperparameters"][config["variants"][variant]["hyperparameters"]].get("lr_scheduler_type")


def roles(config: dict) -> dict[str, str]:
    """The report's names of Table 1's variants → this config's variant: M0, M1 (D_S), M1 (D_L) (SFT from
    M0 on D_S / D_L, cosine: the report evaluates only cosine models), M2 (DPO from M1 (D_S)) and
    M0 DPO (DPO from M0). A role the config lacks is left out."""
    variants, hyper = config["variants"], config["hyperparameters"]
    found = {"M0": "M0"}
    for name, spec in variants.items():
        trainer = trainer_of(spec, hyper)
        if trainer == "sft" and spec["parent"] == "M0" and _schedule(config, name) == "cosine" \
                and spec["data"] in ("D_S", "D_L") and not spec.get("qlora"):
            found.setdefault(f"M1 ({spec['data']})", name)
    for name, spec in variants.items():
        if trainer_of(spec, hyper) == "dpo" and not spec.get("qlora"):
            if spec["parent"] == "M0":
                found.setdefault("M0 DPO", name)
            elif spec["parent"] == found.get("M1 (D_S)"):
                found.setdefault("M2", name)
    return found


def schedule_twins(config: dict) -> list[tuple[str, str, str]]:
    """(model, cosine variant, constant variant) of every SFT pair trained alike but for the schedule."""
    variants, out = config["variants"], []
    for name, spec in variants.items():
        if _schedule(config, name) != "cosine" or trainer_of(spec, config["hyperparameters"]) != "sft":
            continue
        for twin, other in variants.items():
            if _schedule(config, twin) == "constant" and all(other.get(k) == spec.get(k) for k in
                                                             ("parent", "data", "qlora", "seed")):
                out += [(m, name, twin) for m in spec["models"] if m in other["models"]]
    return out


def table_row(config: dict, model: str, variant: str) -> dict | None:
    return next((r for r in config["table1"] if r["model"] == model and r["variant"] == variant), None)
