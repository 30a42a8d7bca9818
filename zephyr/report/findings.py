"""The report's findings beside what one draw of a study measured: claim by claim, row by row.

Each `Claim` quotes the report (`zephyr-report.txt`) with its place; each row (`Finding`) is one comparison
that speaks to it, with this draw's difference, its items' standard error, its interval and a verdict
(`zephyr.report.uncertainty`):

- a claim that one side is above the other: *reproduced* when the interval lies above 0 in the claimed
  direction, *contradicted* when it lies below, *not resolved* otherwise;
- a claim of no change or of a value: an equivalence test against the claim's margin (its source is
  `Claim.margin_source`): *reproduced* when the interval lies inside the margin, *contradicted* when wholly
  outside it, *not resolved* otherwise.

One draw's verdict on a training effect never counts the seeds (`seed variance: not measured`); the study of
several draws (`claims`) combines the rows of every draw. A finding is an output, not a pass/fail: the
pipeline checks (`effects`) set the exit code. The DPO validation accuracies also go to their own table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from ..evaluation.metrics import mean_stderr
from ..study import PAPER_DPO_VALIDATION, PAPER_TABLE1, TABLE1, TASKS, table_columns
from . import compare
from .uncertainty import ABOVE, CONTRADICTED, EQUAL, REPRODUCED, UNRESOLVED, Measure, Z, combine, verdict, wilson_stderr

__all__ = ["CLAIMS", "Claim", "Finding", "REPRODUCED", "CONTRADICTED", "UNRESOLVED", "findings", "table", "render",
           "dpo_validation_table"]

#: Table 1's columns the report prints (column → task, metric, scale): what its claims speak of.
PAPER_COLUMNS = {column: spec for column, spec in table_columns(TABLE1).items()
                 if any(column in row for row in PAPER_TABLE1.values())}
#: Those of them every row shows (the claims compare rows on them), and the GSM8K overlap columns.
METRICS = {column: spec for column, spec in PAPER_COLUMNS.items() if not TASKS[spec[0]].only_marked_rows}
OVERLAP = [column for column, (task, _, _) in METRICS.items() if task == "gsm8k"]
#: The model slots the report names: Qwen's and BLOOM's keys in the configs.
QWEN, BLOOM = "qwen", "bloom"
#: The report's DPO validation set: "a 12 500-sample DPO dataset" (§2), of which "We hold out 5% of the
#: dataset to compute a validation reward accuracy" (§4 DPO).
REPORT_DPO_VALIDATION_PAIRS = round(12_500 * 0.05)
#: A training loss compared at the end of a run: the mean of the per-step differences over this last share
#: of the logged steps (both schedules see the same batches: same seed, same mixture).
LAST_STEPS = 0.25


@dataclass(frozen=True)
class Claim:
    """One claim of the report: its words, its place, and how a row of it is judged."""

    key: str
    text: str
    place: str
    kind: str = ABOVE
    #: where an equality claim's margin comes from; whose reading fills a silence of the report
    margin_source: str = ""
    reading: str = ""
    #: what a study must run for the claim to have a row
    needs: str = ""


def _qwen_hellaswag_margin() -> float:
    """The largest change of the report's own Qwen HellaSwag column from its M0 (Table 1)."""
    column = {row: values["HellaSwag"] for row, values in PAPER_TABLE1.items() if row.startswith("Qwen")}
    return round(max(abs(v - column["Qwen M0"]) for v in column.values()), 6)


HELLASWAG_MARGIN = _qwen_hellaswag_margin()

COSINE = Claim("cosine_validation", "the cosine learning rate scheduler consistently leads to a lower final "
               "validation loss compared to the constant learning rate", "§4 SFT; Figures 2-3",
               needs="an SFT run of each schedule on the same mixture (validation items of both)")
COSINE_TRAIN = Claim("cosine_train", "the loss obtained with the cosine learning rate scheduler decreases more than "
                     "that obtained with the constant learning rate", "B.2 and B.3 (Figures 2a, 3a: the train loss)",
                     reading=f"ours: the final train loss, the mean per-step difference over the last "
                             f"{LAST_STEPS:.0%} of logged steps, paired by step",
                     needs="an SFT run of each schedule on the same mixture, logging its train loss")
DL_LOWER_QWEN = Claim("dl_lower_qwen", "In comparison with BLOOM560M models, the loss is lower with the D_L dataset",
                      "B.3 (Figure 3b)", reading="ours, reading (a): Qwen's final validation loss on D_L is below "
                      "its own on D_S (validation sets differ: unpaired)", needs="Qwen runs on D_S and D_L (cosine)")
DL_LOWER_THAN_BLOOM = Claim("dl_lower_than_bloom", DL_LOWER_QWEN.text, "B.3 (Figures 2b, 3b)",
                            reading="ours, reading (b): on D_L, Qwen's final validation loss is below BLOOM's, record "
                            "by record (comparable only where both slots share a tokenizer, as the default's do)",
                            needs="Qwen and BLOOM runs on D_L (cosine)")
QWEN_OVER_BLOOM = Claim("qwen_over_bloom", "BLOOM is consistently outperformed by Qwen", "§4 SFT; Table 1")
DL_WORSE = Claim("dl_worse", "the results obtained with this D_L are worse than those obtained with D_S",
                 "§2 SFT Dataset D_L; Table 1", reading="every Table 1 column, Qwen and BLOOM")
DS_OVER_DL = Claim("ds_over_dl", "The performance of the latter on the D_S dataset is slightly better than that "
                   "obtained with D_L", "§4 SFT; Table 1")
SFT_GAIN = Claim("sft_gain", "Qwen M1 (D_S) above Qwen M0 on BLEU-4 and ROUGE (34.50 vs 28.43 BLEU-4, 30.21 vs 25.17 "
                 "ROUGE-L)", "Table 1 (its numbers; §3: the metrics \"compare the improvements made by fine-tuning\")")
DPO_VALIDATION = Claim("dpo_validation", "The validation accuracies obtained for the M0 and M1 models are 0.80 and "
                       "0.79, respectively", "§4 DPO; Figure 4", kind=EQUAL,
                       margin_source=f"the report's own sampling error: z x sqrt(p (1 - p) / "
                                     f"{REPORT_DPO_VALIDATION_PAIRS}) (5 % of its 12 500 pairs, §2 and §4 DPO)",
                       needs="DPO runs from M0 and from M1 (D_S) with a validation split")
DPO_EPOCHS = Claim("dpo_epochs", "This size is found to work well in practice with 3 training epochs",
                   "§2 DPO Dataset", reading="ours: the validation reward accuracy at epoch 3 above that at epoch 2",
                   needs="a DPO run of 3 epochs evaluated at the end of epochs 2 and 3")
SFT_FOR_DPO = Claim("sft_for_dpo", "To assess the benefit of SFT for DPO, we train both M0 and M1 on our DPO dataset",
                    "§4 DPO; Table 1", reading="the report states no direction: each column's sign is the report's "
                    "own Table 1 difference (M2 against M0 DPO)", needs="DPO runs from M0 and from M1 (D_S)")
DPO_BELOW_SFT = Claim("dpo_below_sft", "Surprisingly, models specifically trained on the DPO dataset perform worse "
                      "than those trained using only SFT", "§4 DPO; Table 1")
HELLASWAG_FLAT = Claim("hellaswag_flat", "HellaSwag changes little across the stages (Qwen 42.15 to 45.40, M0 44.98)",
                       "Table 1 (a reading of its HellaSwag column; the text makes no such statement)", kind=EQUAL,
                       margin_source=f"the report's own Qwen HellaSwag column: its largest change from M0, "
                                     f"{HELLASWAG_MARGIN:.2f} points (M1 (D_L))")
BEST = Claim("best", "So far, the Qwen M1 model trained on D_S is our best performing one", "§4 DPO; Table 1",
             reading="BLEU/ROUGE and HellaSwag (on HellaSwag the report's own Table 1 has M0 DPO, 45.40, above "
                     "M1 (D_S), 45.33)")
#: Every claim, in the report's order of reasoning: the rows of `findings` and the lines of `claims.csv`.
CLAIMS = [COSINE, COSINE_TRAIN, DL_LOWER_QWEN, DL_LOWER_THAN_BLOOM, QWEN_OVER_BLOOM, DL_WORSE, DS_OVER_DL, SFT_GAIN,
          DPO_EPOCHS, DPO_VALIDATION, SFT_FOR_DPO, DPO_BELOW_SFT, HELLASWAG_FLAT, BEST]


@dataclass
class Finding:
    """One row of a claim in one draw; `measure` is what several draws combine."""

    claim: Claim
    compared: str
    measured: str
    measure: Measure
    margin: float | None = None
    #: a composite row (the best model's): the verdict of its rows, not of its own interval
    verdict_of: list[Finding] = field(default_factory=list)


def findings(config: dict, results: compare.Results) -> list[Finding]:
    """Every row of every claim this draw's files can speak to."""
    role = compare.roles(config)
    qwen, bloom = (_label(config, m) for m in (QWEN, BLOOM))
    out = _schedules(config, results) + _losses_by_data(config, results, role)
    for stage in (r for r in ("M0", "M1 (D_L)", "M1 (D_S)") if r in role):
        for column, (task, metric, scale) in METRICS.items():
            got = compare.paired(results, (QWEN, role[stage]), (BLOOM, role[stage]), task, metric, scale)
            if got:
                out.append(_row(QWEN_OVER_BLOOM, f"{column}: {qwen} {stage} - {bloom} {stage}", got))
    pairs = [(DL_WORSE, m, "M1 (D_S)", "M1 (D_L)", list(METRICS)) for m in (QWEN, BLOOM)]
    pairs += [(DS_OVER_DL, QWEN, "M1 (D_S)", "M1 (D_L)", list(METRICS)), (SFT_GAIN, QWEN, "M1 (D_S)", "M0", OVERLAP)]
    pairs += _dpo_from_sft(role)
    pairs += [(DPO_BELOW_SFT, QWEN, "M1 (D_S)", dpo, [*OVERLAP, "Reward Accuracy"]) for dpo in ("M2", "M0 DPO")]
    for claim, model, a, b, columns in pairs:
        if a in role and b in role:
            label = _label(config, model)
            for column in columns:
                task, metric, scale = PAPER_COLUMNS[column]
                got = compare.paired(results, (model, role[a]), (model, role[b]), task, metric, scale)
                if got:
                    out.append(_row(claim, f"{column}: {label} {a} - {label} {b}", got))
    out += _dpo_epochs(config, results) + dpo_validation_findings(config, results)
    task, metric, scale = PAPER_COLUMNS["HellaSwag"]
    for stage in (r for r in role if r != "M0"):
        got = compare.paired(results, (QWEN, role[stage]), (QWEN, "M0"), task, metric, scale)
        if got:
            out.append(_row(HELLASWAG_FLAT, f"HellaSwag: {qwen} {stage} - {qwen} M0", got, HELLASWAG_MARGIN))
    out += _best(role, results, qwen)
    order = {c.key: i for i, c in enumerate(CLAIMS)}
    return sorted(out, key=lambda f: order[f.claim.key])


def _row(claim: Claim, compared: str, got: compare.Comparison, margin: float | None = None) -> Finding:
    return Finding(claim, compared, got.text(), got.measure(), margin)


def _label(config: dict, model: str) -> str:
    """What ran in a report's slot, by the config's label (the default's Qwen slot is SmolLM2-135M)."""
    return config["models"].get(model, {}).get("label", model)


def _dpo_from_sft(role: dict[str, str]) -> list[tuple]:
    """M2 against M0 DPO per column, oriented by the sign of the report's own Table 1 difference."""
    out = []
    for column in [*OVERLAP, "Reward Accuracy"]:
        m2, m0 = (PAPER_TABLE1[row].get(column) for row in ("Qwen M2 (D_S)", "Qwen M0 DPO"))
        if m2 is not None and m0 is not None and m2 != m0:
            out.append((SFT_FOR_DPO, QWEN, *(("M2", "M0 DPO") if m2 > m0 else ("M0 DPO", "M2")), [column]))
    return out


def _final_eval_loss(history: pd.DataFrame | None) -> float | None:
    if history is None or "eval_loss" not in history or history["eval_loss"].dropna().empty:
        return None
    return float(history.dropna(subset=["eval_loss"])["eval_loss"].iloc[-1])


def _schedules(config: dict, results: compare.Results) -> list[Finding]:
    """Constant against cosine on the same mixture: final validation loss record by record, and train loss."""
    out = []
    for model, cosine, constant in compare.schedule_twins(config):
        data = config["variants"][cosine]["data"]
        a, b = (results.validation_items.get((model, v)) for v in (constant, cosine))
        finals = [_final_eval_loss(results.histories.get((model, v))) for v in (constant, cosine)]
        if a is not None and b is not None and None not in finals and len(a) == len(b):
            diffs = [x - y for x, y in zip(a, b)]
            mean = sum(diffs) / len(diffs)
            got = compare.Comparison(finals[0], finals[1], mean_stderr(diffs), len(diffs), True)
            out.append(Finding(COSINE, f"final validation loss: {model} {data} {constant} - {cosine}",
                               f"{got.text(3)}; per record {mean:+.3f}", Measure(mean, got.se, len(diffs))))
        train = _train_loss_difference(*(results.histories.get((model, v)) for v in (constant, cosine)))
        if train is not None:
            mean, se, n = train
            out.append(Finding(COSINE_TRAIN, f"final train loss: {model} {data} {constant} - {cosine}",
                               f"per step {mean:+.3f} (paired stderr {se:.3f}, last {n} steps)", Measure(mean, se, n)))
    return out


def _train_loss_difference(constant: pd.DataFrame | None, cosine: pd.DataFrame | None):
    """The mean per-step train-loss difference over the last `LAST_STEPS` of the steps both logged."""
    if constant is None or cosine is None or "loss" not in constant or "loss" not in cosine:
        return None
    a, b = (h.dropna(subset=["loss"]).set_index("step")["loss"] for h in (constant, cosine))
    steps = sorted(set(a.index) & set(b.index))
    last = steps[-max(2, math.ceil(LAST_STEPS * len(steps))):]
    if len(last) < 2:
        return None
    diffs = [float(a[s] - b[s]) for s in last]
    return sum(diffs) / len(diffs), mean_stderr(diffs), len(diffs)


def _losses_by_data(config: dict, results: compare.Results, role: dict[str, str]) -> list[Finding]:
    """B.3's two readings: Qwen's D_S loss against its D_L loss, and Qwen's D_L loss against BLOOM's."""
    if "M1 (D_S)" not in role or "M1 (D_L)" not in role:
        return []
    out = []
    ds, dl = role["M1 (D_S)"], role["M1 (D_L)"]
    items = {key: results.validation_items.get(key) for key in ((QWEN, ds), (QWEN, dl), (BLOOM, dl))}
    finals = {key: _final_eval_loss(results.histories.get(key)) for key in items}
    if items[(QWEN, ds)] and items[(QWEN, dl)] and None not in (finals[(QWEN, ds)], finals[(QWEN, dl)]):
        a, b = items[(QWEN, ds)], items[(QWEN, dl)]
        diff = sum(a) / len(a) - sum(b) / len(b)
        se = math.hypot(mean_stderr(a), mean_stderr(b))
        got = compare.Comparison(finals[(QWEN, ds)], finals[(QWEN, dl)], se, min(len(a), len(b)), False)
        out.append(Finding(DL_LOWER_QWEN, f"final validation loss: {_label(config, QWEN)} M1 (D_S) - M1 (D_L)",
                           f"{got.text(3)}; per record {diff:+.3f}", Measure(diff, se, got.n)))
    a, b = items[(BLOOM, dl)], items[(QWEN, dl)]
    if a and b and len(a) == len(b) and None not in (finals[(BLOOM, dl)], finals[(QWEN, dl)]):
        diffs = [x - y for x, y in zip(a, b)]
        mean = sum(diffs) / len(diffs)
        got = compare.Comparison(finals[(BLOOM, dl)], finals[(QWEN, dl)], mean_stderr(diffs), len(diffs), True)
        out.append(Finding(DL_LOWER_THAN_BLOOM, f"final validation loss on D_L: {_label(config, BLOOM)} - "
                           f"{_label(config, QWEN)}", f"{got.text(3)}; per record {mean:+.3f}",
                           Measure(mean, got.se, len(diffs))))
    return out


def _dpo_epochs(config: dict, results: compare.Results) -> list[Finding]:
    """Each DPO run's validation reward accuracy at the end of epoch 3 against epoch 2 (same records)."""
    out, column = [], "eval_rewards/accuracies"
    for name, spec in config["variants"].items():
        for model in spec["models"]:
            history = results.histories.get((model, name))
            n = results.summaries.get((model, name), {}).get("validation_records")
            if history is None or column not in history or "epoch" not in history or not n:
                continue
            evals = history.dropna(subset=[column])
            at = {e: evals[(evals["epoch"] - e).abs() <= 0.01][column] for e in (2, 3)}
            if any(v.empty for v in at.values()):
                continue
            p2, p3 = (float(at[e].iloc[-1]) for e in (2, 3))
            k2, k3 = round(p2 * n), round(p3 * n)
            se = math.hypot(wilson_stderr(k2, n), wilson_stderr(k3, n))
            out.append(Finding(DPO_EPOCHS, f"validation reward accuracy: {model} {name} epoch 3 - epoch 2",
                               f"{p3:.3f} vs {p2:.3f} (unpaired Wilson stderr {se:.3f}, n {n})",
                               Measure(p3 - p2, se, int(n))))
    return out


def dpo_validation_table(config: dict, results: compare.Results) -> pd.DataFrame:
    """Each DPO run's final validation reward accuracy, k of n pairs, its Wilson standard error, beside the
    report's."""
    rows = []
    for name, spec in config["variants"].items():
        for model in spec["models"]:
            got = compare.dpo_validation(results, model, name)
            if got is not None:
                accuracy, k, n = got
                paper = PAPER_DPO_VALIDATION.get(name) if model == QWEN else None
                rows.append({"model": model, "variant": name, "parent": spec["parent"], "k": k, "n": n,
                             "accuracy": round(accuracy, 6), "stderr": round(wilson_stderr(k, n), 6), "paper": paper,
                             "paper_place": DPO_VALIDATION.place if paper is not None else ""})
    return pd.DataFrame(rows, columns=["model", "variant", "parent", "k", "n", "accuracy", "stderr", "paper",
                                       "paper_place"])


def dpo_validation_findings(config: dict, results: compare.Results) -> list[Finding]:
    out = []
    for row in dpo_validation_table(config, results).itertuples():
        if pd.notna(row.paper):
            margin = Z * math.sqrt(row.paper * (1 - row.paper) / REPORT_DPO_VALIDATION_PAIRS)
            out.append(Finding(DPO_VALIDATION, f"validation reward accuracy: {row.model} {row.variant} - report",
                               f"{row.k}/{row.n} = {row.accuracy:.3f} vs {row.paper:.2f}",
                               Measure(row.k / row.n - row.paper, row.stderr, int(row.n), proportion=(row.k, row.n)),
                               round(margin, 6)))
    return out


def _best(role: dict[str, str], results: compare.Results, qwen: str) -> list[Finding]:
    """M1 (D_S) against each other Qwen row, per overlap metric and HellaSwag: one row per column, judged by
    all its comparisons (reproduced when above every other row, contradicted when one is above it)."""
    if "M1 (D_S)" not in role:
        return []
    out = []
    for column in [*OVERLAP, "HellaSwag"]:
        task, metric, scale = PAPER_COLUMNS[column]
        others = [(r, compare.paired(results, (QWEN, role["M1 (D_S)"]), (QWEN, v), task, metric, scale))
                  for r, v in role.items() if r != "M1 (D_S)"]
        parts = [Finding(BEST, f"{column}: {qwen} M1 (D_S) - {qwen} {r}", got.text(), got.measure())
                 for r, got in others if got]
        if not parts:
            continue
        closest = min(parts, key=lambda f: _t(f.measure))
        out.append(Finding(BEST, f"{column}: {qwen} M1 (D_S) - the closest other row of its slot "
                           f"({closest.compared.rsplit(qwen, 1)[-1].strip()})", closest.measured, closest.measure,
                           verdict_of=parts))
    return out


def _t(m: Measure) -> float:
    return m.difference / m.stderr if m.stderr and math.isfinite(m.stderr) else m.difference


def judge(claim: Claim, estimates: list, margin: float | None) -> str:
    """A row's verdict from its estimate, or a composite row's from its parts' estimates (all parts reproduced:
    reproduced; any contradicted: contradicted)."""
    verdicts = {verdict(e, claim.kind, margin) for e in estimates}
    if len(estimates) == 1:
        return verdicts.pop()
    return CONTRADICTED if CONTRADICTED in verdicts else REPRODUCED if verdicts == {REPRODUCED} else UNRESOLVED


def judged(row: Finding, draws: list[Finding] | None = None) -> tuple:
    """(estimate, verdict) of a row over its draws (`draws`: the same row in every draw; default: itself)."""
    draws = draws or [row]
    estimate = combine([d.measure for d in draws])
    if row.verdict_of:
        parts = [combine([d.verdict_of[i].measure for d in draws]) for i in range(len(row.verdict_of))]
        return estimate, judge(row.claim, parts, row.margin)
    return estimate, judge(row.claim, [estimate], row.margin)


COLUMNS = ["claim", "place", "compared", "measured", "difference", "stderr", "low", "high", "df", "margin", "n",
           "verdict", "seed_variance"]


def table(rows: list[Finding]) -> pd.DataFrame:
    """One draw's rows: the items' uncertainty only (`seed_variance`: not measured)."""
    out = []
    for r in rows:
        estimate, got = judged(r)
        out.append({"claim": r.claim.text, "place": r.claim.place, "compared": r.compared, "measured": r.measured,
                    "difference": round(estimate.mean, 6), "stderr": round(estimate.se, 6),
                    "low": round(estimate.low, 6), "high": round(estimate.high, 6), "df": round(estimate.df, 1),
                    "margin": r.margin, "n": r.measure.n, "verdict": got, "seed_variance": "not measured (one draw)"})
    return pd.DataFrame(out, columns=COLUMNS)


def render(rows: list[Finding]) -> str:
    if not rows:
        return "(no finding: the study has not measured the rows the claims compare)"
    frame = table(rows)
    out, last = [], None
    for r in frame.itertuples():
        if r.claim != last:
            out.append(f'"{r.claim}" ({r.place})')
            last = r.claim
        out.append(f"  {r.verdict:<13} {r.compared}: {r.measured}")
    counts = frame["verdict"].value_counts()
    out.append(", ".join(f"{counts.get(v, 0)} {v}" for v in (REPRODUCED, CONTRADICTED, UNRESOLVED)))
    return "\n".join(out)
