"""The evaluation tasks' runners, one per task of the registry (`study.TASKS`, which says what each
reads and writes): each runs on the scoring engine (`scoring`) and scores with the reference metric
definitions (`metrics`).

One job evaluates one model on one task (`evaluate_files`): HellaSwag (lm-eval's zero-shot acc and
acc_norm), MCQA (the answer letter's log-likelihood), GSM8K overlap (greedy answers against the
reference rationale by BLEU-4 and ROUGE), DPO reward accuracy against the parent, and perplexity.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from ..data import mixtures
from ..model.prompts import mcqa_prompt, pairs_cut_equal, preference_sequences
from ..study import DENSE, TASKS, Task
from . import metrics
from .scoring import context_length, generate, loglikelihoods, pad_token_id, score_sequences, windows

log = logging.getLogger(__name__)


def hellaswag(model, tokenizer, records: Sequence[dict], batch_size: int = 8) -> tuple[list[dict], dict]:
    """lm-eval's zero-shot HellaSwag: rows per item and {acc, acc_norm, n} (fractions)."""
    return _multiple_choice(model, tokenizer, [(r["query"], r["choices"], r["label"], r) for r in records],
                            batch_size, "label")


def mcqa(model, tokenizer, records: Sequence[dict], batch_size: int = 8) -> tuple[list[dict], dict]:
    """Multiple-choice QA as lm-eval scores ARC: the log-likelihood of each choice's own text after
    'Question: ...\nAnswer:'; rows and {acc, acc_norm, n} (fractions). The choices are not listed in
    the prompt, so a model cannot answer by preferring a letter: it is scored on what it knows."""
    return _multiple_choice(model, tokenizer, [(mcqa_prompt(r), r["choices"], r["answer"], r) for r in records],
                            batch_size, "answer")


def _multiple_choice(model, tokenizer, items: list[tuple], batch_size: int, key: str) -> tuple[list[dict], dict]:
    """(context, choices, label, record) items scored as lm-eval's multiple_choice output type."""
    requests = [(context, " " + choice) for context, choices, _, _ in items for choice in choices]
    lls = loglikelihoods(model, tokenizer, requests, batch_size)
    rows, k = [], 0
    for _context, choices, label, record in items:
        item = lls[k:k + len(choices)]
        k += len(choices)
        scores = metrics.choice_scores(item, choices, label)
        rows.append({"id": record.get("id"), key: label, "pred": scores["pred"], "pred_norm": scores["pred_norm"],
                     "acc": scores["acc"], "acc_norm": scores["acc_norm"], "loglikelihoods": item})
    return rows, _mean_summary(rows, ("acc", "acc_norm"))


def _mean_summary(rows: list[dict], keys: Iterable[str]) -> dict:
    """Means of per-item scores, their count, and their standard errors (`stderr`: metric → value)."""
    if not rows:
        raise ValueError("no records to evaluate")
    keys = list(keys)
    return {**{k: sum(r[k] for r in rows) / len(rows) for k in keys}, "n": len(rows),
            "stderr": {k: metrics.mean_stderr([r[k] for r in rows]) for k in keys}}


def gsm8k_overlap(model, tokenizer, records: Sequence[dict], max_new_tokens: int = 256,
                  batch_size: int = 8) -> tuple[list[dict], dict]:
    """Greedy answers to GSM8K questions scored against the full reference rationale by BLEU and ROUGE."""
    predictions = generate(model, tokenizer, records, max_new_tokens, batch_size)
    references = [r["answer"] for r in records]
    rows = [{"id": r.get("id"), "question": r["question"], "reference": ref, "prediction": pred}
            for r, ref, pred in zip(records, references, predictions)]
    rouge = metrics.rouge_items(predictions, references)
    summary = {"bleu": metrics.bleu(predictions, references), **metrics.rouge(predictions, references),
               "n": len(records),
               "stderr": {"bleu": metrics.bleu_stderr(predictions, references),
                          **{t: 100 * metrics.mean_stderr([item[t] for item in rouge]) for t in metrics.ROUGE_TYPES}}}
    return rows, summary


def pair_scores(model, tokenizer, records: Sequence[dict], batch_size: int = 8,
                max_length: int | None = None) -> dict:
    """Each preference pair's summed log-probabilities of its chosen and rejected answers given the chat
    prompt, cut at `max_length` as training cuts them: {"ids", "chosen", "rejected"}. A model's scores
    serve its own reward accuracy (as the policy) and its children's (as their reference)."""
    cut, need = pairs_cut_equal(tokenizer, records, max_length)
    if cut:
        log.warning("%d of %d pairs are cut at max_length=%s before their two sides differ: each counts as a tie "
                    "(not accurate); the longest pair needs %d tokens", cut, len(records), max_length, need)
    chosen, rejected = preference_sequences(tokenizer, records, max_length)
    scores = score_sequences(model, chosen + rejected, pad_token_id(tokenizer), batch_size, desc="pair log-probs")
    return {"ids": [r.get("id") for r in records], "chosen": scores[:len(chosen)], "rejected": scores[len(chosen):]}


def reward_accuracy(policy, ref, tokenizer, records: Sequence[dict], beta: float, batch_size: int = 8,
                    max_length: int | None = None) -> tuple[list[dict], dict]:
    """TRL's DPO reward accuracy of `policy` against `ref` (its parent), both scored here; the workflow
    scores each model once instead (`pair_scores`) and calls `reward_from_scores`."""
    return reward_from_scores(records, pair_scores(policy, tokenizer, records, batch_size, max_length),
                              pair_scores(ref, tokenizer, records, batch_size, max_length), beta)


def reward_from_scores(records: Sequence[dict], policy: dict, reference: dict, beta: float) -> tuple[list[dict], dict]:
    """TRL's DPO reward accuracy from the policy's and the reference's `pair_scores` of the same pairs:
    rows and a summary of reward_accuracy (a fraction), reward_margin, reward_chosen, reward_rejected,
    beta and n, with standard errors over pairs."""
    ids = [r.get("id") for r in records]
    for name, scores in (("policy", policy), ("reference", reference)):
        if scores["ids"] != ids:
            raise ValueError(f"the {name}'s pair scores are of other pairs than the {len(ids)} evaluated "
                             "(score the pairs again)")
    pc, pr, rc, rr = policy["chosen"], policy["rejected"], reference["chosen"], reference["rejected"]
    rows = [
        {"id": r.get("id"), "policy_chosen": a, "policy_rejected": b, "ref_chosen": c, "ref_rejected": d,
         "chosen_reward": beta * (a - c), "rejected_reward": beta * (b - d)}
        for r, a, b, c, d in zip(records, pc, pr, rc, rr)
    ]
    per_pair = [metrics.reward_accuracy([a], [b], [c], [d], beta) for a, b, c, d in zip(pc, pr, rc, rr)]
    stderr = {k: metrics.mean_stderr([p[k] for p in per_pair]) for k in per_pair[0]} if per_pair else {}
    summary = {**metrics.reward_accuracy(pc, pr, rc, rr, beta), "beta": beta, "n": len(rows), "stderr": stderr}
    return rows, summary


def perplexity(model, tokenizer, texts: Sequence[str], window: int, batch_size: int = 1) -> dict:
    """Perplexity of the texts joined by blank lines, over non-overlapping windows of `window` tokens.

    The text is encoded once (no special tokens) and cut into windows; within a window every token but
    the first is predicted from the tokens before it in that window. perplexity = exp(summed NLL /
    predicted tokens). Returns {perplexity, tokens (predicted), windows, window, text_tokens, nll} and
    the perplexity's standard error (a bootstrap over windows).
    """
    text = "\n\n".join(texts)
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    limit = context_length(model)
    if limit and window > limit:
        raise ValueError(f"window {window} is longer than the model's context ({limit})")
    parts = windows(ids, window)
    sequences = [(w, len(w) - 1) for w in parts]
    scores = score_sequences(model, sequences, pad_token_id(tokenizer), batch_size, desc="perplexity",
                             share_prefix=False)
    predicted = sum(n for _, n in sequences)
    nll = -sum(scores)
    stderr = metrics.perplexity_stderr([-s for s in scores], [n for _, n in sequences])
    return {"perplexity": metrics.perplexity(nll, predicted), "tokens": predicted, "windows": len(parts),
            "window": window, "text_tokens": len(ids), "nll": nll, "stderr": {"perplexity": stderr},
            "items": [{"window": i, "nll": -score, "tokens": n} for i, (score, (_, n)) in
                      enumerate(zip(scores, sequences))]}


# ---- the runners of the registered tasks ------------------------------------------------------


def _perplexity(model, tokenizer, records, settings, reference):
    """Rows per window (its summed NLL and predicted tokens): two forms of a model scored on the same
    windows are compared window by window (a paired standard error of their difference)."""
    summary = perplexity(model, tokenizer, [r["text"] for r in records], settings["window"], settings["batch_size"])
    return summary.pop("items"), {**summary, "n": summary["windows"]}


#: task name (`study.TASKS`) → run(model, tokenizer, records, settings, reference) → (rows, summary).
RUNNERS: dict[str, Callable] = {
    "hellaswag": lambda m, tok, records, s, ref: hellaswag(m, tok, records, s["batch_size"]),
    "gsm8k": lambda m, tok, records, s, ref: gsm8k_overlap(m, tok, records, s["max_new_tokens"], s["batch_size"]),
    "mcqa": lambda m, tok, records, s, ref: mcqa(m, tok, records, s["batch_size"]),
    "reward": lambda m, tok, records, s, ref: reward_accuracy(m, ref, tok, records, s["beta"], s["batch_size"],
                                                              s.get("max_length")),
    "perplexity": _perplexity,
}


def register(task: Task, runner: Callable) -> None:
    """Add an evaluation task to the registry with its runner (as `RUNNERS`'): what a module named in the
    config's `evaluation.include` does at import, so that a task is added without editing the package."""
    if task.name in TASKS:
        raise ValueError(f"evaluation task {task.name!r} is registered already")
    TASKS[task.name] = task
    RUNNERS[task.name] = runner


def evaluate_files(task: str, model_dir: str | Path, data_path: str | Path, out_csv: str | Path,
                   items_path: str | Path, *, model: str, variant: str, settings: dict, format: str = DENSE,
                   parent_dir: str | Path | None = None, adapter_dir: str | Path | None = None,
                   qlora: str | None = None) -> dict:
    """Evaluate one model (`variant` in `format`) on one task; write the tidy metric CSV and the per-item
    JSONL beside it.

    `settings`: batch_size, precision (the study's, zephyr/precision.py; float32 when absent), and the task's own
    (max_new_tokens for gsm8k, beta and max_length for reward, window for perplexity). Reward
    accuracy scores the model against `parent_dir`, its reference. With `adapter_dir`, the model is a
    QLoRA variant as trained: `model_dir` (its base) quantized as `qlora`, the adapter on top, unmerged.
    """
    from .. import files
    from .. import precision as precisions
    from ..model import modeldir
    from . import results

    if task not in TASKS:
        raise ValueError(f"unknown evaluation task {task!r}; known: {', '.join(TASKS)}")
    spec = TASKS[task]
    if spec.needs_parent and parent_dir is None:
        raise ValueError(f"{model} {variant}: {task} needs the parent model as reference")
    records = mixtures.read(data_path)
    precision = precisions.check("precision", settings.get("precision"))
    policy, tokenizer = modeldir.load_as_trained(model_dir, adapter_dir, qlora, precision) if adapter_dir else \
        modeldir.load(model_dir, dtype=precision["weights"])
    reference = modeldir.load(parent_dir, dtype=precision["weights"])[0] if spec.needs_parent else None
    where, name = policy.device.type, f"{variant} ({format})"
    log.info("%s %s: %s on %d records from %s, %s on %s", model, name, task, len(records), data_path,
             precisions.label(precision), where)
    with precisions.autocast(precision, where):
        rows, summary = RUNNERS[task](policy, tokenizer, records, {"batch_size": 8, **settings}, reference)
    files.write_jsonl(items_path, rows)
    results.write_metrics(out_csv, model, variant, format, task, summary, precisions.record(precision, where))
    log.info("%s %s %s: %s", model, name, task,
             ", ".join(f"{k}={v:.4g}" for k, v in summary.items() if isinstance(v, float)))
    return summary


def score_pairs_file(model_dir: str | Path, data_path: str | Path, out_path: str | Path, settings: dict) -> dict:
    """`pair_scores` of one model folder on the pairs in `data_path`, written to `out_path` (JSON) with
    what they were computed in; `settings` as the reward task's (batch_size, max_length, precision)."""
    from .. import files
    from .. import precision as precisions
    from ..model import modeldir

    records = mixtures.read(data_path)
    precision = precisions.check("precision", settings.get("precision"))
    model, tokenizer = modeldir.load(model_dir, dtype=precision["weights"])
    where = model.device.type
    log.info("%s: log-probabilities of %d pairs from %s, %s on %s", model_dir, len(records), data_path,
             precisions.label(precision), where)
    with precisions.autocast(precision, where):
        scores = pair_scores(model, tokenizer, records, settings.get("batch_size", 8), settings.get("max_length"))
    scores["computed_in"] = precisions.record(precision, where)
    files.write_json(out_path, scores)
    files.write_sidecar(out_path, {"model": str(model_dir), "data": str(data_path)})  # checked where it is read
    return scores


def reward_files(policy_scores: str | Path, reference_scores: str | Path, data_path: str | Path,
                 out_csv: str | Path, items_path: str | Path, *, model: str, variant: str, settings: dict) -> dict:
    """Reward accuracy from the policy's and its reference's pair scores (`score_pairs_file`): the tidy
    metric CSV and the per-pair JSONL, as `evaluate_files` writes them."""
    from .. import files
    from . import results

    for scores in (policy_scores, reference_scores):
        files.verify_file(scores)
    policy, reference = files.read_json(policy_scores), files.read_json(reference_scores)
    if policy["computed_in"]["dtype"] != reference["computed_in"]["dtype"] or \
            policy["computed_in"]["compute"] != reference["computed_in"]["compute"]:
        raise ValueError(f"{policy_scores} ({policy['computed_in']}) and {reference_scores} "
                         f"({reference['computed_in']}) were computed in different precisions")
    rows, summary = reward_from_scores(mixtures.read(data_path), policy, reference, settings["beta"])
    files.write_jsonl(items_path, rows)
    results.write_metrics(out_csv, model, variant, DENSE, "reward", summary, policy["computed_in"])
    log.info("%s %s reward: %s", model, variant,
             ", ".join(f"{k}={v:.4g}" for k, v in summary.items() if isinstance(v, float)))
    return summary
