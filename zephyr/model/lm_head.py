"""The plain LM head, and the patch that makes TRL's fused head compute through it for a run whose
`speed.lm_head` chose it (zephyr/model/speed.py says why; zephyr/devices.py times the two)."""

from __future__ import annotations

import contextlib


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
