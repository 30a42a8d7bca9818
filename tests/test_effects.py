"""zephyr.report.effects: which effects a finished run shows, on hand-made results."""

import pandas as pd

from zephyr.report import effects

CONFIG = {
    "models": {"q": {"source": {"kind": "gguf"}}, "b": {"source": {"kind": "scratch"}}},
    "hyperparameters": {"cos": {"trainer": "sft", "lr_scheduler_type": "cosine"},
                        "const": {"trainer": "sft", "lr_scheduler_type": "constant"},
                        "dpo": {"trainer": "dpo", "lr_scheduler_type": "cosine"}},
    "variants": {"M1-cosine": {"models": ["q"], "parent": "M0", "hyperparameters": "cos"},
                 "M1-constant": {"models": ["q"], "parent": "M0", "hyperparameters": "const"},
                 "M1-other": {"models": ["q", "b"], "parent": "M0", "hyperparameters": "cos"},
                 "M2": {"models": ["q"], "parent": "M1-cosine", "hyperparameters": "dpo"}},
    "table1": [{"label": "Q M0", "model": "q", "variant": "M0"},
               {"label": "Q M1", "model": "q", "variant": "M1-cosine"},
               {"label": "Q M1 other", "model": "q", "variant": "M1-other"},
               {"label": "B M1 other", "model": "b", "variant": "M1-other"},
               {"label": "Q M2", "model": "q", "variant": "M2", "reward": True}],
}


def rows(variant, task, values, n):
    return [{"model": "q", "variant": variant, "task": task, "metric": m, "value": v, "stderr": s, "n": n}
            for m, (v, s) in values.items()]


def history(column, values):
    return pd.DataFrame({"step": [0, 8, 16], column: values})


REFERENCES = [f"Step one makes {i} apples . Step two adds {i + 1} more , so {2 * i + 1} in all ." for i in range(20)]
UNRELATED = [f"Perhaps the weather will turn cold on day {i} or later" for i in range(20)]


def answers(predictions):
    return [{"id": i, "reference": r, "prediction": p} for i, (r, p) in enumerate(zip(REFERENCES, predictions))]


def run(m1=REFERENCES, m0=UNRELATED, reward=(0.75, 0.056), n=60, sft_losses=(2.0, 1.5, 1.2), constant_final=1.3,
        dpo_curve=(0.6, 0.7, 0.75)):
    metrics = pd.DataFrame(
        rows("M2", "reward", {"reward_accuracy": reward}, n)
        + rows("M0", "hellaswag", {"acc_norm": (0.4, (0.4 * 0.6 / n) ** 0.5)}, n))
    histories = {("q", "M1-cosine"): history("eval_loss", list(sft_losses)),
                 ("q", "M1-constant"): history("eval_loss", [2.0, 1.6, constant_final]),
                 ("b", "M1-other"): history("eval_loss", [10.0, 10.0, 10.0]),
                 ("q", "M2"): pd.DataFrame({"step": [0, 8, 16, 24],
                                            "eval_rewards/accuracies": [0.0] + list(dpo_curve)})}
    gsm8k = {("q", "M0"): answers(m0), ("q", "M1-cosine"): answers(m1), ("q", "M1-other"): answers(UNRELATED),
             ("b", "M0"): answers(UNRELATED), ("b", "M1-other"): answers(UNRELATED)}
    return {c.effect: c.holds for c in effects.check(CONFIG, metrics, histories, gsm8k)}


def test_a_run_showing_every_effect_passes_each_check():
    got = run()
    assert got and all(got.values()), got
    assert got["Q M1 beats Q M0 on bleu"] and got["DPO lifts reward accuracy above chance: Q M2"]
    assert set(got) >= {"SFT lowers the validation loss: q M1-cosine",
                        "cosine and constant end apart: q M1-cosine vs M1-constant",
                        "DPO validation reward accuracy rises above chance and stays: q M2",
                        "hellaswag rests on enough items"}
    # Only the M1 that DPO builds on is held to beating M0; a scratch model's runs to nothing.
    assert not any("other" in effect or effect.endswith(" b M1-other") for effect in got)


def test_each_missing_effect_fails_its_own_check():
    # M1 answering as M0 does: no gain on any overlap metric.
    assert [k for k, v in run(m1=UNRELATED).items() if not v] == [
        f"Q M1 beats Q M0 on {m}" for m in ("bleu", "rouge1", "rouge2", "rougeL")]
    # M1 right on question 0, M0 on question 1 instead: as good as each other, no gain.
    got = run(m1=REFERENCES[:1] + UNRELATED[1:], m0=UNRELATED[:1] + REFERENCES[1:2] + UNRELATED[2:])
    assert not any(got[f"Q M1 beats Q M0 on {m}"] for m in ("bleu", "rouge1", "rouge2", "rougeL"))
    # 0.55 with stderr 0.064: above 0.5 by less than one stderr; 0.60 with stderr 0.070 (the default's
    # M0 DPO at 50 pairs): by 1.4, short of two.
    assert not run(reward=(0.55, 0.064))["DPO lifts reward accuracy above chance: Q M2"]
    assert not run(reward=(0.60, 0.070))["DPO lifts reward accuracy above chance: Q M2"]
    assert run(reward=(0.65, 0.070))["DPO lifts reward accuracy above chance: Q M2"]
    # 40 items: too few (and stderr sqrt(0.24 / 40) = 0.077 too large).
    assert not run(n=40)["hellaswag rests on enough items"]
    # A 2 % drop is not a visible one (the bar is 5 %).
    assert not run(sft_losses=(2.0, 1.98, 1.96))["SFT lowers the validation loss: q M1-cosine"]
    # Ending below its first evaluation after step 0 (the tie at step 0 does not count), or at chance.
    assert not run(dpo_curve=(0.7, 0.7, 0.65))["DPO validation reward accuracy rises above chance and stays: q M2"]
    assert not run(dpo_curve=(0.5, 0.5, 0.5))["DPO validation reward accuracy rises above chance and stays: q M2"]
    # Schedules ending 0.001 apart look the same.
    assert not run(constant_final=1.201)["cosine and constant end apart: q M1-cosine vs M1-constant"]
