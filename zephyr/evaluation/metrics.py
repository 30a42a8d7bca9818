"""Metric definitions, model-free: each one matches a named reference implementation exactly.

- `bleu`: HF evaluate's `bleu` metric (metrics/bleu/bleu.py, which runs TensorFlow-NMT's
  `compute_bleu`, nmt/scripts/bleu.py, that evaluate downloads as nmt_bleu.py, on `tokenizer_13a`
  tokens), x100; 0 where evaluate raises ZeroDivisionError (no prediction or no reference tokens at all).
- `rouge`: HF evaluate's `rouge` metric (metrics/rouge/rouge.py: rouge_score's RougeScorer, F-measures),
  averaged by a plain mean instead of evaluate's random bootstrap, x100.
- `choice_scores`: lm-evaluation-harness's `multiple_choice` process_results (acc, acc_norm).
- `reward_accuracy`: TRL 1.16 DPOTrainer's `rewards/accuracies` and `rewards/margins`.
- `perplexity`: exp of the mean token negative log-likelihood.
- `mean_stderr`, `bleu_stderr`: the standard errors lm-evaluation-harness reports as `*_stderr`
  (lm_eval/api/metrics.py: `mean_stderr`, the sample standard deviation over sqrt(n), for means of
  per-item scores, binomial accuracies included; a bootstrap over items for corpus-level BLEU).

`evaluate.load("bleu" | "rouge")` fetches the metric code from the hub and fails offline, so the
definitions are rebuilt here from sacrebleu and rouge_score, which those metrics wrap. The tests compare
them with the reference code itself: evaluate's bleu and rouge scripts (kept under
tests/fixtures/reference/evaluate_metrics and loaded from there), and lm-evaluation-harness 0.4.13's own
HellaSwag run (a recorded fixture) for `choice_scores` and `mean_stderr`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["bleu", "bleu_stderr", "rouge", "rouge_items", "choice_scores", "reward_accuracy", "perplexity",
           "tokenize_13a", "mean_stderr"]


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
    0 as soon as any p_n is 0; brevity penalty 1 if c > r else exp(1 - r/c). When c or r is 0 (every
    prediction, or every reference, empty after tokenization) TF-NMT divides by zero and evaluate
    raises; here the score is 0, as every precision then is.

    sacrebleu's `BLEU(smooth_method="none")` computes the same statistics and formula, with one
    difference in the input: it tokenizes `segment.rstrip()` where evaluate tokenizes the segment as
    is, and 13a turns a trailing "-\\n" into nothing, so "word-\\n" gives "word" in evaluate but
    "word-" in sacrebleu. So the segments are tokenized here exactly as evaluate does (sacrebleu's
    Tokenizer13a, the same code) and handed to sacrebleu already tokenized (`tokenize="none"`),
    where `rstrip` and whitespace splitting are no-ops. With one reference, sacrebleu's "closest
    reference length" equals TF-NMT's "shortest reference length".
    """
    predictions, references = list(predictions), list(references)
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("bleu of an empty corpus")
    if not all(isinstance(r, str) for r in references):
        raise TypeError("bleu takes exactly one reference string per prediction")
    return _bleu_of_tokenized(_tokenized(predictions), _tokenized(references))


def _tokenized(texts: Sequence[str]) -> list[str]:
    return [" ".join(tokenize_13a(t)) for t in texts]


def _bleu_of_tokenized(hyps: list[str], refs: list[str]) -> float:
    from sacrebleu.metrics.bleu import BLEU

    if not any(hyps) or not any(refs):  # TF-NMT: translation or reference length 0 gives bp = 0
        return 0.0
    return float(BLEU(tokenize="none", smooth_method="none", force=True).corpus_score(hyps, [refs]).score)


def bleu_stderr(predictions: Sequence[str], references: Sequence[str], iterations: int = 1000,
                seed: int = 1234, baseline: Sequence[str] | None = None) -> float:
    """Bootstrap standard error of `bleu` over the items: each resample sums the items' BLEU statistics
    (lengths, n-gram matches and counts, extracted once by sacrebleu, as its own bootstrap does) and
    scores the sums; the sample standard deviation of `iterations` such scores.

    With `baseline` (another model's answers to the same items), the standard error of the difference
    bleu(predictions) - bleu(baseline), both scored on each resample (a paired bootstrap: what the two
    share, the items' difficulty, cancels)."""
    import numpy as np
    from sacrebleu.metrics.bleu import BLEU

    refs = _tokenized(references)
    systems = [_tokenized(predictions)] + ([_tokenized(baseline)] if baseline is not None else [])
    if len(refs) < 2 or not any(refs) or not any(systems[0]) and baseline is None:
        return float("nan")
    scorer = BLEU(tokenize="none", smooth_method="none", force=True)
    # a system that answered nothing scores 0 on every resample (`bleu` gives it 0): only the other varies
    stats = [np.array(scorer._extract_corpus_statistics(hyps, [refs]), dtype=np.int64) if any(hyps) else None
             for hyps in systems]
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, len(refs), size=(iterations, len(refs)))
    scores = [[0.0 if s is None else scorer._compute_score_from_stats(s[idx].sum(0).tolist()).score for s in stats]
              for idx in samples]
    return float(np.std([row[0] - (row[1] if len(row) > 1 else 0.0) for row in scores], ddof=1))


def rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measures x100, as HF evaluate's `rouge` but deterministic.

    evaluate's `rouge` builds `rouge_scorer.RougeScorer(rouge_types, use_stemmer=False)` by default
    (no Porter stemming; rouge_score's default tokenizer: lowercase, non-alphanumerics to spaces),
    scores each pair with `scorer.score(reference, prediction)` and, with its default
    `use_aggregator=True`, reports the `mid` (median) of a `BootstrapAggregator` resampling, which is
    random. Here the same per-pair F-measures are averaged by a plain mean, which the bootstrap
    median estimates.
    """
    items = rouge_items(predictions, references)
    return {t: 100.0 * sum(item[t] for item in items) / len(items) for t in ROUGE_TYPES}


ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def rouge_items(predictions: Sequence[str], references: Sequence[str]) -> list[dict[str, float]]:
    """Each pair's ROUGE-1/2/L F-measures (fractions), scored as evaluate's `rouge` scores them."""
    from rouge_score import rouge_scorer

    predictions, references = list(predictions), list(references)
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("rouge of an empty corpus")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=False)
    items = []
    for pred, ref in zip(predictions, references):
        scores = scorer.score(ref, pred)  # (target, prediction), as evaluate calls it
        items.append({t: scores[t].fmeasure for t in ROUGE_TYPES})
    return items


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


def perplexity_stderr(nlls: Sequence[float], tokens: Sequence[int], iterations: int = 1000, seed: int = 1234) -> float:
    """Standard error of a perplexity over windows (`nlls` summed per window over its `tokens` predicted
    tokens): the standard deviation of exp(sum NLL / sum tokens) over windows resampled with replacement
    (a seeded bootstrap, as `bleu_stderr` over questions); NaN with fewer than two windows."""
    import numpy as np

    if len(nlls) < 2:
        return float("nan")
    nll, count = np.asarray(nlls, dtype=np.float64), np.asarray(tokens, dtype=np.float64)
    samples = np.random.default_rng(seed).integers(0, len(nll), size=(iterations, len(nll)))
    return float(np.exp(nll[samples].sum(1) / count[samples].sum(1)).std(ddof=1))


def mean_stderr(values: Sequence[float]) -> float:
    """Standard error of a mean of per-item scores, as lm-evaluation-harness's `mean_stderr`:
    sqrt(sum (x - mean)^2 / (n - 1)) / sqrt(n); for 0/1 accuracies this is sqrt(p (1 - p) / (n - 1))."""
    n = len(values)
    if n < 2:
        return float("nan")
    mean = sum(values) / n
    return math.sqrt(sum((x - mean) ** 2 for x in values) / (n - 1) / n)

