"""The pipeline checks of a finished study, and the report's findings beside them (`make check-default`).

Pipeline checks hold whenever every stage works, whatever the study finds, and set the exit code:

- each SFT run lowers its validation loss (first against last evaluation, by `MIN_LOSS_DROP`);
- each DPO run's validation reward accuracy ends above chance (0.5) by more than two standard errors,
  on at least `MIN_VALIDATION_PAIRS` validation pairs (n stated: on 8 pairs even 0.75 is not two
  standard errors above chance);
- M1 (D_S) beats M0 on ROUGE-L by more than two paired standard errors: the SFT → generation path works
  (the model learned the answers' style); the report's per-metric claims are findings, not checks;
- a 4-bit format (NF4) raises perplexity by more than the paired standard error of the change (both
  formats score the same windows), and an 8-bit one (int8) stays within `INT8_BOUND` of dense (see there);
- every accuracy rests on enough items (n, and a standard error at most `MAX_STDERR`).

Models built from scratch (random weights: the default's BLOOM slot) are not held to these.
The checks run on every draw of the study (`draws`); the report's claims over all draws (`claims`) are
printed after them and never change the exit code.

Usage: `python -m zephyr.report.effects [CONFIG]` after the run (reads that study's tree, once its
`study.json` proves the tree is this config's).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import pandas as pd

from .. import studies
from ..study import DENSE, FORMATS, TASKS, trainer_of
from . import claims, compare, findings

#: The largest standard error a bounded task's accuracy may have (`Task.bounded`): a 50-item accuracy's
#: at worst (p = 0.5; lm-eval's sqrt(p (1 - p) / (n - 1)) = 0.0714), so that 50 items always clear it.
MAX_STDERR = 0.0715
#: A validation-loss drop, relative, that counts as visible.
MIN_LOSS_DROP = 0.05
#: The validation pairs a DPO run needs for its accuracy check to be winnable by a model that learned:
#: at 30 pairs, 0.75 is 0.5 + 3.2 standard errors (0.079); at 8 it is 1.6 (0.153).
MIN_VALIDATION_PAIRS = 30
#: How far int8 perplexity may land from dense, relative, either side. LLM.int8() keeps outlier columns in
#: 16 bits and quantizes the rest per row (Dettmers et al., 2022: no perplexity loss at any size they
#: measured); measured here, +2.8 % and -0.7 % on the default's two draws. A broken int8 path (wrong scales,
#: lost outliers, a layer left random) moves perplexity by tens of percent or more, far beyond 5 %.
INT8_BOUND = 0.05


@dataclass
class Check:
    effect: str
    measured: str
    holds: bool


def _evals(history: pd.DataFrame, column: str) -> pd.Series:
    return history.dropna(subset=[column]).set_index("step")[column] if column in history else pd.Series(dtype=float)


def check(config: dict, results: compare.Results) -> list[Check]:
    """Every pipeline check the study's finished files allow."""
    variants, hyper = config["variants"], config["hyperparameters"]
    real = compare.pretrained(config)
    out = []
    for (model, variant), history in sorted(results.histories.items()):
        if model not in real:
            continue
        trainer = trainer_of(variants[variant], hyper)
        losses = _evals(history, "eval_loss")
        if trainer == "sft" and len(losses) >= 2:
            first, last = losses.iloc[0], losses.iloc[-1]
            out.append(Check(f"SFT lowers the validation loss: {model} {variant}",
                             f"{first:.3f} at step {losses.index[0]} -> {last:.3f} at step {losses.index[-1]}",
                             last < first * (1 - MIN_LOSS_DROP)))
        if trainer == "dpo":
            got = compare.dpo_validation(results, model, variant)
            if got is not None:
                accuracy, _, n = got
                se = math.sqrt(accuracy * (1 - accuracy) / n)
                out.append(Check(f"DPO validation reward accuracy above chance: {model} {variant}",
                                 f"{accuracy:.3f} (stderr {se:.3f}, n {n}; at least {MIN_VALIDATION_PAIRS} pairs)",
                                 n >= MIN_VALIDATION_PAIRS and accuracy - 0.5 > 2 * se))
    role = compare.roles(config)
    for model in sorted(real):
        if "M1 (D_S)" in role and compare.table_row(config, model, role["M1 (D_S)"]):
            got = compare.paired(results, (model, role["M1 (D_S)"]), (model, "M0"), "gsm8k", "rougeL")
            if got is not None:
                out.append(Check(f"M1 (D_S) beats M0 on ROUGE-L by two paired stderr: {model}", got.text(),
                                 got.diff > 2 * got.se))
    out += _quantization(config, results, real)
    for spec in TASKS.values():
        if not spec.min_items:
            continue
        metric = spec.shown[0]
        found = results.metrics[(results.metrics["task"] == spec.name) & (results.metrics["metric"] == metric)]
        if found.empty:
            continue
        n, worst = int(found["n"].min()), found["stderr"].max()
        out.append(Check(f"{spec.name} rests on enough items", f"n {n} (at least {spec.min_items})"
                         + (f", largest stderr {worst:.3f} (at most {MAX_STDERR})" if spec.bounded else ""),
                         n >= spec.min_items and (not spec.bounded or worst <= MAX_STDERR)))
    return out


def _quantization(config: dict, results: compare.Results, real: set[str]) -> list[Check]:
    """The quantized copies' perplexity against their dense weights, by the copy's bits (a QLoRA variant as
    trained is another model than a copy of its merge: no check)."""
    out = []
    for model, variant, format in sorted({(m, v, f) for m, v, f, t in results.items if t == "perplexity"}):
        dense = results.items.get((model, variant, DENSE, "perplexity"))
        bits = FORMATS[format].bits
        if not bits or model not in real or not dense:
            continue
        change, se, k = compare.log_perplexity_change(results.items[(model, variant, format, "perplexity")], dense)
        measured = f"perplexity {math.exp(change) - 1:+.2%} against dense (paired stderr {se:.2%}, {k} windows)"
        if bits == 4:
            out.append(Check(f"{format} raises perplexity beyond its paired stderr: {model} {variant}", measured,
                             change > se))
        elif bits == 8:
            out.append(Check(f"{format} stays within {INT8_BOUND:.0%} of dense perplexity: {model} {variant}",
                             measured, abs(math.exp(change) - 1) <= INT8_BOUND))
    return out


def render(checks: list[Check]) -> str:
    width = max(len(c.effect) for c in checks)
    lines = [f"{'holds ' if c.holds else 'FAILS '} {c.effect:<{width}}  {c.measured}" for c in checks]
    failed = sum(not c.holds for c in checks)
    return "\n".join([*lines, f"{len(checks) - failed} of {len(checks)} pipeline checks hold"])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    config, layout = studies.load(argv[0] if argv else "config.yaml")
    draws = [(config, layout), *(studies.load(f) for f in studies.other_draws(config))]
    try:
        for draw_config, draw_layout in draws:
            studies.check_current(draw_config, draw_layout)
    except studies.StudyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    failed, rows = False, []
    for number, (draw_config, draw_layout) in enumerate(draws, 1):
        results = compare.read(draw_config, draw_layout)
        checks = check(draw_config, results)
        if not checks:
            print("no results to check: run the workflow first (make run)")
            return 1
        print(f"Pipeline checks of study {draw_config['experiment']} ({draw_layout.results}/), draw {number} of "
              f"{len(draws)}: they set the exit code (a check that fails on any draw fails)\n")
        print(render(checks) + "\n")
        failed |= any(not c.holds for c in checks)
        rows.append(findings.findings(draw_config, results))
    print(f"The report's claims over {len(draws)} draw(s) ({layout.table('claims')} and "
          f"{layout.table('claim_rows')}; not part of the exit code):\n")
    print(claims.render(claims.tables(rows)[1]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
