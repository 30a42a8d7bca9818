"""The fastest training settings that keep the math, chosen per device by measurement or by memory.

Never the precision: dtypes are the config's `precision` (zephyr/precision.py), a study setting.

A hyperparameter set's `speed` mapping says, for each knob, `auto` (decided here) or a forced value:

- `gradient_checkpointing`: recompute activations in the backward pass only when they would not fit
  in free device memory (CPU RAM on the CPU; on a GPU shared with other jobs, what the job booked).
  TRL turns it on by default; without need it costs a third of every step on a CPU and 2.2x on an
  H200 (STACK-NOTES).
- `micro_batch`: the per-device batch of one forward pass. The global batch (the set's
  per_device_train_batch_size x gradient_accumulation_steps x processes) never changes: `auto` takes
  the largest micro-batch that divides it and fits in memory on a GPU (the paper's 16 x 8 becomes
  e.g. 64 x 2 with the same optimizer steps), and keeps the set's own split on the CPU, where a bigger
  micro-batch only pads more.
- `lm_head`: TRL's fused, tiled LM head (`fused`: never materializes the logits, recomputes them in
  the backward pass) or the plain head (`plain`: the whole logits, one matmul each way), timed at
  start-up on this device with the model's own hidden size and vocabulary (on a GPU over up to a
  micro-batch's worth of tokens, where a few hundred would time kernel launches). Both give the same
  per-token log-probabilities up to float rounding.
- `padding_free` (SFT): the micro-batch's records joined into one row, position ids restarting at each
  record and no attention mask, so that no step computes on padding (D_S pads a batch of 4 by ~35 %).
  Transformers then builds a block-diagonal causal mask from the position ids, for most decoders but
  not all (BLOOM's alibi path ignores them). The joined row pays attention over its whole length, so
  it only wins where padding is large: on 2 CPU cores (SmolLM2-135M, batch 4, max length 256) 1.20x on
  D_S (35 % of a padded batch is padding), 0.89x on GSM8K-style records alone (21 %). `auto` joins on
  the CPU for a model that passes `packs_exactly` when a random batch of the run's records would be
  more than `JOIN_ABOVE` padding; a GPU keeps padded batches (not measured there). TRL's DPO has no
  padding-free path (TRL 1.16 turns it off). A set that batches records of like lengths (`GROUPING`,
  an opt-in since it changes the order of the examples) pads little, and its batches stay padded.

A forced value always wins. Every decision is logged and recorded in the run's summary. The LM head is
timed once per machine and the choice kept, and swapped in, by zephyr/model/lm_head.py.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math

from .. import devices
from ..keys import KeyedError
from . import lm_head as heads

log = logging.getLogger("zephyr.model.training")

KNOBS = ("gradient_checkpointing", "micro_batch", "lm_head", "padding_free")
DEFAULTS = dict.fromkeys(KNOBS, "auto")
CHOICES = {"gradient_checkpointing": ("auto", True, False), "lm_head": ("auto", "fused", "plain"),
           "padding_free": ("auto", True, False)}
#: Share of free memory a run plans to fill (the allocator, the optimizer and fragmentation take the rest).
MEMORY_SHARE = 0.7
#: Padding share of a batch above which joined records train faster on the CPU (between the 21 % measured
#: slower and the 35 % measured faster).
JOIN_ABOVE = 0.28
#: TRL's `train_sampling_strategy` values that batch records of like lengths (an opt-in of the set: it
#: changes the order of the examples, so no `auto` takes it).
GROUPING = ("group_by_length", "batch_rebalance")


class SpeedError(KeyedError, ValueError):
    """A `speed` setting that is not one of its choices."""


@dataclasses.dataclass(frozen=True)
class Plan:
    gradient_checkpointing: bool
    micro_batch: int
    accumulation: int
    lm_head: str
    why: dict
    padding_free: bool = False

    def settings(self) -> dict:
        """What the plan changes in TRL's config. A padding-free batch has no padding to leave out of the
        token count (and no attention mask to count by)."""
        return {"gradient_checkpointing": self.gradient_checkpointing, "per_device_train_batch_size": self.micro_batch,
                "gradient_accumulation_steps": self.accumulation,
                **({"include_num_input_tokens_seen": "all"} if self.padding_free else {})}


def check(where: str, speed: dict | None) -> dict:
    """The set's `speed` mapping with defaults, every value checked; errors name `where` and the key."""
    speed = {**DEFAULTS, **(speed or {})}
    unknown = sorted(set(speed) - set(KNOBS))
    if "base_dtype" in unknown:
        raise SpeedError(f"{where}.speed.base_dtype: a dtype changes the numbers, so it is a study setting now: "
                         "set the config's precision.weights instead", ("speed", "base_dtype"))
    if unknown:
        raise SpeedError(f"{where}.speed: unknown key(s) {unknown}; known: {list(KNOBS)}", ("speed",))
    for knob, allowed in CHOICES.items():
        if speed[knob] not in allowed:
            raise SpeedError(f"{where}.speed.{knob}: {speed[knob]!r} is not one of {list(allowed)}", ("speed", knob))
    micro = speed["micro_batch"]
    if micro != "auto" and (not isinstance(micro, int) or isinstance(micro, bool) or micro < 1):
        raise SpeedError(f"{where}.speed.micro_batch: {micro!r} is neither 'auto' nor a positive integer",
                         ("speed", "micro_batch"))
    return speed


def check_micro_batch(where: str, micro, batch: int):
    """A forced micro-batch divides the `batch` of one process and step (the config check asks this before
    any job, `plan` again at the run's start); returns it."""
    if micro != "auto" and batch % micro:
        divisors = [m for m in range(1, batch + 1) if batch % m == 0]
        raise SpeedError(f"{where}.speed.micro_batch: {micro} does not divide the batch of {batch} examples per "
                         f"process and step; choose one of {divisors}", ("speed", "micro_batch"))
    return micro


def plan(where: str, speed: dict, *, micro_batch: int, accumulation: int, device: str, model_config,
         max_length: int, sequences_per_example: int, dtype: str, quantized: bool = False, padded_to: int | None = None,
         lengths: list[int] | None = None, grouped: bool = False) -> Plan:
    """Decide every knob for one process that the set gives `micro_batch` x `accumulation` examples a step.

    `sequences_per_example` is 2 for DPO (a chosen and a rejected sequence), 1 for SFT; `padded_to` is
    the set's pad_to_multiple_of; `lengths` the token lengths of the records (SFT); `grouped` whether
    the set batches records of like lengths (`GROUPING`); `dtype` the frozen base's (the precision's).
    """
    speed = check(where, speed)
    batch = micro_batch * accumulation
    why = {}
    lm_head = speed["lm_head"]
    if lm_head == "auto":
        lm_head, why["lm_head"] = heads.fastest_head(device, model_config.hidden_size, model_config.vocab_size, dtype)

    def need(micro: int, checkpointing: bool) -> int:
        return activation_bytes(model_config, micro * sequences_per_example * max_length, dtype,
                                checkpointing=checkpointing, plain_head=lm_head == "plain")

    budget = int(devices.free_bytes(device) * MEMORY_SHARE) - weight_bytes(model_config, dtype, quantized)
    divisors = [m for m in range(1, batch + 1) if batch % m == 0]
    micro = check_micro_batch(where, speed["micro_batch"], batch)
    if micro == "auto" and device == "cpu":
        micro = micro_batch
        why["micro_batch"] = "the set's own split (on the CPU a larger micro-batch only pads more)"
    checkpointing = speed["gradient_checkpointing"]
    if checkpointing == "auto":
        trial = divisors[0] if micro == "auto" else micro
        checkpointing = need(trial, False) > budget
        why["gradient_checkpointing"] = (f"activations of {trial} x {sequences_per_example} x {max_length} tokens "
                                         f"{need(trial, False) / 2**30:.1f} GiB, budget {budget / 2**30:.1f} GiB")
    if micro == "auto":
        fitting = [m for m in divisors if need(m, checkpointing) <= budget]
        micro = fitting[-1] if fitting else 1
        why["micro_batch"] = f"the largest of {divisors} whose activations fit in {budget / 2**30:.1f} GiB"
    padding_free, reason = _padding_free(where, speed["padding_free"], sft=sequences_per_example == 1,
                                         padded_to=padded_to, device=device, model_config=model_config,
                                         lengths=lengths or [max_length], micro=micro,
                                         group=batch if grouped else None)
    if reason:
        why["padding_free"] = reason
    return Plan(bool(checkpointing), micro, batch // micro, lm_head, why, bool(padding_free))


def _padding_free(where: str, forced, *, sft: bool, padded_to, device: str, model_config, lengths: list[int],
                  micro: int, group: int | None = None) -> tuple[bool, str | None]:
    """(join records, why) for `speed.padding_free`; a forced True where joining would change the math
    is an error."""
    if (not sft or padded_to) and forced is True:
        raise SpeedError(f"{where}.speed.padding_free: only SFT without pad_to_multiple_of trains padding-free",
                         ("speed", "padding_free"))
    if forced is False:
        return False, None
    if not sft or padded_to:
        return False, ("the set pads to a multiple of pad_to_multiple_of" if sft
                       else "DPO pads (TRL has no padding-free DPO)")
    if forced == "auto" and device != "cpu":
        return False, "padded batches on a GPU (not measured padding-free)"
    works, check_why = packs_exactly(model_config)
    if not works:
        if forced is True:
            raise SpeedError(f"{where}.speed.padding_free: {check_why}", ("speed", "padding_free"))
        return False, check_why
    if forced is True:
        return True, None
    share = padding_share(lengths, micro, group)
    join = share > JOIN_ABOVE
    drawn = f"a length-grouped batch of {micro}" if group else f"a random batch of {micro}"
    return join, (f"{drawn} of these records is {share:.0%} padding "
                  f"({'more' if join else 'not more'} than {JOIN_ABOVE:.0%}); {check_why}")


def padding_share(lengths: list[int], batch: int, group: int | None = None, draws: int = 2000) -> float:
    """Expected share of padding in a batch of `batch` records drawn at random (seeded: the same answer
    for the same records). With `group` (the examples of a step), batches come as transformers'
    LengthGroupedSampler makes them: up to 50 steps' worth (a quarter of the records at most) drawn at
    random, sorted longest first, cut in turn."""
    import random

    rng = random.Random(0)
    real = padded = 0
    steps = max(1, min(len(lengths) // (4 * group), 50)) if group else 0
    drawn_at_once = min(steps * group, len(lengths)) if group else min(batch, len(lengths))
    for _ in range(max(1, draws * batch // drawn_at_once)):
        drawn = rng.sample(lengths, drawn_at_once)
        if group:
            drawn.sort(reverse=True)
        for start in range(0, len(drawn), batch):
            cut = drawn[start:start + batch]
            real, padded = real + sum(cut), padded + len(cut) * max(cut)
    return 1 - real / padded


def packs_exactly(model_config) -> tuple[bool, str]:
    """(whether, why) the architecture keeps records joined in one row apart: a small random model of
    the same config scores the second of two joined records bit for bit alike whatever the first one
    holds (attention does not cross records) and as that record alone (positions restart)."""
    return _packs_exactly(model_config.to_json_string(use_diff=False))


@functools.cache
def _packs_exactly(config_json: str) -> tuple[bool, str]:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    values = json.loads(config_json)
    small = {"hidden_size": 32, "num_hidden_layers": 1, "n_layer": 1, "num_attention_heads": 2, "n_head": 2,
             "num_key_value_heads": 2, "intermediate_size": 64, "head_dim": 16, "vocab_size": 97}
    values.update({key: value for key, value in small.items() if key in values})
    values.pop("layer_types", None)  # one per layer: rebuilt for the one layer
    torch.manual_seed(0)
    try:
        config = AutoConfig.for_model(values.pop("model_type"), **values)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    except Exception as err:  # an architecture this probe cannot shrink: keep padded batches
        return False, f"no small copy of the architecture to check ({type(err).__name__}: {err})"
    first, second = torch.randint(97, (2, 7)), torch.randint(97, (5,))
    positions = torch.cat([torch.arange(7), torch.arange(5)])[None]
    with torch.no_grad():  # no cache, as TRL trains: a cache turns the packed-row mask off
        joined = [model(input_ids=torch.cat([f, second])[None], position_ids=positions, use_cache=False).logits[0, 7:]
                  for f in first]
        alone = model(input_ids=second[None], use_cache=False).logits[0]
    if not torch.equal(joined[0], joined[1]):
        return False, (f"{config.model_type}: attention crosses records joined in one row "
                       f"(their mask ignores position ids)")
    if not torch.allclose(joined[0], alone, atol=1e-5):
        return False, f"{config.model_type}: a record joined after another is not scored as the record alone"
    return True, f"{config.model_type} keeps records joined in one row apart (checked on a small copy)"


# ---- memory ----------------------------------------------------------------------------------------


def _bytes_per(dtype: str) -> int:
    return 4 if dtype == "float32" else 2


def weight_bytes(config, dtype: str, quantized: bool = False) -> int:
    """The frozen base's weights (about 0.5 byte a parameter when 4-bit)."""
    h, layers, vocab = config.hidden_size, config.num_hidden_layers, config.vocab_size
    inter = getattr(config, "intermediate_size", None) or 4 * h
    params = layers * (4 * h * h + 3 * h * inter) + 2 * vocab * h
    return params // 2 if quantized else params * _bytes_per(dtype)


def training_bytes(config, *, micro_batch: int, max_length: int, sequences_per_example: int, dtype: str,
                   quantized: bool = False) -> int:
    """Device memory in which `plan` keeps a micro-batch of `micro_batch` without checkpointing: its
    weights and activations (the plain head's, the larger) over the share of memory a plan fills."""
    used = weight_bytes(config, dtype, quantized) + activation_bytes(
        config, micro_batch * sequences_per_example * max_length, dtype, checkpointing=False, plain_head=True)
    return math.ceil(used / MEMORY_SHARE)


def activation_bytes(config, tokens: int, dtype: str, *, checkpointing: bool, plain_head: bool) -> int:
    """Memory the backward pass needs for `tokens` tokens of one micro-batch, roughly.

    Per token and layer, a decoder layer keeps the inputs of its projections, norms and activation
    (about 10 h + 4 i values with sdpa attention, which keeps no score matrix). With checkpointing only
    each layer's input stays, plus one layer's worth during its recompute. A plain head adds the full
    logits, their log-softmax and its gradient in float32.
    """
    h, layers, vocab = config.hidden_size, config.num_hidden_layers, config.vocab_size
    inter = getattr(config, "intermediate_size", None) or 4 * h
    per_layer = (10 * h + 4 * inter) * _bytes_per(dtype)
    body = tokens * (layers * h * _bytes_per(dtype) + per_layer) if checkpointing else tokens * layers * per_layer
    head = tokens * vocab * 4 * 3 if plain_head else tokens * h * 4
    return body + head
