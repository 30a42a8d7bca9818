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
    assert list(frame.columns) == findings.COLUMNS
    by_claim = {c: frame[frame["claim"] == c] for c in frame["claim"]}
    # constant ends 0.1 above cosine on every record: the claim holds far beyond its stderr
    cosine = by_claim[findings.COSINE.text]
    assert cosine["verdict"].tolist() == ["reproduced"] and cosine["difference"].iloc[0] == pytest.approx(0.1)
    # M1 (D_S) learned the answers: above M0 on every overlap metric
    gain = by_claim[findings.SFT_GAIN.text]
    assert len(gain) == 4 and set(gain["verdict"]) == {"reproduced"}
    # DPO validation 30 of 40 pairs against the report's 0.79 (M2) and 0.80 (M0 DPO): the Wilson interval of
    # 30/40 is [0.598, 0.858], wider than the margin (1.96 x sqrt(0.8 x 0.2 / 625) = 0.031): not resolved
    dpo = by_claim[findings.DPO_VALIDATION.text]
    assert dpo["verdict"].tolist() == ["not resolved"] * 2 and dpo["n"].tolist() == [40, 40]
    assert dpo["difference"].tolist() == pytest.approx([0.75 - 0.79, 0.75 - 0.80])
    assert dpo["low"].tolist() == pytest.approx([0.5981 - 0.79, 0.5981 - 0.80], abs=1e-4)
    margins = [1.959964 * math.sqrt(p * (1 - p) / 625) for p in (0.79, 0.80)]
    assert dpo["margin"].tolist() == pytest.approx(margins, abs=1e-6)
    assert all(place for place in frame["place"])
    assert set(frame["seed_variance"]) == {"not measured (one draw)"}


def test_a_contradicted_claim_is_a_finding_not_a_failed_check():
    # cosine ends 0.1 above constant on every record: the report's schedule claim is contradicted
    study = results(constant_items=[1.1 + 0.01 * (i % 5) for i in range(20)])
    frame = findings.table(findings.findings(CONFIG, study))
    assert frame[frame["claim"] == findings.COSINE.text]["verdict"].tolist() == ["contradicted"]
    # the DPO models answer as M0 does and M1 (D_S) as the references: "DPO below SFT" holds
    below = frame[frame["claim"] == findings.DPO_BELOW_SFT.text]
    assert "reproduced" in set(below["verdict"])
    assert all(c.holds for c in effects.check(CONFIG, study))  # no check reads the schedule claim
    assert "contradicted" in findings.render(findings.findings(CONFIG, study))


def test_the_claims_no_row_tested_before_have_rows():
    study = results()
    steps = list(range(1, 17))
    # the same batches for both schedules: constant ends 0.2 above cosine on each of the last 4 steps (16 x 0.25)
    study.histories[("qwen", "M1-DS-cosine")] = pd.DataFrame(
        {"step": [0, 8, 16, *steps], "eval_loss": [2.0, 1.5, 1.2, *[None] * 16],
         "loss": [None] * 3 + [2.0 - 0.05 * s for s in steps]})
    study.histories[("qwen", "M1-DS-constant")] = pd.DataFrame(
        {"step": [0, 8, 16, *steps], "eval_loss": [2.0, 1.6, 1.3, *[None] * 16],
         "loss": [None] * 3 + [2.0 - 0.05 * s + (0.2 if s > 12 else 0.0) + 0.01 * (s % 2) for s in steps]})
    # a 3-epoch DPO run: 30 of 40 at epoch 2, 34 of 40 at epoch 3
    study.histories[("qwen", "M0-DPO")] = pd.DataFrame({"step": [10, 20, 30], "epoch": [1.0, 2.0, 3.0],
                                                       "eval_rewards/accuracies": [0.6, 0.75, 0.85]})
    frame = findings.table(findings.findings(CONFIG, study))
    train = frame[frame["claim"] == findings.COSINE_TRAIN.text]
    assert train["compared"].tolist() == ["final train loss: qwen D_S M1-DS-constant - M1-DS-cosine"]
    assert train["difference"].iloc[0] == pytest.approx(0.2 + 0.01 * (1 + 0 + 1 + 0) / 4)
    assert train["n"].iloc[0] == 4
    epochs = frame[frame["claim"] == findings.DPO_EPOCHS.text]
    assert epochs["difference"].tolist() == pytest.approx([0.85 - 0.75])
    assert epochs["verdict"].tolist() == ["not resolved"]  # 4 pairs more of 40 is within the Wilson errors
    # the report's Table 1 has M2 below M0 DPO on every overlap column (19.40 vs 22.91 BLEU-4, ...): oriented so
    sft_for_dpo = frame[frame["claim"] == findings.SFT_FOR_DPO.text]["compared"].tolist()
    assert sft_for_dpo == [f"{c}: qwen M0 DPO - qwen M2" for c in findings.OVERLAP]
    # the best-model claim now looks at HellaSwag too
    best = frame[frame["claim"] == findings.BEST.text]["compared"].tolist()
    assert [c.split(":")[0] for c in best] == [*findings.OVERLAP, "HellaSwag"]
    # D_L worse than D_S: Qwen and BLOOM both (BLOOM trained D_S only here: no BLOOM row)
    dl = frame[frame["claim"] == findings.DL_WORSE.text]["compared"].tolist()
    assert dl and all(c.endswith("qwen M1 (D_L)") for c in dl)


def test_the_best_model_is_judged_by_every_other_row():
    """M1 (D_S) answers as the references; M0 DPO too: on BLEU, the closest other row ties it, not resolved."""
    study = results()
    study.items[("qwen", "M0-DPO", "dense", "gsm8k")] = answers(REFERENCES)
    frame = findings.table(findings.findings(CONFIG, study))
    best = frame[frame["claim"] == findings.BEST.text].set_index("compared")["verdict"]
    assert best["BLEU-4: qwen M1 (D_S) - the closest other row of its slot (M0 DPO)"] == "not resolved"
    alone = findings.table(findings.findings(CONFIG, results()))
    alone = alone[alone["claim"] == findings.BEST.text].set_index("compared")["verdict"]
    assert alone[[c for c in alone.index if c.startswith("BLEU-4")][0]] == "reproduced"
