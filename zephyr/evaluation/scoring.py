"""The scoring engine every evaluation task runs on: summed log-probabilities of token sequences,
lm-evaluation-harness-style log-likelihood requests, TRL-tokenized preference pairs, and greedy
generation. Batched under `torch.inference_mode()` on the model's device.

- Requests (context, continuation) are tokenized as the harness's `TemplateLM._encode_pair` does
  (lm-eval 0.4.13: with the tokenizer's own special tokens, a BOS included where it adds one).
- Response log-probabilities for reward accuracy are tokenized exactly as TRL 1.16's DPOTrainer does.
- Chat prompts come from `zephyr.model.prompts`, rendered with the tokenizer's chat template and
  `add_generation_prompt=True`, so a model is evaluated on the prompts it was tuned on.

A scored sequence is a token list and a count `n` of its trailing tokens to score: its summed
log-probability is that of tokens[-n:] given the tokens before. Sequences are sorted by length,
left-padded in batches (explicit position ids, so padding does not shift positions) and only the
positions that predict scored tokens go through the LM head (`logits_to_keep`). Sequences sharing
their context (HellaSwag's endings, a preference pair's two answers) run that context once and the
continuations on copies of its KV cache: about 2x faster on HellaSwag, equal up to float rounding.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

from ..model.prompts import chat_messages, prompt_ids

#: Positions whose log-softmax is taken at once when scoring long sequences (bounds peak memory).
_CHUNK = 512


def _progress(iterable, total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, disable=None, leave=False)


def context_length(model) -> int | None:
    return getattr(model.config, "max_position_embeddings", None)


def _accepts_logits_to_keep(model) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def score_sequences(model, sequences: Sequence[tuple[list[int], int]], pad_id: int, batch_size: int,
                    desc: str = "scoring", share_prefix: bool | None = None) -> list[float]:
    """Summed log-probability of the last `n` tokens of each (tokens, n), in input order.

    Longer than the model's context: the sequence keeps its last max_length + 1 tokens, as the harness
    does (`(context_enc + continuation_enc)[-(max_length + 1):]`). n == 0 scores 0.0.

    Sequences whose unscored part (the context) is identical, as HellaSwag's four endings or the two
    sides of a preference pair, can share one forward pass of that context (`share_prefix`; None:
    whenever some context repeats): the context runs once with a KV cache, each continuation then runs
    on a copy of that cache. The result equals the plain path's up to float rounding.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    limit = context_length(model)
    items = []
    for tokens, n in sequences:
        tokens = list(tokens)
        if n < 0 or n > len(tokens):
            raise ValueError(f"cannot score {n} tokens of a {len(tokens)}-token sequence")
        if limit and len(tokens) > limit + 1:
            tokens = tokens[-(limit + 1):]
            n = min(n, limit)
        if n and n == len(tokens):
            raise ValueError("a scored token needs at least one token of context")
        items.append((tokens, n))
    results = [0.0] * len(items)
    scored = [i for i, (_, n) in enumerate(items) if n]
    groups: dict[tuple, list[int]] = {}
    for i in scored:
        tokens, n = items[i]
        groups.setdefault(tuple(tokens[:-n]), []).append(i)
    if share_prefix is None:
        share_prefix = len(groups) < len(scored)
    if share_prefix:
        _score_shared(model, items, list(groups.values()), pad_id, batch_size, desc, results)
    else:
        _score_plain(model, items, scored, pad_id, batch_size, desc, results)
    return results


def _left_padded(rows: list[list[int]], pad_id: int):
    """(ids, attention mask, position ids) of token rows left-padded to the longest."""
    import torch

    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, seq in enumerate(rows):  # every row ends at the last column
        if seq:
            ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq):] = 1
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


def _add_logprobs(row_logits, targets: list[int]) -> float:
    """Sum of log_softmax(row_logits[t])[targets[t]], a chunk of positions at a time."""
    import torch

    target = torch.tensor(targets, dtype=torch.long, device=row_logits.device)
    total = 0.0
    for start in range(0, len(targets), _CHUNK):
        part = row_logits[start:start + _CHUNK].float().log_softmax(-1)
        total += part.gather(-1, target[start:start + _CHUNK, None]).sum().item()
    return total


def _score_plain(model, items, scored, pad_id, batch_size, desc, results) -> None:
    """One left-padded forward per batch of whole sequences; only the last max(n) positions get logits."""
    import torch

    order = sorted(scored, key=lambda i: -len(items[i][0]))
    batches = [order[k:k + batch_size] for k in range(0, len(order), batch_size)]
    dev = next(model.parameters()).device
    keep_arg = _accepts_logits_to_keep(model)
    with torch.inference_mode():
        for batch in _progress(batches, len(batches), desc):
            ids, mask, positions = _left_padded([items[i][0][:-1] for i in batch], pad_id)
            keep = max(items[i][1] for i in batch)
            kwargs = {"logits_to_keep": keep} if keep_arg else {}
            logits = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=positions.to(dev),
                           use_cache=False, **kwargs).logits[:, -keep:]
            for row, i in enumerate(batch):
                tokens, n = items[i]
                results[i] = _add_logprobs(logits[row, keep - n:], tokens[-n:])


def _score_shared(model, items, groups, pad_id, batch_size, desc, results) -> None:
    """Contexts once (left-padded, cached), then every continuation on its context's cache (right-padded)."""
    import torch

    def size(group):
        tokens, n = items[group[0]]
        return len(tokens) - n + max(items[i][1] for i in group)

    groups = sorted(groups, key=lambda g: -size(g))
    batches, current = [], []
    for group in groups:  # whole groups, about batch_size continuations a batch
        if current and sum(map(len, current)) + len(group) > batch_size:
            batches.append(current)
            current = []
        current.append(group)
    if current:
        batches.append(current)
    dev = next(model.parameters()).device
    keep_arg = _accepts_logits_to_keep(model)
    with torch.inference_mode():
        for batch in _progress(batches, len(batches), desc):
            contexts = [items[g[0]][0][:-items[g[0]][1]] for g in batch]
            ids, mask, positions = _left_padded(contexts, pad_id)
            kwargs = {"logits_to_keep": 1} if keep_arg else {}
            out = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=positions.to(dev),
                        use_cache=True, **kwargs)
            first = out.logits[:, -1].float().log_softmax(-1)  # predicts every continuation's first token
            rows = [(g, i) for g, group in enumerate(batch) for i in group]
            tails = [items[i][0][-items[i][1]:] for _, i in rows]  # the continuations
            width = max(len(t) for t in tails) - 1
            if width > 0:
                cache = out.past_key_values
                parent = torch.tensor([g for g, _ in rows], dtype=torch.long)
                cache.batch_select_indices(parent.to(dev))
                cont = torch.full((len(rows), width), pad_id, dtype=torch.long)
                cont_mask = torch.zeros((len(rows), width), dtype=torch.long)
                for r, tail in enumerate(tails):  # right padding after the cached context
                    cont[r, :len(tail) - 1] = torch.tensor(tail[:-1], dtype=torch.long)
                    cont_mask[r, :len(tail) - 1] = 1
                full_mask = torch.cat([mask[parent], cont_mask], dim=1)
                lengths = torch.tensor([len(c) for c in contexts], dtype=torch.long)[parent]
                cont_positions = lengths[:, None] + torch.arange(width)[None, :]
                logits = model(input_ids=cont.to(dev), attention_mask=full_mask.to(dev),
                               position_ids=cont_positions.to(dev), past_key_values=cache, use_cache=True).logits
            for r, ((g, i), tail) in enumerate(zip(rows, tails)):
                total = first[g, tail[0]].item()
                if len(tail) > 1:
                    total += _add_logprobs(logits[r, :len(tail) - 1], tail[1:])
                results[i] = total


# ---- log-likelihood requests, lm-evaluation-harness style ------------------------------------


def _encode(tokenizer, texts: list[str], add_special_tokens: bool | None = None) -> list[list[int]]:
    """The harness's `HFLM.tok_encode` (lm-eval 0.4.13, `add_bos_token` unset). By default the tokenizer
    adds its own special tokens: a BOS where it prepends one (Llama's, Gemma's), nothing for the study's
    SmolLM2 tokenizer (its GGUF says add_bos_token false) — except to a text that already starts with
    the prefix token's text. (lm-eval before its PR #3347, Oct 2025, never added special tokens.)"""
    if not texts:
        return []
    if add_special_tokens is not None:
        return tokenizer(texts, add_special_tokens=add_special_tokens)["input_ids"]
    marker = tokenizer.decode(prefix_token_id(tokenizer))
    ids = tokenizer(texts)["input_ids"]
    return [tokenizer(text, add_special_tokens=False)["input_ids"] if text.startswith(marker) else enc
            for text, enc in zip(texts, ids)]


def encode_requests(tokenizer, requests: Sequence[tuple[str, str]]) -> list[tuple[list[int], int]]:
    """(context + continuation tokens, continuation length) per request, as lm-eval's TemplateLM does.

    lm_eval/api/model.py, TemplateLM._encode_pair: trailing spaces of the context move to the
    continuation; whole_enc = encode(context + continuation); context_enc = encode(context);
    continuation_enc = whole_enc[len(context_enc):]; the model then reads context_enc +
    continuation_enc (HFLM._loglikelihood_tokens). An empty context (TemplateLM.loglikelihood): the
    continuation is encoded without special tokens, after the prefix token (BOS, else EOS) unless it
    already starts with that token.
    """
    pairs = []
    for context, continuation in requests:
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces > 0:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        pairs.append((context, continuation))
    contexts = sorted({c for c, _ in pairs if c})
    context_enc = dict(zip(contexts, _encode(tokenizer, contexts)))
    wholes = iter(_encode(tokenizer, [c + x for c, x in pairs if c]))
    alone = iter(_encode(tokenizer, [x for c, x in pairs if not c], add_special_tokens=False))
    prefix = prefix_token_id(tokenizer)
    out = []
    for context, _ in pairs:
        if not context:
            continuation = next(alone)
            if continuation and continuation[0] == prefix:
                out.append((continuation, len(continuation) - 1))
            else:
                out.append(([prefix] + continuation, len(continuation)))
        else:
            # the model sees context_enc + continuation_enc, which differs from whole_enc when a token
            # merges across the boundary
            ctx = context_enc[context]
            continuation = next(wholes)[len(ctx):]
            out.append((ctx + continuation, len(continuation)))
    return out


def loglikelihoods(model, tokenizer, requests: Sequence[tuple[str, str]], batch_size: int = 8) -> list[float]:
    """Summed log-probability of each continuation given its context, in request order."""
    return score_sequences(model, encode_requests(tokenizer, requests), pad_token_id(tokenizer), batch_size,
                           desc="log-likelihoods")


def pad_token_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def prefix_token_id(tokenizer) -> int:
    """The harness's `HFLM.prefix_token_id`: BOS, else EOS."""
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def windows(ids: Sequence[int], window: int) -> list[list[int]]:
    """Consecutive non-overlapping windows of `window` tokens; the last may be shorter."""
    if window < 2:
        raise ValueError(f"window must be at least 2 tokens, got {window}")
    return [list(ids[start:start + window]) for start in range(0, len(ids), window)]


# ---- generation -----------------------------------------------------------------------------------


def _eos_ids(model, tokenizer) -> list[int]:
    ids = []
    for value in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        for token in value if isinstance(value, (list, tuple)) else [value]:
            if token is not None and token not in ids:
                ids.append(int(token))
    return ids


def generate(model, tokenizer, items: Sequence[str | dict], max_new_tokens: int = 256,
             batch_size: int = 8, stats: dict | None = None) -> list[str]:
    """Greedy completions of chat prompts, in input order: only the new tokens, decoded and stripped.

    Plain greedy search: the model's own generation_config (sampling settings, repetition penalty,
    ...) is set aside for the call; only its EOS ids are kept (with the tokenizer's EOS). Prompts are
    sorted by length and left-padded in batches. `stats`, when given, receives the counts of prompt
    tokens and of generated tokens (the EOS included, the padding after it not), and per answer (in
    input order) its generated tokens and whether it ended with an EOS (`answer_tokens`, `stopped`).
    """
    import torch
    from transformers import GenerationConfig

    prompts = [prompt_ids(tokenizer, chat_messages(item)) for item in items]
    pad = pad_token_id(tokenizer)
    eos = _eos_ids(model, tokenizer)
    config = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens, eos_token_id=eos,
                              pad_token_id=pad, bos_token_id=tokenizer.bos_token_id)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    batches = [order[k:k + batch_size] for k in range(0, len(order), batch_size)]
    outputs: list[str] = [""] * len(prompts)
    lengths, stopped = [0] * len(prompts), [False] * len(prompts)
    dev = next(model.parameters()).device
    saved = model.generation_config
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=pad, bos_token_id=tokenizer.bos_token_id)
    try:
        with torch.inference_mode():
            for batch in _progress(batches, len(batches), "generating"):
                ids, mask, _ = _left_padded([prompts[i] for i in batch], pad)
                width = ids.shape[1]
                out = model.generate(input_ids=ids.to(dev), attention_mask=mask.to(dev), generation_config=config)
                for row, i in enumerate(batch):
                    new = out[row, width:].tolist()
                    ended = [k for k, token in enumerate(new) if token in eos]
                    lengths[i], stopped[i] = (ended[0] + 1 if ended else len(new)), bool(ended)
                    outputs[i] = tokenizer.decode(new, skip_special_tokens=True).strip()
    finally:
        model.generation_config = saved
    if stats is not None:
        stats.update(prompt_tokens=sum(map(len, prompts)), new_tokens=sum(lengths), answer_tokens=lengths,
                     stopped=stopped)
    return outputs
