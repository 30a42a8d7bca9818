"""zephyr.evaluation.metrics against the reference code itself (HF evaluate's bleu and rouge scripts, TRL's lines),
hand-worked examples and the reference sources."""

import json
import math
import random
import re
from pathlib import Path

import pytest

from conftest import FIXTURES
from zephyr.evaluation import metrics

# --------------------------------------------------------------------------------------------------
# BLEU and ROUGE: HF evaluate's own metric scripts (`bleu`, `rouge`), vendored in
# fixtures/reference/evaluate_metrics (origin in the README there) and loaded by `evaluate.load` from that
# local path, offline: evaluate's bleu = TF-NMT compute_bleu on tokenizer_13a tokens, max_order 4, no smoothing.

EVALUATE_METRICS = FIXTURES / "reference" / "evaluate_metrics"


def load_evaluate(name):
    import evaluate

    return evaluate.load(str(EVALUATE_METRICS / name), keep_in_memory=True)


@pytest.fixture(scope="module")
def hf_bleu():
    return load_evaluate("bleu")


@pytest.fixture(scope="module")
def hf_rouge():
    return load_evaluate("rouge")


BLEU_CASES = [
    (["the cat sat on the mat"], ["the cat sat on the mat"]),
    (["the cat sat on the mat"], ["the cat sat on a mat"]),
    (["the cat sat on"], ["the cat sat on the mat"]),
    (["He paid $21.0 per kg, so 7*21.0=147.0 in all.", "It costs 1,000.50 dollars!"],
     ["So it cost 15+6.0=21.0 per kg and 21.0*7=147.0 in all.", "It costs 1,000.50 dollars."]),
    (["a b c d e f", "x y"], ["a b c d e f g h i j", "x y z"]),  # corpus-level brevity penalty
    (["a b c", "d e"], ["a b c", "d e"]),  # no 4-gram anywhere: precision 0 -> 0
    (["one two three four five", "completely unrelated words here"],
     ["one two three four six", "nothing in common at all"]),
    (["Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72"],
     ["Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72"]),
    (["w x y z w x y z"], ["w x y z"]),  # clipping: longer candidate repeating the reference
    (["", "a b c d e"], ["a b c d", "a b c d e"]),  # an empty prediction
]


GSM8K_ANSWERS = [json.loads(line)["answer"] for line in (FIXTURES / "datasets" / "gsm8k_test.jsonl").open()]
GSM8K_CASES = [  # model-like answers against the full reference rationales, as gsm8k_overlap scores them
    ([re.sub(r"<<[^<>]*>>", "", a) for a in GSM8K_ANSWERS], GSM8K_ANSWERS),  # no calculator annotations
    ([a.split("####")[-1].strip() for a in GSM8K_ANSWERS], GSM8K_ANSWERS),  # the final number alone
    ([a.replace(" ", "  ").replace("\n", "-\n") + "\n" for a in GSM8K_ANSWERS[::-1]], GSM8K_ANSWERS),  # wrong pairs
]


@pytest.mark.parametrize("predictions, references", BLEU_CASES + GSM8K_CASES)
def test_bleu_matches_evaluate(hf_bleu, predictions, references):
    expected = 100 * hf_bleu.compute(predictions=predictions, references=references)["bleu"]
    assert metrics.bleu(predictions, references) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_bleu_of_no_tokens_is_zero_where_evaluate_raises(hf_bleu):
    """Predictions (or references) that are all empty after 13a: TF-NMT's compute_bleu divides by their total
    length and raises; Zephyr scores 0, as the brevity penalty's limit."""
    with pytest.raises(ZeroDivisionError):
        hf_bleu.compute(predictions=["", " "], references=["a b", "c"])
    assert metrics.bleu(["", " "], ["a b", "c"]) == 0.0
    assert metrics.bleu(["a b"], ["\n"]) == 0.0


def test_bleu_hand_worked():
    # "the cat sat on the mat" vs "the cat sat on a mat": clipped precisions 5/6, 3/5, 2/4, 1/3; c = r = 6:
    # 100 x (1/12)^(1/4) = 53.7285 (by hand: 12^(1/4) = 1.86121).
    got = metrics.bleu(["the cat sat on the mat"], ["the cat sat on a mat"])
    assert got == pytest.approx(100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25)
    assert got == pytest.approx(53.7285, abs=1e-4)
    # All precisions 1, c = 4 < r = 6: brevity penalty exp(1 - 6/4).
    assert metrics.bleu(["the cat sat on"], ["the cat sat on the mat"]) == pytest.approx(100 * math.exp(-0.5))
    # Identical corpus: 100. A missing n-gram order: 0.
    assert metrics.bleu(["a b c d", "e f g h i"], ["a b c d", "e f g h i"]) == pytest.approx(100.0)
    assert metrics.bleu(["a b c"], ["a b c"]) == 0.0
    assert metrics.bleu(["p q r s"], ["w x y z"]) == 0.0
    # 13a splits punctuation but keeps "21.0" and "1,000" whole (a period or comma between digits).
    assert metrics.tokenize_13a("It cost $21.0, i.e. 1,000.") == [
        "It", "cost", "$", "21.0", ",", "i", ".", "e", ".", "1,000", "."]


def test_bleu_tokenizes_as_evaluate_not_as_sacrebleu(hf_bleu):
    """sacrebleu rstrips a segment before 13a; evaluate does not, and 13a deletes a "-\\n"."""
    from sacrebleu.metrics.bleu import BLEU

    pred, ref = ["one two three four five-\n"], ["one two three four five"]
    assert metrics.tokenize_13a(pred[0]) == ref[0].split()
    assert metrics.bleu(pred, ref) == pytest.approx(100.0) == pytest.approx(
        100 * hf_bleu.compute(predictions=pred, references=ref)["bleu"])
    plain = BLEU(tokenize="13a", smooth_method="none").corpus_score(pred, [ref]).score
    assert plain < 100.0  # sacrebleu alone sees "five-" here


def test_bleu_rejects_bad_input():
    with pytest.raises(ValueError):
        metrics.bleu(["a"], ["a", "b"])
    with pytest.raises(TypeError):
        metrics.bleu(["a"], [["a", "b"]])


# --------------------------------------------------------------------------------------------------
# ROUGE: rouge_score F-measures, use_stemmer=False (evaluate's default), plain mean, x100.


def test_rouge_matches_evaluate(hf_rouge):
    """evaluate's per-pair F-measures (use_aggregator=False); Zephyr averages them by a plain mean where
    evaluate's default reports a random bootstrap's median."""
    preds = ["The cat sat on the mat.", "Hello, World!", "cats are running", "a b c d", ""] + GSM8K_CASES[0][0]
    refs = ["the cat was sitting on a mat", "hello world", "the cat runs", "d c b a", "nothing"] + GSM8K_ANSWERS
    expected = hf_rouge.compute(predictions=preds, references=refs, rouge_types=list(metrics.ROUGE_TYPES),
                                use_aggregator=False)
    items, means = metrics.rouge_items(preds, refs), metrics.rouge(preds, refs)
    assert means.keys() == expected.keys()
    for key in expected:
        assert [item[key] for item in items] == pytest.approx(expected[key], rel=1e-12)
        assert means[key] == pytest.approx(100 * sum(expected[key]) / len(preds), rel=1e-12)


def test_rouge_hand_worked():
    # "the cat sat" vs "the cat sat on the mat": unigrams P = 3/3, R = 3/6 -> F = 2/3; bigrams P = 2/2,
    # R = 2/5 -> F = 4/7; LCS 3 -> F = 2/3. "Hello, World!" vs "hello world": lowercased, punctuation
    # dropped -> 1 everywhere. Means of the two pairs, x100.
    got = metrics.rouge(["the cat sat", "Hello, World!"], ["the cat sat on the mat", "hello world"])
    assert got["rouge1"] == pytest.approx(100 * (2 / 3 + 1) / 2)
    assert got["rouge2"] == pytest.approx(100 * (4 / 7 + 1) / 2)
    assert got["rougeL"] == pytest.approx(100 * (2 / 3 + 1) / 2)
    # No stemming: "cats" does not match "cat".
    assert metrics.rouge(["cats"], ["cat"])["rouge1"] == 0.0


# --------------------------------------------------------------------------------------------------
# Multiple choice: lm-evaluation-harness's acc / acc_norm.


def test_choice_scores_hand_worked():
    choices = ["a" * 10, "b" * 4, "c" * 20, "d" * 60]
    lls = [-10.0, -9.0, -15.0, -30.0]
    # acc: argmax(lls) = 1. acc_norm: lls / len = -1.0, -2.25, -0.75, -0.5 -> argmax 3.
    assert metrics.choice_scores(lls, choices, 3) == {"acc": 0.0, "acc_norm": 1.0, "pred": 1, "pred_norm": 3}
    assert metrics.choice_scores(lls, choices, 1) == {"acc": 1.0, "acc_norm": 0.0, "pred": 1, "pred_norm": 3}


def test_choice_scores_divide_by_the_choice_without_the_delimiter():
    # The harness scores " " + choice but divides by len(choice): -2.0/1 = -2.0 < -4.1/3 = -1.367 -> 1.
    # Dividing by len(" " + choice) would give -1.0 > -1.025 -> 0.
    assert metrics.choice_scores([-2.0, -4.1], ["a", "abc"], 1)["acc_norm"] == 1.0


def test_choice_scores_ties_go_to_the_first_choice():
    scores = metrics.choice_scores([-1.0, -1.0], ["xy", "zw"], 0)
    assert scores == {"acc": 1.0, "acc_norm": 1.0, "pred": 0, "pred_norm": 0}


# --------------------------------------------------------------------------------------------------
# DPO reward accuracy: TRL 1.16's DPOTrainer._compute_loss.

TRL_LINES = [
    "chosen_logratios = chosen_logps - ref_chosen_logps",
    "rejected_logratios = rejected_logps - ref_rejected_logps",
    "chosen_rewards = self.beta * chosen_logratios.detach()",
    "rejected_rewards = self.beta * rejected_logratios.detach()",
    "reward_accuracies = (chosen_rewards > rejected_rewards).float()",
    "margins = chosen_rewards - rejected_rewards",
]


def test_trl_still_computes_rewards_this_way():
    import trl

    source = (Path(trl.__file__).parent / "trainer" / "dpo_trainer.py").read_text()
    for line in TRL_LINES:
        assert line in source, line


def test_reward_accuracy_matches_trl():
    import torch

    g = torch.Generator().manual_seed(0)
    chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps = (
        -50 * torch.rand(64, generator=g, dtype=torch.float32) for _ in range(4))
    # a tie (both rewards 0): TRL's strict inequality does not count it
    chosen_logps[0], ref_chosen_logps[0], rejected_logps[0], ref_rejected_logps[0] = -3.0, -3.0, -5.0, -5.0
    beta = 0.1
    # trl/trainer/dpo_trainer.py (1.16), DPOTrainer._compute_loss, the lines listed in TRL_LINES:
    chosen_logratios = chosen_logps - ref_chosen_logps
    rejected_logratios = rejected_logps - ref_rejected_logps
    chosen_rewards = beta * chosen_logratios.detach()
    rejected_rewards = beta * rejected_logratios.detach()
    trl_accuracy = (chosen_rewards > rejected_rewards).float().mean().item()
    trl_margin = (chosen_rewards - rejected_rewards).mean().item()

    got = metrics.reward_accuracy(chosen_logps.tolist(), rejected_logps.tolist(), ref_chosen_logps.tolist(),
                                  ref_rejected_logps.tolist(), beta)
    assert got["reward_accuracy"] == pytest.approx(trl_accuracy, abs=1e-12)
    assert got["reward_margin"] == pytest.approx(trl_margin, rel=1e-5)
    assert got["reward_chosen"] == pytest.approx(chosen_rewards.mean().item(), rel=1e-5)


def test_reward_accuracy_hand_worked():
    # rewards: chosen 0.1*(-1+3) = 0.2, rejected 0.1*(-2+2) = 0 -> correct; chosen 0, rejected 0 -> tie, not
    # counted; chosen -0.1, rejected 0.1 -> wrong. Accuracy 1/3, margin (0.2 + 0 - 0.2)/3 = 0.
    got = metrics.reward_accuracy([-1, -4, -6], [-2, -7, -1], [-3, -4, -5], [-2, -7, -2], beta=0.1)
    assert got["reward_accuracy"] == pytest.approx(1 / 3)
    assert got["reward_margin"] == pytest.approx(0.0, abs=1e-12)


def test_perplexity():
    assert metrics.perplexity(20.0, 10) == pytest.approx(math.exp(2.0))
    with pytest.raises(ValueError):
        metrics.perplexity(1.0, 0)


def test_perplexity_stderr_is_the_delta_method_s_for_many_windows():
    """Windows of equal length: perplexity = exp(mean per-token NLL), so its standard error is about
    perplexity x (standard deviation of the windows' per-token NLL) / sqrt(windows)."""
    import random

    rng = random.Random(0)
    tokens = [255] * 400
    per_token = [2.0 + rng.gauss(0, 0.3) for _ in tokens]
    nlls = [x * n for x, n in zip(per_token, tokens)]
    ppl = math.exp(sum(nlls) / sum(tokens))
    mean = sum(per_token) / len(per_token)
    sd = math.sqrt(sum((x - mean) ** 2 for x in per_token) / (len(per_token) - 1))
    assert metrics.perplexity_stderr(nlls, tokens) == pytest.approx(ppl * sd / math.sqrt(len(tokens)), rel=0.1)
    assert metrics.perplexity_stderr([510.0] * 5, [255] * 5) == pytest.approx(0.0, abs=1e-12)  # nothing varies
    assert math.isnan(metrics.perplexity_stderr([510.0], [255]))


# ---- standard errors, as lm-evaluation-harness reports them ----------------------------------------


def test_mean_stderr_of_accuracies_is_binomial():
    values = [1.0] * 30 + [0.0] * 70
    p, n = 0.3, 100
    assert metrics.mean_stderr(values) == pytest.approx(math.sqrt(p * (1 - p) / (n - 1)), rel=1e-12)
    assert math.isnan(metrics.mean_stderr([1.0]))


def test_bleu_stderr_equals_a_bootstrap_of_the_whole_metric():
    """Summing per-item statistics gives exactly the corpus BLEU of each resample, so the fast bootstrap
    equals rescoring every resample with `bleu` itself (same resampled indices)."""
    import numpy as np

    rng = random.Random(5)
    words = "the total is 12 apples then she gives 4 so 8 are left answer".split()
    refs = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 30))) for _ in range(40)]
    preds = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 30))) for _ in range(40)]
    samples = np.random.default_rng(1234).integers(0, 40, size=(50, 40))
    slow = [metrics.bleu([preds[i] for i in idx], [refs[i] for i in idx]) for idx in samples]
    assert metrics.bleu_stderr(preds, refs, iterations=50) == pytest.approx(float(np.std(slow, ddof=1)), rel=1e-9)
    # Paired: the difference from another system's answers, rescored on the same resamples.
    other = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 30))) for _ in range(40)]
    diffs = [a - metrics.bleu([other[i] for i in idx], [refs[i] for i in idx]) for a, idx in zip(slow, samples)]
    assert metrics.bleu_stderr(preds, refs, iterations=50, baseline=other) == pytest.approx(
        float(np.std(diffs, ddof=1)), rel=1e-9)
    assert metrics.bleu_stderr(preds, refs, iterations=50, baseline=preds) == 0.0
    # Against a model that answered nothing (BLEU 0 on every resample): the answering side's own spread.
    assert metrics.bleu_stderr(preds, refs, iterations=50, baseline=[""] * 40) == pytest.approx(
        float(np.std(slow, ddof=1)), rel=1e-9)


def test_rouge_items_average_to_rouge():
    preds, refs = ["the cat sat on the mat", "a dog"], ["the cat is on the mat", "the dog barks"]
    items = metrics.rouge_items(preds, refs)
    assert metrics.rouge(preds, refs) == pytest.approx({t: 100 * sum(i[t] for i in items) / 2 for t in items[0]})
