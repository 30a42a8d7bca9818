"""The plain LM head, the patch that makes TRL's fused head compute through it for a run whose
`speed.lm_head` chose it (zephyr/model/speed.py says why), and the timing that chooses.

The choice moves a result by float rounding only, so it is timed once per machine and kept
(`$ZEPHYR_CACHE`, default ~/.cache/zephyr/speed.json): reruns on one machine train the same bytes;
delete the file to time again.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import platform
import time
from pathlib import Path

from .. import devices

#: Tokens of the LM-head timing on the CPU: enough for a stable figure, well under a second.
HEAD_PROBE_TOKENS = 256
#: On a GPU, at most a micro-batch's worth of tokens (there 256 would time kernel launches, not the head).
GPU_HEAD_PROBE_TOKENS = 8192


class PlainLogProb:
    """TRL's `ChunkedLogProbFunction` computed the plain way: the whole logits, then log-softmax.

    Same signature and outputs (log_probs, entropy, log_sum_sq_probs, mean_logits, is_top1), same
    logit transform (`_torch_transform`: scale, soft-capping, temperature) and compute dtype
    (autocast's, else the hidden states'), the statistics in float32. Autograd differentiates it.
    """

    @staticmethod
    def apply(hidden, weight, bias, targets, temperature, chunk_size, final_logit_softcapping=None,
              logit_scale=1.0, outputs=("log_probs",)):
        import torch
        from trl.kernels.chunked_logprob import _torch_transform

        device = hidden.device.type
        compute = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
        logits = hidden.to(compute) @ weight.to(compute).t()
        if bias is not None:
            logits = logits + bias.to(compute)
        z = _torch_transform(logits.float(), logit_scale, final_logit_softcapping or 1.0, 1 / temperature,
                             final_logit_softcapping is not None)
        log_p = z.log_softmax(-1)
        log_probs = log_p.gather(-1, targets[:, None].long())[:, 0]
        entropy = -(log_p.exp() * log_p).sum(-1) if "entropy" in outputs else None
        with torch.no_grad():
            log_sum_sq = torch.logsumexp(2 * log_p, -1) if "log_sum_sq_probs" in outputs else None
            mean_logits = z.mean(-1) if "mean_logits" in outputs else None
            is_top1 = z.argmax(-1) == targets if "is_top1" in outputs else None
        return log_probs, entropy, log_sum_sq, mean_logits, is_top1


@contextlib.contextmanager
def use(choice: str):
    """Within the block, TRL's fused LM head computes through `choice` ("fused" changes nothing).

    The plain head also scores only the positions that have a label, as TRL does on Triton devices
    (`compact`): elsewhere TRL scores every position (prompt and padding too) and zeroes the masked
    ones afterwards, to keep tile shapes fixed for compilers; on the CPU nothing compiles, and the
    result is the same zeros."""
    if choice == "fused":
        yield
        return
    from trl.trainer import utils

    # trl==1.16.0, pinned: the kernel its fused head calls, and the test that decides `compact`
    originals = utils._ChunkedLogProbFunction, utils._use_triton
    utils._ChunkedLogProbFunction, utils._use_triton = PlainLogProb, lambda device: True
    try:
        yield
    finally:
        utils._ChunkedLogProbFunction, utils._use_triton = originals


# ---- timing ----------------------------------------------------------------------------------------


def _time(fn, repeats: int = 3) -> float:
    fn()  # warm-up: first calls allocate and pick kernels
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def cache_path() -> Path:
    return Path(os.environ.get("ZEPHYR_CACHE") or Path.home() / ".cache" / "zephyr") / "speed.json"


def _machine(device: str) -> str:
    import torch

    what = torch.cuda.get_device_name() if device == "cuda" else (
        f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()} x{os.cpu_count()}")
    return f"{device} {what}, torch {torch.__version__}"


def _kept(key: str, measure) -> tuple[str, str]:
    """The choice recorded for `key` on this machine, or `measure()`'s, recorded (under a file lock)."""
    path = cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        kept = json.loads(path.read_text()) if path.is_file() else {}
        if key not in kept:
            choice, why = measure()
            kept[key] = {"choice": choice, "why": why}
            path.write_text(json.dumps(kept, indent=1))
    return kept[key]["choice"], f"{kept[key]['why']} (kept in {path})"


@functools.cache
def fastest_head(device: str, hidden: int, vocab: int, dtype: str) -> tuple[str, str]:
    """(head, why), decided once per machine (`time_head`)."""
    return _kept(f"lm_head {_machine(device)} {hidden}x{vocab} {dtype}",
                 lambda: time_head(device, hidden, vocab, dtype))


def time_head(device: str, hidden: int, vocab: int, dtype: str) -> tuple[str, str]:
    """(head, why): the faster of TRL's fused head and the plain head, forward and backward, on this device."""
    import torch
    from trl.kernels import ChunkedLogProbFunction

    torch_dtype = getattr(torch, dtype)
    tokens = head_probe_tokens(device, vocab, devices.free_bytes(device) if device == "cuda" else 0)
    gen = torch.Generator().manual_seed(0)
    weight = (torch.randn(vocab, hidden, generator=gen) * 0.02).to(device=device, dtype=torch_dtype)
    x = torch.randn(tokens, hidden, generator=gen).to(device=device, dtype=torch_dtype).requires_grad_()
    labels = torch.randint(0, vocab, (tokens,), generator=gen).to(device)
    outputs = ("log_probs", "entropy", "is_top1")

    def run(fn):
        def step():
            fn.apply(x, weight, None, labels, 1.0, 32768, None, 1.0, outputs)[0].sum().backward()
            if device == "cuda":
                torch.cuda.synchronize()
        return _time(step)

    times = {"fused": run(ChunkedLogProbFunction), "plain": run(PlainLogProb)}
    best = min(times, key=times.get)
    return best, (f"{tokens} tokens x {vocab} vocabulary, forward and backward: fused "
                  f"{times['fused'] * 1e3:.1f} ms, plain {times['plain'] * 1e3:.1f} ms")


def head_probe_tokens(device: str, vocab: int, free: int) -> int:
    """Tokens of the LM-head timing: on a GPU as many as a micro-batch holds while the plain head's float32
    logits, log-softmax and gradient (12 bytes a token and word) take at most a tenth of free memory."""
    if device == "cpu":
        return HEAD_PROBE_TOKENS
    return max(HEAD_PROBE_TOKENS, min(GPU_HEAD_PROBE_TOKENS, free // 10 // (12 * vocab)))
