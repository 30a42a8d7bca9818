"""zephyr.report.effects (pipeline checks) and zephyr.report.findings (the report's claims), on hand-made
results: what each reads, and that a contradicted claim is a finding, not a failure."""

import math

import pandas as pd
import pytest

from zephyr.report import compare, effects, findings

HYPER = {"cos": {"trainer": "sft", "lr_scheduler_type": "cosine"},
         "const": {"trainer": "sft", "lr_scheduler_type": "constant"},
         "dpo": {"trainer": "dpo", "lr_scheduler_type": "cosine"}}
CONFIG = {
    "models": {"qwen": {"source": {"kind": "gguf"}}, "bloom": {"source": {"kind": "scratch"}}},
    "hyperparameters": HYPER,
    "variants": {"M1-DS-cosine": {"models": ["qwen", "bloom"], "parent": "M0", "data": "D_S", "hyperparameters": "cos"},
                 "M1-DS-constant": {"models": ["qwen"], "parent": "M0", "data": "D_S", "hyperparameters": "const"},
                 "M1-DL-cosine": {"models": ["qwen"], "parent": "M0", "data": "D_L", "hyperparameters": "cos"},
                 "M2-DS": {"models": ["qwen"], "parent": "M1-DS-cosine", "data": "DPO", "hyperparameters": "dpo"},
                 "M0-DPO": {"models": ["qwen"], "parent": "M0", "data": "DPO", "hyperparameters": "dpo"}},
    "table1": [{"label": "Qwen M0", "model": "qwen", "variant": "M0"},
               {"label": "BLOOM M0", "model": "bloom", "variant": "M0"},
               {"label": "Qwen M1 (D_L)", "model": "qwen", "variant": "M1-DL-cosine"},
               {"label": "Qwen M1 (D_S)", "model": "qwen", "variant": "M1-DS-cosine", "reward": True},
               {"label": "BLOOM M1 (D_S)", "model": "bloom", "variant": "M1-DS-cosine"},
               {"label": "Qwen M2 (D_S)", "model": "qwen", "variant": "M2-DS", "reward": True},
               {"label": "Qwen M0 DPO", "model": "qwen", "variant": "M0-DPO", "reward": True}],
}
REFERENCES = [f"Step one makes {i} apples . Step two adds {i + 1} more , so {2 * i + 1} in all ." for i in range(20)]
UNRELATED = [f"Perhaps the weather will turn cold on day {i} or later" for i in range(20)]


def metric_rows(model, variant, task, values, n, format="dense"):
    return [{"model": model, "variant": variant, "format": format, "task": task, "metric": m, "value": v, "stderr": s,
             "n": n} for m, (v, s) in values.items()]


def answers(predictions):
    return [{"id": i, "reference": r, "prediction": p} for i, (r, p) in enumerate(zip(REFERENCES, predictions))]


def windows(nlls):
    return [{"window": i, "nll": x, "tokens": 100} for i, x in enumerate(nlls)]


def results(m1=REFERENCES, m0=UNRELATED, dpo_final=0.75, validation_pairs=40, sft_losses=(2.0, 1.5, 1.2),
            constant_items=None, nf4=None, int8=None, hellaswag_n=60, perplexities=None):
    """A study where M1 (D_S) learned the reference style and the rest answer unrelated text."""
    rows = []
    gsm8k = {}
    for model, variant, preds in (("qwen", "M0", m0), ("qwen", "M1-DS-cosine", m1), ("qwen", "M1-DL-cosine", m0),
                                  ("qwen", "M2-DS", m0), ("qwen", "M0-DPO", m0), ("bloom", "M0", UNRELATED),
                                  ("bloom", "M1-DS-cosine", UNRELATED)):
        gsm8k[(model, variant, "dense", "gsm8k")] = answers(preds)
        rows += metric_rows(model, variant, "gsm8k", {m: (1.0, 0.1) for m in ("bleu", "rouge1", "rouge2", "rougeL")},
                            20)
        p = 0.4
        rows += metric_rows(model, variant, "hellaswag", {"acc_norm": (p, math.sqrt(p * (1 - p) / hellaswag_n))},
                            hellaswag_n)
    dense = windows([300.0 + (i % 3) for i in range(40)])
    items = {**gsm8k, ("qwen", "M0", "dense", "perplexity"): dense}
    for format, nlls in {"nf4": nf4, "int8": int8, **(perplexities or {})}.items():
        if nlls is not None:
            items[("qwen", "M0", format, "perplexity")] = windows(nlls)
    history = pd.DataFrame({"step": [0, 8, 16], "eval_loss": list(sft_losses)})
    constant = pd.DataFrame({"step": [0, 8, 16], "eval_loss": [2.0, 1.6, 1.3]})
    dpo = pd.DataFrame({"step": [0, 8, 16], "eval_rewards/accuracies": [0.0, 0.6, dpo_final]})
    cosine_items = [1.2 + 0.01 * (i % 5) for i in range(20)]
    return compare.Results(
        metrics=pd.DataFrame(rows), items=items,
        histories={("qwen", "M1-DS-cosine"): history, ("qwen", "M1-DS-constant"): constant,
                   ("qwen", "M2-DS"): dpo, ("qwen", "M0-DPO"): dpo, ("bloom", "M1-DS-cosine"): history * 10},
        summaries={("qwen", v): {"validation_records": validation_pairs} for v in ("M2-DS", "M0-DPO")},
        validation_items={("qwen", "M1-DS-cosine"): cosine_items,
                          ("qwen", "M1-DS-constant"): constant_items or [x + 0.1 for x in cosine_items]})


def checks(**kw):
    return {c.effect: c.holds for c in effects.check(CONFIG, results(**kw))}


def test_a_working_pipeline_passes_every_check():
    got = checks(nf4=[300.0 + (i % 3) + 3 for i in range(40)], int8=[300.0 + (i % 3) + 0.5 for i in range(40)])
    assert got and all(got.values()), got
    assert set(got) >= {"SFT lowers the validation loss: qwen M1-DS-cosine",
                        "DPO validation reward accuracy above chance: qwen M2-DS",
                        "M1 (D_S) beats M0 on ROUGE-L by two paired stderr: qwen",
                        "nf4 raises perplexity beyond its paired stderr: qwen M0",
                        "int8 stays within 5% of dense perplexity: qwen M0", "hellaswag rests on enough items"}
    assert not any("bloom" in effect for effect in got)  # a scratch model is held to nothing


def test_each_broken_stage_fails_its_own_check():
    assert not checks(m1=UNRELATED)["M1 (D_S) beats M0 on ROUGE-L by two paired stderr: qwen"]
    # 0.75 on 8 validation pairs: stderr sqrt(0.75 * 0.25 / 8) = 0.153, 1.6 stderr above chance; too few pairs
    assert not checks(validation_pairs=8)["DPO validation reward accuracy above chance: qwen M2-DS"]
    # 0.6 on 40 pairs: stderr 0.077, 1.3 stderr above chance
    assert not checks(dpo_final=0.6)["DPO validation reward accuracy above chance: qwen M0-DPO"]
    assert not checks(sft_losses=(2.0, 1.98, 1.96))["SFT lowers the validation loss: qwen M1-DS-cosine"]
    assert not checks(hellaswag_n=40)["hellaswag rests on enough items"]
    # NF4 scoring exactly as dense (a quantization that did nothing), int8 20 % off (a broken int8 path)
    same = checks(nf4=[300.0 + (i % 3) for i in range(40)], int8=[300.0 + (i % 3) + 18.3 for i in range(40)])
    assert not same["nf4 raises perplexity beyond its paired stderr: qwen M0"]
    assert not same["int8 stays within 5% of dense perplexity: qwen M0"]


def test_each_quantized_format_is_checked_by_its_bits():
    """nf4-dq is held to the 4-bit check as nf4 is; a QLoRA variant as trained, another model than a copy of
    the dense weights, to none."""
    unchanged = [300.0 + (i % 3) for i in range(40)]
    got = checks(perplexities={"nf4-dq": [x + 3 for x in unchanged], "as-trained": unchanged})
    assert got["nf4-dq raises perplexity beyond its paired stderr: qwen M0"]
    assert not any("as-trained" in effect for effect in got)
    assert not checks(perplexities={"nf4-dq": unchanged})["nf4-dq raises perplexity beyond its paired stderr: qwen M0"]


def test_the_paired_perplexity_change_is_the_ratio_estimators():
    dense = windows([200.0, 210.0, 190.0, 205.0])
    quantized = windows([204.0, 212.0, 195.0, 206.0])  # differences 4, 2, 5, 1 over 100 tokens each
    change, se, k = compare.log_perplexity_change(quantized, dense)
    assert k == 4 and change == pytest.approx(12 / 400)
    d = [4 - 0.03 * 100, 2 - 3, 5 - 3, 1 - 3]  # each window's difference less the mean change x its tokens
    assert se == pytest.approx(math.sqrt(4 / 3 * sum(x * x for x in d)) / 400)


def test_findings_give_the_report_s_words_a_measurement_and_a_verdict():
    rows = findings.findings(CONFIG, results(nf4=None))
    frame = findings.table(rows)
    assert list(frame.columns) == ["claim", "place", "compared", "measured", "difference", "stderr", "n", "verdict"]
    by_claim = {c: frame[frame["claim"] == c] for c in frame["claim"]}
    # constant ends 0.1 above cosine on every record: the claim holds far beyond its stderr
    cosine = by_claim[findings.COSINE[0]]
    assert cosine["verdict"].tolist() == ["reproduced"] and cosine["difference"].iloc[0] == pytest.approx(0.1)
    # M1 (D_S) learned the answers: above M0 on every overlap metric
    gain = by_claim[findings.SFT_GAIN[0]]
    assert len(gain) == 4 and set(gain["verdict"]) == {"reproduced"}
    # DPO validation 0.75 on 40 pairs (stderr 0.068) against the report's 0.79 (M2) and 0.80 (M0 DPO)
    dpo = by_claim[findings.DPO_VALIDATION[0]]
    assert dpo["verdict"].tolist() == ["reproduced"] * 2 and dpo["n"].tolist() == [40, 40]
    assert dpo["difference"].tolist() == pytest.approx([0.75 - 0.79, 0.75 - 0.80])
    assert all(place for place in frame["place"])


def test_a_contradicted_claim_is_a_finding_not_a_failed_check():
    # cosine ends 0.1 above constant on every record: the report's schedule claim is contradicted
    study = results(constant_items=[1.1 + 0.01 * (i % 5) for i in range(20)])
    frame = findings.table(findings.findings(CONFIG, study))
    assert frame[frame["claim"] == findings.COSINE[0]]["verdict"].tolist() == ["contradicted"]
    # the DPO models answer as M0 does and M1 (D_S) as the references: "DPO below SFT" holds
    below = frame[frame["claim"] == findings.DPO_BELOW_SFT[0]]
    assert "reproduced" in set(below["verdict"])
    assert all(c.holds for c in effects.check(CONFIG, study))  # no check reads the schedule claim
    assert "contradicted" in findings.render(findings.findings(CONFIG, study))


@pytest.mark.parametrize("difference, stderr, kind, expected", [
    (0.3, 0.1, "above", "reproduced"), (-0.3, 0.1, "above", "contradicted"), (0.15, 0.1, "above", "not resolved"),
    (0.15, 0.1, "equal", "reproduced"), (-0.25, 0.1, "equal", "contradicted"), (0.1, float("nan"), "above",
                                                                                 "not resolved")])
def test_verdicts_at_two_standard_errors(difference, stderr, kind, expected):
    assert findings.verdict(difference, stderr, kind) == expected
