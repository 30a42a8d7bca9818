"""Metric definitions, model-free: each one matches a named reference implementation exactly.

- `bleu`: HF evaluate's `bleu` metric (metrics/bleu/bleu.py, which runs TensorFlow-NMT's
  `compute_bleu` from metrics/bleu/nmt_bleu.py on `tokenizer_13a` tokens), x100.
- `rouge`: HF evaluate's `rouge` metric (metrics/rouge/rouge.py: rouge_score's RougeScorer, F-measures),
  averaged by a plain mean instead of evaluate's random bootstrap, x100.
- `choice_scores`: lm-evaluation-harness's `multiple_choice` process_results (acc, acc_norm).
- `reward_accuracy`: TRL 1.16 DPOTrainer's `rewards/accuracies` and `rewards/margins`.
- `perplexity`: exp of the mean token negative log-likelihood.

`evaluate.load("bleu" | "rouge")` fetches the metric code from the hub and fails offline, so the
definitions are rebuilt here from sacrebleu and rouge_score, which those metrics wrap.
"""

from __future__ import annotations

import math
from typing import Sequence

__all__ = ["bleu", "rouge", "choice_scores", "reward_accuracy", "perplexity", "tokenize_13a"]


_TOKENIZER_13A = None


def _tokenizer_13a():
    """sacrebleu's Tokenizer13a: the code evaluate's metrics/bleu/tokenizer_13a.py copies."""
    global _TOKENIZER_13A
    if _TOKENIZER_13A is None:
        from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

        _TOKENIZER_13A = Tokenizer13a()
    return _TOKENIZER_13A


def tokenize_13a(text: str) -> list[str]:
    """mteval-v13a tokens, as evaluate's `Tokenizer13a` returns them (sacrebleu's joins them with spaces)."""
    return _tokenizer_13a()(text).split()


def bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU-4 x100 as HF evaluate's `bleu` with its defaults (one reference per prediction).

    evaluate's definition: tokenize every string with `Tokenizer13a`, then TF-NMT `compute_bleu`
    (max_order 4, smooth False): clipped n-gram matches and candidate n-gram counts summed over the
    corpus; precision p_n = matches_n / possible_n (0 when possible_n is 0); geometric mean of p_1..p_4,
    0 as soon as any p_n is 0; brevity penalty 1 if c > r else exp(1 - r/c), with 0 when c or r is 0.

    sacrebleu's `BLEU(smooth_method="none")` computes the same statistics and formula, with one
    difference in the input: it tokenizes `segment.rstrip()` where evaluate tokenizes the segment as
    is, and 13a turns a trailing "-\\n" into nothing, so "word-\\n" gives "word" in evaluate but
    "word-" in sacrebleu. So the segments are tokenized here exactly as evaluate does (sacrebleu's
    Tokenizer13a, the same code) and handed to sacrebleu already tokenized (`tokenize="none"`),
    where `rstrip` and whitespace splitting are no-ops. With one reference, sacrebleu's "closest
    reference length" equals TF-NMT's "shortest reference length".
    """
    from sacrebleu.metrics.bleu import BLEU

    predictions, references = list(predictions), list(references)
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("bleu of an empty corpus")
    if not all(isinstance(r, str) for r in references):
        raise TypeError("bleu takes exactly one reference string per prediction")
    hyps = [" ".join(tokenize_13a(p)) for p in predictions]
    refs = [" ".join(tokenize_13a(r)) for r in references]
    if not any(hyps) or not any(refs):  # TF-NMT: translation or reference length 0 gives bp = 0
        return 0.0
    return float(BLEU(tokenize="none", smooth_method="none", force=True).corpus_score(hyps, [refs]).score)


def rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measures x100, as HF evaluate's `rouge` but deterministic.

    evaluate's `rouge` builds `rouge_scorer.RougeScorer(rouge_types, use_stemmer=False)` by default
    (no Porter stemming; rouge_score's default tokenizer: lowercase, non-alphanumerics to spaces),
    scores each pair with `scorer.score(reference, prediction)` and, with its default
    `use_aggregator=True`, reports the `mid` (median) of a `BootstrapAggregator` resampling, which is
    random. Here the same per-pair F-measures are averaged by a plain mean, which the bootstrap
    median estimates.
    """
    from rouge_score import rouge_scorer

    predictions, references = list(predictions), list(references)
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("rouge of an empty corpus")
    types = ["rouge1", "rouge2", "rougeL"]
    scorer = rouge_scorer.RougeScorer(types, use_stemmer=False)
    totals = dict.fromkeys(types, 0.0)
    for pred, ref in zip(predictions, references):
        scores = scorer.score(ref, pred)  # (target, prediction), as evaluate calls it
        for t in types:
            totals[t] += scores[t].fmeasure
    return {t: 100.0 * totals[t] / len(predictions) for t in types}


def choice_scores(loglikelihoods: Sequence[float], choices: Sequence[str], label: int) -> dict[str, float]:
    """acc and acc_norm of one multiple-choice item, as lm-evaluation-harness scores it.

    lm_eval/api/task.py, ConfigurableTask.process_results, output_type multiple_choice:
        choices = self.doc_to_choice(doc)
        completion_len = np.array([float(len(i)) for i in choices])
        pred = np.argmax(lls)
        pred_norm = np.argmax(lls / completion_len)
    The requests are (ctx, f"{target_delimiter}{cont}") with target_delimiter " " (construct_requests),
    so the log-likelihood covers " " + choice, but the length divided by is that of the choice itself,
    without the delimiter. np.argmax breaks ties towards the first choice.
    """
    import numpy as np

    if len(loglikelihoods) != len(choices):
        raise ValueError(f"{len(loglikelihoods)} log-likelihoods for {len(choices)} choices")
    lls = np.asarray(loglikelihoods, dtype=np.float64)
    completion_len = np.array([float(len(c)) for c in choices])
    pred = int(np.argmax(lls))
    pred_norm = int(np.argmax(lls / completion_len))
    return {"acc": float(pred == label), "acc_norm": float(pred_norm == label), "pred": pred, "pred_norm": pred_norm}


def reward_accuracy(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float) -> dict[str, float]:
    """TRL's DPO reward accuracy and margin over pairs of summed response log-probabilities.

    trl 1.16 trainer/dpo_trainer.py, DPOTrainer._compute_loss:
        chosen_logratios = chosen_logps - ref_chosen_logps
        rejected_logratios = rejected_logps - ref_rejected_logps
        chosen_rewards = self.beta * chosen_logratios.detach()
        rejected_rewards = self.beta * rejected_logratios.detach()
        reward_accuracies = (chosen_rewards > rejected_rewards).float()   # strict
        margins = chosen_rewards - rejected_rewards
    each averaged over the pairs.
    """
    import torch

    def tensor(x):
        return torch.as_tensor(x, dtype=torch.float64).reshape(-1)

    pc, pr, rc, rr = (tensor(x) for x in (policy_chosen, policy_rejected, ref_chosen, ref_rejected))
    if not len(pc) == len(pr) == len(rc) == len(rr):
        raise ValueError("reward_accuracy: the four log-probability lists differ in length")
    if len(pc) == 0:
        raise ValueError("reward_accuracy of no pairs")
    chosen_rewards = beta * (pc - rc)
    rejected_rewards = beta * (pr - rr)
    return {
        "reward_accuracy": (chosen_rewards > rejected_rewards).double().mean().item(),
        "reward_margin": (chosen_rewards - rejected_rewards).mean().item(),
        "reward_chosen": chosen_rewards.mean().item(),
        "reward_rejected": rejected_rewards.mean().item(),
    }


def perplexity(total_nll: float, n_tokens: int) -> float:
    """exp(total negative log-likelihood / number of predicted tokens)."""
    if n_tokens <= 0:
        raise ValueError("perplexity over no tokens")
    return math.exp(total_nll / n_tokens)
