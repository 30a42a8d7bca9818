"""Which of the study's effects a finished run shows beyond its uncertainty (`make check-default`).

A reading of results, not a timed test: it says, effect by effect, what the run measured and whether
that clears the bar the default experiment is sized for, and exits non-zero when one does not.

- SFT lowers the validation loss (first against last evaluation of every SFT run);
- cosine and constant schedules end apart (their final validation losses differ);
- the M1 that DPO builds on (M2's parent) beats M0 on BLEU-4 and ROUGE-1/2/L by more than the
  difference's standard error (paired: both models answered the same questions);
- DPO lifts held-out reward accuracy above chance (0.5) by more than two standard errors (one
  standard error is crossed by chance about one time in six), and the
  validation reward accuracy rises above chance during training and ends no lower than its first
  evaluation after step 0 (Figure 4; at step 0 the policy is its reference and every pair a tie);
- every accuracy rests on enough items (n, and a standard error at most `MAX_STDERR`).

Models built from scratch (random weights: the default's BLOOM slot) are not held to these effects.

Usage: `python -m zephyr.report.effects [CONFIG]` after the run (reads its files under results/).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .. import files, paths
from ..evaluation.metrics import bleu, bleu_stderr, mean_stderr, rouge_items
from ..evaluation.results import read_metrics
from ..study import MCQA_TABLE, TABLE1, TASKS, shows_reward, trainer_of

#: The largest standard error a bounded task's accuracy may have (`Task.bounded`; issue: ~0.07 or less).
MAX_STDERR = 0.071
#: The metric the tables show first for each task: where its item count and standard error are read.
SHOWN = {task: metric for task, metric, _ in reversed([*TABLE1.values(), *MCQA_TABLE.values()])}
#: A validation-loss drop, relative, that counts as visible; a gap between schedules that counts as apart.
MIN_LOSS_DROP = 0.05
MIN_SCHEDULE_GAP = 0.005


@dataclass
class Check:
    effect: str
    measured: str
    holds: bool


def _metric(metrics: pd.DataFrame, model: str, variant: str, task: str, metric: str) -> pd.Series | None:
    rows = metrics[(metrics["model"] == model) & (metrics["variant"] == variant) & (metrics["task"] == task)
                   & (metrics["metric"] == metric)]
    return rows.iloc[0] if len(rows) else None


def _evals(history: pd.DataFrame, column: str) -> pd.Series:
    return history.dropna(subset=[column]).set_index("step")[column] if column in history else pd.Series(dtype=float)


def _overlap_gain(answers: list[dict], baseline: list[dict]) -> dict[str, tuple[float, float, float]]:
    """BLEU-4 and ROUGE of two models' answers to the same questions, with the standard error of their
    difference from the same resamples (a paired bootstrap for BLEU, per-question differences for ROUGE)."""
    theirs = {a["id"]: a["prediction"] for a in baseline}
    common = [a for a in answers if a["id"] in theirs]
    refs, mine, base = ([a["reference"] for a in common], [a["prediction"] for a in common],
                        [theirs[a["id"]] for a in common])
    out = {"bleu": (bleu(mine, refs), bleu(base, refs), bleu_stderr(mine, refs, baseline=base))}
    items = [rouge_items(p, refs) for p in (mine, base)]
    for key in ("rouge1", "rouge2", "rougeL"):
        a, b = ([100 * i[key] for i in side] for side in items)
        out[key] = (sum(a) / len(a), sum(b) / len(b), mean_stderr([x - y for x, y in zip(a, b)]))
    return out


def check(config: dict, metrics: pd.DataFrame, histories: dict[tuple[str, str], pd.DataFrame],
          answers: dict[tuple[str, str], list[dict]]) -> list[Check]:
    """Every effect the config's runs should show; `histories` maps (model, variant) to log_history,
    `answers` to the GSM8K answers (per question: id, reference, prediction)."""
    variants, hyper = config["variants"], config["hyperparameters"]
    pretrained = {name for name, spec in config["models"].items() if spec["source"]["kind"] != "scratch"}
    histories = {key: h for key, h in histories.items() if key[0] in pretrained}
    carried = {spec["parent"] for spec in variants.values()}  # the SFT variants the study builds on
    out = []
    for (model, variant), history in sorted(histories.items()):
        trainer = trainer_of(variants[variant], hyper)
        losses = _evals(history, "eval_loss")
        if trainer == "sft" and len(losses) >= 2:
            first, last = losses.iloc[0], losses.iloc[-1]
            out.append(Check(f"SFT lowers the validation loss: {model} {variant}",
                             f"{first:.3f} at step {losses.index[0]} -> {last:.3f} at step {losses.index[-1]}",
                             last < first * (1 - MIN_LOSS_DROP)))
        accuracy = _evals(history, "eval_rewards/accuracies")
        accuracy = accuracy[accuracy.index > 0]  # at step 0 the policy is its reference: every pair a tie
        if trainer == "dpo" and len(accuracy):
            out.append(Check(f"DPO validation reward accuracy rises above chance and stays: {model} {variant}",
                             " -> ".join(f"{a:.2f}" for a in accuracy),
                             accuracy.iloc[-1] > 0.5 and accuracy.iloc[-1] >= accuracy.iloc[0]))
    for name, spec in variants.items():
        schedule = hyper[spec["hyperparameters"]].get("lr_scheduler_type")
        twin = name.replace("cosine", "constant")
        if schedule != "cosine" or twin == name or twin not in variants:
            continue
        for model in (m for m in spec["models"] if m in pretrained):
            a, b = (_evals(histories.get((model, v), pd.DataFrame()), "eval_loss") for v in (name, twin))
            if len(a) and len(b):
                gap = abs(a.iloc[-1] - b.iloc[-1])
                out.append(Check(f"cosine and constant end apart: {model} {name} vs {twin}",
                                 f"final validation loss {a.iloc[-1]:.3f} vs {b.iloc[-1]:.3f}", gap > MIN_SCHEDULE_GAP))
    rows = config["table1"]
    for row in rows:
        if row["variant"] == "M0" or row["model"] not in pretrained:
            continue
        base = next((r for r in rows if r["model"] == row["model"] and r["variant"] == "M0"), None)
        pair = [answers.get((r["model"], r["variant"])) for r in (row, base)] if base else [None]
        if all(pair) and row["variant"] in carried and variants[row["variant"]]["parent"] == "M0" and \
                trainer_of(variants[row["variant"]], hyper) == "sft":
            for metric, (new, old, se) in _overlap_gain(*pair).items():
                out.append(Check(f"{row['label']} beats {base['label']} on {metric}",
                                 f"{new:.2f} vs {old:.2f}, difference {new - old:+.2f} (paired stderr {se:.2f})",
                                 new - old > se))
        if shows_reward(row) and trainer_of(variants[row["variant"]], hyper) == "dpo":
            got = _metric(metrics, row["model"], row["variant"], "reward", "reward_accuracy")
            if got is not None:
                out.append(Check(f"DPO lifts reward accuracy above chance: {row['label']}",
                                 f"{got['value']:.3f} (stderr {got['stderr']:.3f}, n {got['n']:.0f})",
                                 got["value"] - 0.5 > 2 * got["stderr"]))
    for spec in TASKS.values():
        if not spec.min_items:
            continue
        found = metrics[(metrics["task"] == spec.name) & (metrics["metric"] == SHOWN[spec.name])]
        if found.empty:
            continue
        n, worst = int(found["n"].min()), found["stderr"].max()
        out.append(Check(f"{spec.name} rests on enough items", f"n {n} (at least {spec.min_items})"
                         + (f", largest stderr {worst:.3f} (at most {MAX_STDERR})" if spec.bounded else ""),
                         n >= spec.min_items and (not spec.bounded or worst <= MAX_STDERR)))
    return out


def read(config: dict, workdir: str | Path = ".") -> tuple[pd.DataFrame, dict, dict]:
    """The run's metric rows, the log history of every trained (model, variant) and its GSM8K answers:
    the files of them the config's tables read that the run (in `workdir`) has written."""
    workdir = Path(workdir)
    found = {**paths.table1_metrics(config["table1"]), **paths.qlora_metrics(config),
             **paths.quantization_metrics(config)}
    found = {key: workdir / path for key, path in found.items() if (workdir / path).is_file()}
    histories = {}
    for name, spec in config["variants"].items():
        for model in spec["models"]:
            path = workdir / paths.adapter(model, name, "log_history.csv")
            if path.is_file():
                histories[(model, name)] = pd.read_csv(path)
    answers = {(model, variant): files.read_rows(workdir / paths.task_metrics(model, variant, task, form, "jsonl"))
               for model, variant, form, task in found if task == "gsm8k"}
    return read_metrics(found), histories, answers


def main(argv: list[str] | None = None) -> int:
    from ..config import load

    argv = sys.argv[1:] if argv is None else argv
    config = load(argv[0] if argv else "config.yaml")
    checks = check(config, *read(config))
    if not checks:
        print("no results to check: run the workflow first (make run)")
        return 1
    width = max(len(c.effect) for c in checks)
    for c in checks:
        print(f"{'holds ' if c.holds else 'FAILS '} {c.effect:<{width}}  {c.measured}")
    failed = sum(not c.holds for c in checks)
    print(f"{len(checks) - failed} of {len(checks)} effects hold")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
