"""zephyr.evaluation.tasks on tiny offline Qwen2 models (the scoring engine under them: test_scoring.py):
scores equal hand computations and lm-evaluation-harness's own results."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

import tinymodels
from test_scoring import QUESTIONS
from zephyr.data import formats
from zephyr.evaluation import metrics, scoring, tasks
from zephyr.model import modeldir, prompts

REFERENCE = Path(__file__).resolve().parent / "fixtures" / "reference"
pytestmark = pytest.mark.usefixtures("one_thread")


def test_hellaswag_scores_choices_as_the_harness(lm):
    model, tok = lm
    records = [
        {"id": "h0", "query": "Math: What is 3 plus 4? The answer",
         "choices": ["is 7.", "is 8. wrong", "no", "yes yes"], "label": 0},
        {"id": "h1", "query": "Math: What is 1 plus 1?",
         "choices": ["The answer is 2.", "2", "Correct", "no"], "label": 3},
    ]
    rows, summary = tasks.hellaswag(model, tok, records, batch_size=3)
    for r, row in zip(records, rows):
        lls = scoring.loglikelihoods(model, tok, [(r["query"], " " + c) for c in r["choices"]], 1)
        assert row["loglikelihoods"] == pytest.approx(lls, abs=1e-5)
        expected = metrics.choice_scores(lls, r["choices"], r["label"])
        assert (row["acc"], row["acc_norm"]) == (expected["acc"], expected["acc_norm"])
    stderr = summary.pop("stderr")
    assert summary == {"acc": sum(r["acc"] for r in rows) / 2, "acc_norm": sum(r["acc_norm"] for r in rows) / 2, "n": 2}
    for key in ("acc", "acc_norm"):  # binomial: sqrt(p (1 - p) / (n - 1)) with n = 2
        assert stderr[key] == pytest.approx((summary[key] * (1 - summary[key]) / 1) ** 0.5)


@pytest.mark.parametrize("run", ["plain", "bos"])
def test_hellaswag_matches_lm_eval(run, monkeypatch):
    """Zephyr's HellaSwag (formatter, requests, scoring, acc and acc_norm) against lm-evaluation-harness's own
    run on the same rows and model, recorded by fixtures/reference/make_lm_eval_hellaswag.py; "bos": with a
    tokenizer that prepends a BOS token."""
    reference = json.loads((REFERENCE / "lm_eval_hellaswag.json").read_text())
    expected, items = reference["runs"][run], reference["runs"][run]["items"]
    model, _ = modeldir.load(REFERENCE / reference["model"], "cpu")
    tok = modeldir.load_tokenizer(REFERENCE / expected["tokenizer"])
    records = list(formats.format_rows(reference["rows"], "hellaswag", dataset="hellaswag", origin="lm-eval fixture"))
    sent, score = [], tasks.loglikelihoods
    monkeypatch.setattr(tasks, "loglikelihoods", lambda m, t, reqs, b: sent.extend(reqs) or score(m, t, reqs, b))
    rows, summary = tasks.hellaswag(model, tok, records, batch_size=8)
    assert [r["label"] for r in records] == [item["gold"] for item in items]
    assert sent == [tuple(request) for item in items for request in item["requests"]]
    for row, item in zip(rows, items, strict=True):
        assert row["loglikelihoods"] == pytest.approx(item["loglikelihoods"], rel=1e-6, abs=1e-4)
        assert (row["acc"], row["acc_norm"]) == (item["acc"], item["acc_norm"])
    for key in ("acc", "acc_norm"):
        assert summary[key] == pytest.approx(expected["summary"][key], abs=1e-12)
        assert summary["stderr"][key] == pytest.approx(expected["summary"][f"{key}_stderr"], rel=1e-9)


def test_mcqa_scores_each_choice_s_text_as_lm_eval_scores_arc(lm):
    """lm-eval's arc_easy: doc_to_text "Question: {{question}}\nAnswer:", doc_to_choice the choices' texts,
    target_delimiter " "; acc the highest log-likelihood, acc_norm the highest per character."""
    model, tok = lm
    record = {"id": "m0", "question": "What is 3 plus 4?", "choices": ["7", "eight", "The answer is 9"], "answer": 0}
    prompt = prompts.mcqa_prompt(record)
    assert prompt == "Question: What is 3 plus 4?\nAnswer:"
    rows, summary = tasks.mcqa(model, tok, [record], batch_size=2)
    lls = scoring.loglikelihoods(model, tok, [(prompt, " 7"), (prompt, " eight"), (prompt, " The answer is 9")], 1)
    assert rows[0]["loglikelihoods"] == pytest.approx(lls, abs=1e-5)
    assert summary["acc"] == float(max(range(3), key=lambda i: lls[i]) == 0) and summary["n"] == 1
    lengths = [1, 5, 15]
    assert summary["acc_norm"] == float(max(range(3), key=lambda i: lls[i] / lengths[i]) == 0)


def test_generation_prompts_are_training_prompts(lm):
    _, tok = lm
    record = {"instruction": "What is 3 plus 4?", "input": "Correct", "system": "no", "output": "7"}
    expected = [{"role": "system", "content": "no"}, {"role": "user", "content": "What is 3 plus 4?\nCorrect"}]
    assert prompts.chat_messages(record) == expected
    assert prompts.examples("sft", [record])[0]["prompt"] == expected  # what SFT trained on
    # the same ids as TRL's tokenization of the training prompt
    assert prompts.prompt_ids(tok, prompts.chat_messages(record)) == list(tok.apply_chat_template(
        expected, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])
    assert prompts.chat_messages({"question": "What is 1 plus 2?", "answer": "3", "final": "3"}) == [
        {"role": "user", "content": "What is 1 plus 2?"}]
    assert prompts.chat_messages("yes") == [{"role": "user", "content": "yes"}]


def test_gsm8k_overlap(lm):
    model, tok = lm
    records = [{"id": f"g{i}", "question": q, "answer": f"{i} plus {i} is {2 * i}\n#### {2 * i}", "final": str(2 * i)}
               for i, q in enumerate(QUESTIONS[:3])]
    rows, summary = tasks.gsm8k_overlap(model, tok, records, max_new_tokens=8, batch_size=2)
    assert [r["prediction"] for r in rows] == scoring.generate(model, tok, records, 8, 1)
    assert [r["reference"] for r in rows] == [r["answer"] for r in records]
    assert summary["n"] == 3 and set(summary) == {"bleu", "rouge1", "rouge2", "rougeL", "n", "stderr"}
    assert all(math.isfinite(value) for value in summary["stderr"].values()), summary


def test_gsm8k_overlap_scores_and_standard_errors(monkeypatch):
    """The scores and their standard errors on answers that overlap their references in part, against
    sacrebleu's own corpus BLEU (no smoothing, 13a) over the same bootstrap resamples and the textbook
    standard error of a mean: finite, non-zero, and equal."""
    import numpy as np
    from sacrebleu.metrics.bleu import BLEU

    refs = ["He sold 48 clips in April and 24 in May, so 72 clips in all.\n#### 72",
            "She earns 12 dollars an hour, so 50 minutes pay 10 dollars.\n#### 10",
            "Betty has 50 dollars and needs 100, so she needs 5 more after gifts.\n#### 5",
            "Julie read 12 pages yesterday and 24 today, 36 pages in all.\n#### 36"]
    preds = ["He sold 48 clips in April and 24 in May, so 72 clips.\n#### 72",
             "She earns 12 dollars an hour, so she earns 10 dollars.\n#### 10",
             "Betty has 50 dollars and needs 100 dollars.\n#### 50",
             "Julie read 12 pages and then 24 pages today.\n#### 36"]
    records = [{"id": f"g{i}", "question": f"Q{i}?", "answer": ref} for i, ref in enumerate(refs)]
    monkeypatch.setattr(tasks, "generate", lambda model, tok, items, *args: preds[:len(items)])
    rows, summary = tasks.gsm8k_overlap(None, None, records)
    assert [r["prediction"] for r in rows] == preds and [r["reference"] for r in rows] == refs
    stderr = summary.pop("stderr")

    sacre = BLEU(tokenize="13a", smooth_method="none")
    assert summary["bleu"] == pytest.approx(sacre.corpus_score(preds, [refs]).score, rel=1e-9)
    samples = np.random.default_rng(1234).integers(0, len(refs), size=(1000, len(refs)))  # bleu_stderr's draws
    scores = [sacre.corpus_score([preds[i] for i in idx], [[refs[i] for i in idx]]).score for idx in samples]
    assert stderr["bleu"] == pytest.approx(float(np.std(scores, ddof=1)), rel=1e-9) and stderr["bleu"] > 1

    items = metrics.rouge_items(preds, refs)  # rouge_score's F-measures (test_metrics: as evaluate's)
    for key in ("rouge1", "rouge2", "rougeL"):
        values = [100 * item[key] for item in items]
        assert summary[key] == pytest.approx(sum(values) / len(values))
        assert stderr[key] == pytest.approx(float(np.std(values, ddof=1)) / len(values) ** 0.5) and stderr[key] > 0


def test_perplexity_full_window_equals_exp_mean_nll(lm):
    model, tok = lm
    texts = ["What is 3 plus 4? The answer is 7.", "", "Correct yes no What is 19 plus 2?"]
    ids = tok.encode("\n\n".join(texts), add_special_tokens=False)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    nll = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:]), reduction="mean").item()
    got = tasks.perplexity(model, tok, texts, window=len(ids))
    assert got["perplexity"] == pytest.approx(math.exp(nll), rel=1e-4)
    assert (got["tokens"], got["windows"], got["text_tokens"]) == (len(ids) - 1, 1, len(ids))


def test_perplexity_windows_partition_the_tokens(lm):
    model, tok = lm
    texts = ["What is 3 plus 4? The answer is 7."] * 4
    ids = tok.encode("\n\n".join(texts), add_special_tokens=False)
    window = 7
    parts = scoring.windows(ids, window)
    assert sum(parts, []) == ids and all(len(p) == window for p in parts[:-1]) and 0 < len(parts[-1]) <= window
    nll = 0.0
    for part in parts:  # each window on its own, no context from the one before
        if len(part) > 1:
            nll -= tinymodels.manual_logprob(model, part, len(part) - 1)
    got = tasks.perplexity(model, tok, texts, window=window, batch_size=3)
    assert got["windows"] == len(parts) and got["tokens"] == len(ids) - len(parts)
    assert got["perplexity"] == pytest.approx(math.exp(nll / got["tokens"]), rel=1e-4)
    assert tasks.perplexity(model, tok, texts, window=window, batch_size=1)["perplexity"] == pytest.approx(
        got["perplexity"], rel=1e-6)
    assert got["stderr"]["perplexity"] > 0  # windows differ: their bootstrap spreads


PAIRS = [
    {"id": "p0", "instruction": "What is 3 plus 4?", "input": "", "chosen": "The answer is 7.", "rejected": "no"},
    {"id": "p1", "instruction": "What is 1 plus 2?", "input": "Correct", "chosen": "3", "rejected": "The answer is 4.",
     "system": "yes"},
    {"id": "p2", "instruction": "What is 5 plus 5?", "input": "", "chosen": "10", "rejected": "11",
     "history": [["What is 1 plus 1?", "2"]]},
]


def test_preference_tokenization_matches_trl(lm):
    _, tok = lm
    from trl.data_utils import _tokenize, common_prefix_length

    from zephyr.model.prompts import examples

    chosen, rejected = prompts.preference_sequences(tok, PAIRS)
    for example, (c_tokens, c_n), (r_tokens, r_n) in zip(examples("dpo", PAIRS), chosen, rejected):
        # trl 1.16 trainer/dpo_trainer.py, DPOTrainer._prepare_dataset.tokenize_fn (conversational branch)
        prompt_ids = _tokenize(tok, example["prompt"], add_generation_prompt=True, tools=None)["input_ids"]
        prompt_chosen_ids = _tokenize(tok, example["prompt"] + example["chosen"], tools=None)["input_ids"]
        prompt_rejected_ids = _tokenize(tok, example["prompt"] + example["rejected"], tools=None)["input_ids"]
        prompt_len = min(common_prefix_length(prompt_ids, prompt_chosen_ids),
                         common_prefix_length(prompt_ids, prompt_rejected_ids))
        assert c_tokens == prompt_ids[:prompt_len] + prompt_chosen_ids[prompt_len:]
        assert c_n == len(prompt_chosen_ids[prompt_len:])
        assert r_tokens == prompt_ids[:prompt_len] + prompt_rejected_ids[prompt_len:]
        assert r_n == len(prompt_rejected_ids[prompt_len:])
    assert tok.decode(chosen[0][0][-chosen[0][1]:]) == "The answer is 7.<|im_end|>\n"


def test_pair_scores_equal_manual_forward(lm):
    model, tok = lm
    scores = tasks.pair_scores(model, tok, PAIRS, batch_size=4)
    chosen, rejected = scores["chosen"], scores["rejected"]
    assert scores["ids"] == [p.get("id") for p in PAIRS]
    seq_c, seq_r = prompts.preference_sequences(tok, PAIRS)
    for value, (tokens, n) in zip(chosen + rejected, seq_c + seq_r):
        assert value == pytest.approx(tinymodels.manual_logprob(model, tokens, n), abs=1e-4)
    again = tasks.pair_scores(model, tok, PAIRS, batch_size=1)
    assert (again["chosen"], again["rejected"]) == (pytest.approx(chosen, abs=1e-5), pytest.approx(rejected, abs=1e-5))


def test_reward_accuracy_of_a_model_against_itself_is_zero(lm):
    model, tok = lm
    rows, summary = tasks.reward_accuracy(model, model, tok, PAIRS, beta=0.1, batch_size=4)
    assert summary["reward_accuracy"] == 0.0 and summary["reward_margin"] == 0.0 and summary["n"] == len(PAIRS)
    assert all(r["chosen_reward"] == 0.0 == r["rejected_reward"] for r in rows)


def test_reward_accuracy_against_another_model(lm, tmp_path):
    model, tok = lm
    ref, _ = modeldir.load(tinymodels.qwen2(tmp_path / "ref", seed=1), "cpu")
    rows, summary = tasks.reward_accuracy(model, ref, tok, PAIRS, beta=0.5, batch_size=2)
    policy, reference = tasks.pair_scores(model, tok, PAIRS), tasks.pair_scores(ref, tok, PAIRS)
    pc, pr, rc, rr = policy["chosen"], policy["rejected"], reference["chosen"], reference["rejected"]
    stderr = summary.pop("stderr")
    assert summary == pytest.approx({**metrics.reward_accuracy(pc, pr, rc, rr, 0.5), "beta": 0.5, "n": 3}, abs=1e-5)
    wins = [0.5 * (a - c) > 0.5 * (b - d) for a, b, c, d in zip(pc, pr, rc, rr)]
    p = sum(wins) / 3
    assert stderr["reward_accuracy"] == pytest.approx((p * (1 - p) / 2) ** 0.5, abs=1e-9)


def test_reward_from_each_model_s_pair_scores_equals_scoring_both_in_one_job(lively_dir, tmp_path):
    """The workflow scores each model once (score_pairs) and computes reward accuracy from the policy's and
    its reference's files: the same rows and summary, to the bit, as scoring both models in one job."""
    other = tinymodels.qwen2(tmp_path / "ref", seed=1)
    data = tmp_path / "pairs.json"
    data.write_text(json.dumps(PAIRS))
    settings = {"beta": 0.5, "batch_size": 2, "max_length": None}
    for name, folder in (("policy", lively_dir), ("reference", other)):
        tasks.score_pairs_file(folder, data, tmp_path / f"{name}.json", settings)
    summary = tasks.reward_files(tmp_path / "policy.json", tmp_path / "reference.json", data, tmp_path / "r.csv",
                                 tmp_path / "r.jsonl", model="tiny", variant="M1", settings=settings)
    rows, direct = tasks.reward_accuracy(modeldir.load(lively_dir, "cpu")[0], modeldir.load(other, "cpu")[0],
                                         modeldir.load_tokenizer(lively_dir), PAIRS, 0.5, batch_size=2)
    assert summary == direct
    assert [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()] == rows
    assert set(pd.read_csv(tmp_path / "r.csv")["dtype"]) == {"float32"}
    (tmp_path / "fewer.json").write_text(json.dumps(PAIRS[:2]))  # scores of other pairs than those evaluated
    with pytest.raises(ValueError, match="pair scores are of other pairs"):
        tasks.reward_files(tmp_path / "policy.json", tmp_path / "reference.json", tmp_path / "fewer.json",
                           tmp_path / "x.csv", tmp_path / "x.jsonl", model="tiny", variant="M1", settings=settings)


@pytest.mark.parametrize("precision, expected, autocast", [
    ({"weights": "float32", "compute": "plain"}, torch.float32, False),
    ({"weights": "bfloat16", "compute": "plain"}, torch.bfloat16, False),
    ({"weights": "float32", "compute": "bf16-autocast"}, torch.float32, True),
])
def test_evaluation_loads_and_computes_in_the_study_precision_and_records_it(lively_dir, tmp_path, monkeypatch,
                                                                             caplog, precision, expected, autocast):
    """The dense model and its reference load in the precision's weights dtype, the task runs under bf16
    autocast only when the precision says so, and every metric row records dtype, compute and device."""
    loaded, real_load = [], modeldir.load
    autocasting, real_runner = [], tasks.RUNNERS["reward"]

    def spy(*args, **kwargs):
        model, tokenizer = real_load(*args, **kwargs)
        loaded.append(model.dtype)
        return model, tokenizer

    def runner(*args):
        autocasting.append(torch.is_autocast_enabled("cpu"))
        return real_runner(*args)

    monkeypatch.setattr(modeldir, "load", spy)
    monkeypatch.setitem(tasks.RUNNERS, "reward", runner)
    data = tmp_path / "pairs.json"
    data.write_text(json.dumps(PAIRS))
    caplog.set_level("INFO", logger="zephyr.evaluation.tasks")
    summary = tasks.evaluate_files("reward", lively_dir, data, tmp_path / "m.csv", tmp_path / "m.jsonl", model="tiny",
                                   variant="M1", settings={"beta": 0.5, "precision": precision}, parent_dir=lively_dir)
    assert loaded == [expected, expected] and autocasting == [autocast]
    rows = pd.read_csv(tmp_path / "m.csv")
    assert set(rows["dtype"]) == {precision["weights"]} and set(rows["compute"]) == {precision["compute"]}
    assert set(rows["device"]) == {"cpu"}
    assert summary["n"] == len(PAIRS)
