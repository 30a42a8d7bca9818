"""The report's findings beside what a study measured: claim by claim, with a verdict.

Each row quotes the report (`zephyr-report.txt`) with its place, gives what this study measured and the
standard error of that measurement, and a verdict (`verdict`):

- a claim that one side is above the other: *reproduced* when the difference is more than two standard
  errors in the claimed direction, *contradicted* when it is more than two standard errors the other way,
  *not resolved* in between;
- a claim of a value or of no change: *reproduced* when the measurement is within two standard errors of
  it, *contradicted* when it is further.

A finding is an output, not a pass/fail: a contradicted claim is reported as contradicted, and the
pipeline checks (`effects`) are what set an exit code. The DPO validation accuracies also go to their
own table (`dpo_validation`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import pandas as pd

from ..evaluation.metrics import mean_stderr
from ..study import PAPER_DPO_VALIDATION, PAPER_TABLE1, TABLE1, TASKS, table_columns
from . import compare

REPRODUCED, CONTRADICTED, UNRESOLVED = "reproduced", "contradicted", "not resolved"
#: Table 1's columns the report prints (column → task, metric, scale): what its claims speak of.
PAPER_COLUMNS = {column: spec for column, spec in table_columns(TABLE1).items()
                 if any(column in row for row in PAPER_TABLE1.values())}
#: Those of them every row shows (the claims compare rows on them), and the GSM8K overlap columns.
METRICS = {column: spec for column, spec in PAPER_COLUMNS.items() if not TASKS[spec[0]].only_marked_rows}
OVERLAP = [column for column, (task, _, _) in METRICS.items() if task == "gsm8k"]
#: (claim in the report's words, its place)
COSINE = ("the cosine learning rate scheduler consistently leads to a lower final validation loss compared to "
          "the constant learning rate", "§4 SFT; Figures 2-3")
QWEN_OVER_BLOOM = ("BLOOM is consistently outperformed by Qwen", "§4 SFT; Table 1")
DS_OVER_DL = ("The performance of the latter on the D_S dataset is slightly better than that obtained with D_L",
              "§4 SFT; Table 1")
SFT_GAIN = ("Qwen M1 (D_S) above Qwen M0 on BLEU-4 and ROUGE (34.50 vs 28.43 BLEU-4, 30.21 vs 25.17 ROUGE-L)",
            "Table 1 (its numbers; §3: the metrics \"compare the improvements made by fine-tuning\")")
DPO_VALIDATION = ("The validation accuracies obtained for the M0 and M1 models are 0.80 and 0.79, respectively",
                  "§4 DPO; Figure 4")
DPO_BELOW_SFT = ("Surprisingly, models specifically trained on the DPO dataset perform worse than those trained "
                 "using only SFT", "§4 DPO; Table 1")
HELLASWAG_FLAT = ("HellaSwag changes little across the stages (Qwen 42.15 to 45.40, M0 44.98)",
                  "Table 1 (a reading of its HellaSwag column; the text makes no such statement)")
BEST = ("So far, the Qwen M1 model trained on D_S is our best performing one", "§4 DPO; Table 1")
#: The model slots the report names: Qwen's and BLOOM's keys in the configs.
QWEN, BLOOM = "qwen", "bloom"


@dataclass
class Finding:
    claim: str
    place: str
    compared: str
    measured: str
    difference: float
    stderr: float
    n: int
    verdict: str


def verdict(difference: float, stderr: float, kind: str = "above") -> str:
    """`kind` "above": the claim is that `difference` > 0; "equal": that it is 0."""
    if not math.isfinite(stderr) or not math.isfinite(difference):
        return UNRESOLVED
    if kind == "equal":
        return REPRODUCED if abs(difference) <= 2 * stderr else CONTRADICTED
    return REPRODUCED if difference > 2 * stderr else CONTRADICTED if difference < -2 * stderr else UNRESOLVED


def _row(claim: tuple[str, str], compared: str, got: compare.Comparison, kind: str = "above") -> Finding:
    return Finding(claim[0], claim[1], compared, got.text(), round(got.diff, 6), round(got.se, 6), got.n,
                   verdict(got.diff, got.se, kind))


def findings(config: dict, results: compare.Results) -> list[Finding]:
    """Every claim of the report this study's files can speak to."""
    role = compare.roles(config)
    qwen, bloom = (_label(config, m) for m in (QWEN, BLOOM))
    out = _schedules(config, results)
    stages = [r for r in ("M0", "M1 (D_L)", "M1 (D_S)") if r in role]
    for stage in stages:
        for column, (task, metric, scale) in METRICS.items():
            got = compare.paired(results, (QWEN, role[stage]), (BLOOM, role[stage]), task, metric, scale)
            if got:
                out.append(_row(QWEN_OVER_BLOOM, f"{column}: {qwen} {stage} - {bloom} {stage}", got))
    pairs = [(DS_OVER_DL, "M1 (D_S)", "M1 (D_L)", list(METRICS)), (SFT_GAIN, "M1 (D_S)", "M0", OVERLAP)]
    pairs += [(DPO_BELOW_SFT, "M1 (D_S)", dpo, [*OVERLAP, "Reward Accuracy"]) for dpo in ("M2", "M0 DPO")]
    for claim, a, b, columns in pairs:
        if a in role and b in role:
            for column in columns:
                task, metric, scale = PAPER_COLUMNS[column]
                got = compare.paired(results, (QWEN, role[a]), (QWEN, role[b]), task, metric, scale)
                if got:
                    out.append(_row(claim, f"{column}: {qwen} {a} - {qwen} {b}", got))
    out += dpo_validation_findings(config, results)
    task, metric, scale = PAPER_COLUMNS["HellaSwag"]
    for stage in (r for r in role if r != "M0"):
        got = compare.paired(results, (QWEN, role[stage]), (QWEN, "M0"), task, metric, scale)
        if got:
            out.append(_row(HELLASWAG_FLAT, f"HellaSwag: {qwen} {stage} - {qwen} M0", got, kind="equal"))
    out += _best(role, results, qwen)
    return out


def _label(config: dict, model: str) -> str:
    """What ran in a report's slot, by the config's label (the default's Qwen slot is SmolLM2-135M)."""
    return config["models"].get(model, {}).get("label", model)


def _schedules(config: dict, results: compare.Results) -> list[Finding]:
    out = []
    for model, cosine, constant in compare.schedule_twins(config):
        if model not in compare.pretrained(config):
            continue
        a, b = (results.validation_items.get((model, v)) for v in (constant, cosine))
        losses = [results.histories.get((model, v)) for v in (constant, cosine)]
        if a is None or b is None or any(h is None or "eval_loss" not in h for h in losses):
            continue
        final = [h.dropna(subset=["eval_loss"])["eval_loss"].iloc[-1] for h in losses]
        diffs = [x - y for x, y in zip(a, b)]
        got = compare.Comparison(final[0], final[1], mean_stderr(diffs), len(diffs), True)
        mean = sum(diffs) / len(diffs)
        out.append(Finding(*COSINE, f"final validation loss: {model} {constant} - {cosine}",
                           f"{got.text(3)}; per record {mean:+.3f}", round(mean, 6), round(got.se, 6), got.n,
                           verdict(mean, got.se)))
    return out


def dpo_validation_table(config: dict, results: compare.Results) -> pd.DataFrame:
    """Each DPO run's final validation reward accuracy with its standard error, beside the report's."""
    rows = []
    for name, spec in config["variants"].items():
        for model in spec["models"]:
            got = compare.dpo_validation(results, model, name)
            if got is not None:
                accuracy, se, n = got
                paper = PAPER_DPO_VALIDATION.get(name) if model == QWEN else None
                rows.append({"model": model, "variant": name, "parent": spec["parent"], "n": n,
                             "accuracy": round(accuracy, 6), "stderr": round(se, 6), "paper": paper,
                             "paper_place": DPO_VALIDATION[1] if paper is not None else ""})
    return pd.DataFrame(rows, columns=["model", "variant", "parent", "n", "accuracy", "stderr", "paper",
                                       "paper_place"])


def dpo_validation_findings(config: dict, results: compare.Results) -> list[Finding]:
    out = []
    for row in dpo_validation_table(config, results).itertuples():
        if pd.notna(row.paper):
            got = compare.Comparison(row.accuracy, row.paper, row.stderr, row.n, False)
            out.append(Finding(*DPO_VALIDATION, f"validation reward accuracy: {row.model} {row.variant} - report",
                               f"{row.accuracy:.3f} vs {row.paper:.2f} (stderr {row.stderr:.3f}, n {row.n})",
                               round(got.diff, 6), row.stderr, row.n, verdict(got.diff, got.se, "equal")))
    return out


def _best(role: dict[str, str], results: compare.Results, qwen: str) -> list[Finding]:
    """M1 (D_S) against each other Qwen row, per overlap metric: reproduced when above all of them beyond
    two standard errors, contradicted when one is above it beyond two, else not resolved."""
    if "M1 (D_S)" not in role:
        return []
    out = []
    for column in OVERLAP:
        task, metric, scale = PAPER_COLUMNS[column]
        others = [(r, compare.paired(results, (QWEN, role["M1 (D_S)"]), (QWEN, v), task, metric, scale))
                  for r, v in role.items() if r != "M1 (D_S)"]
        others = [(r, got) for r, got in others if got]
        if not others:
            continue
        closest, got = min(others, key=lambda pair: pair[1].diff / pair[1].se if pair[1].se else pair[1].diff)
        verdicts = {verdict(g.diff, g.se) for _, g in others}
        overall = CONTRADICTED if CONTRADICTED in verdicts else REPRODUCED if verdicts == {REPRODUCED} else UNRESOLVED
        out.append(Finding(*BEST, f"{column}: {qwen} M1 (D_S) - the closest other row of its slot ({closest})",
                           got.text(), round(got.diff, 6), round(got.se, 6), got.n, overall))
    return out


def table(rows: list[Finding]) -> pd.DataFrame:
    return pd.DataFrame([asdict(r) for r in rows], columns=list(Finding.__dataclass_fields__))


def render(rows: list[Finding]) -> str:
    if not rows:
        return "(no finding: the study has not measured the rows the claims compare)"
    out, last = [], None
    for r in rows:
        if r.claim != last:
            out.append(f'"{r.claim}" ({r.place})')
            last = r.claim
        out.append(f"  {r.verdict:<13} {r.compared}: {r.measured}")
    counts = pd.Series([r.verdict for r in rows]).value_counts()
    out.append(", ".join(f"{counts.get(v, 0)} {v}" for v in (REPRODUCED, CONTRADICTED, UNRESOLVED)))
    return "\n".join(out)
