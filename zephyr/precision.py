"""Precision, a study setting: the dtype models are loaded and stored in, and how they compute.

It changes numbers, so it is the config's `precision` and a param of every job it touches (training,
merge, export, evaluation), recorded in every output; nothing chooses it from the machine. `weights`
is the dtype of the frozen training base, of merged models, of an export's unquantized weights and of
every model evaluated (a base model is fetched in its source's dtype and loaded in `weights`).
`compute` is `plain` (compute in the weights' dtype) or `bf16-autocast` (bfloat16 matmuls under
torch.autocast over float32 weights: the Trainer's `bf16`, and the same around every evaluation).
Nothing here imports torch at import time: the Snakefile reads it at every parse.
"""

from __future__ import annotations

import contextlib

from .keys import KeyedError

WEIGHTS = ("float32", "bfloat16")
COMPUTE = ("plain", "bf16-autocast")
#: The report's "float 32 bits": float32 weights, computed in float32.
DEFAULT = {"weights": "float32", "compute": "plain"}
#: TRL/Trainer fields a hyperparameter set may not give: they are the precision's.
TRAINER_FIELDS = ("bf16", "fp16", "tf32", "bf16_full_eval", "fp16_full_eval", "half_precision_backend")


class PrecisionError(KeyedError, ValueError):
    """A `precision` that is not one of its choices."""


def check(where: str, precision: dict | None) -> dict:
    """The precision with defaults, every value checked; errors name `where` and the key."""
    precision = {**DEFAULT, **(precision or {})}
    unknown = sorted(set(precision) - set(DEFAULT))
    if unknown:
        raise PrecisionError(f"{where}: unknown key(s) {unknown}; known: {list(DEFAULT)}")
    for key, allowed in (("weights", WEIGHTS), ("compute", COMPUTE)):
        if precision[key] not in allowed:
            raise PrecisionError(f"{where}.{key}: {precision[key]!r} is not one of {list(allowed)}", (key,))
    if precision["compute"] == "bf16-autocast" and precision["weights"] != "float32":
        raise PrecisionError(f"{where}.compute: bf16-autocast runs over float32 weights; with weights "
                             f"{precision['weights']!r} use compute: plain", ("compute",))
    return precision


def compute_dtype(precision: dict) -> str:
    """The dtype matmuls run in: also the 4-bit compute dtype of QLoRA and of quantized exports."""
    return "bfloat16" if precision["weights"] == "bfloat16" or precision["compute"] == "bf16-autocast" else "float32"


def label(precision: dict) -> str:
    """One phrase for tables, logs and cards: `float32`, `float32 weights, bf16 autocast`, `bfloat16`."""
    return precision["weights"] if precision["compute"] == "plain" else f"{precision['weights']} weights, bf16 autocast"


def trainer_settings(precision: dict) -> dict:
    """The Trainer's own precision fields, always explicit (TRL turns `bf16` on by default on a GPU)."""
    return {"bf16": precision["compute"] == "bf16-autocast", "fp16": False}


@contextlib.contextmanager
def autocast(precision: dict, device: str):
    """Within the block, matmuls compute as `precision` says (evaluation: the Trainer does its own)."""
    if precision["compute"] == "plain":
        yield
        return
    import torch

    with torch.autocast(device_type=device, dtype=torch.bfloat16):
        yield


def record(precision: dict, device: str) -> dict:
    """What an output records of how it was computed: dtype, compute mode and device."""
    return {"dtype": precision["weights"], "compute": precision["compute"], "device": device}
