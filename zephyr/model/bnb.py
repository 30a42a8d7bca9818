"""bitsandbytes in the jobs that use it (4-bit / 8-bit formats, QLoRA bases, bitsandbytes optimizers), and no other.

peft imports bitsandbytes whenever it is installed (`peft.helpers`), and bitsandbytes wraps its CPU kernels
in `torch.compile` at import, which imports inductor (`torch._inductor.compile_fx`): about 1.1 s of start-up
of every merge, dense training and LlamaFactory-config job (TRL imports transformers.trainer_utils, which
imports peft), measured with peft 0.21.2, bitsandbytes 0.50.2 and torch 2.13 on 2 cores (bench/startup.py).
Dense evaluations and fetches never import it. torch._dynamo stays: transformers' masking_utils imports it.

A job's script decides, from what the job does, before peft, TRL or transformers is imported:
`for_job(needed(...))`. Without it, None stands in `sys.modules["bitsandbytes"]`, so `import bitsandbytes`
raises ImportError and `importlib.util.find_spec` returns None: how peft, transformers and accelerate test
for it. Each then leaves out only what works on bitsandbytes layers and optimizers, which such a job has
none of: its numbers are the same (tests/test_export.py, tests/test_training.py compare them to the byte).
Those tests are cached (functools.lru_cache) at first use, so the decision is made once per process. A job
that uses bitsandbytes but was started without it fails where it would use it (`require`), naming what
needs it, rather than running without it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterable

NAME = "bitsandbytes"


class BitsandbytesError(RuntimeError):
    """A job that uses bitsandbytes started without it (or where it is not installed)."""


def off() -> bool:
    """Whether this process was started without bitsandbytes (`for_job(False)`)."""
    return NAME in sys.modules and sys.modules[NAME] is None


def for_job(needed: bool) -> None:
    """Keep bitsandbytes out of this process unless the job `needed` it (`needed(...)`); call it before
    peft, trl or transformers' model code is imported. Already imported, it stays: nothing left to save."""
    if needed:
        require("this job")
    elif NAME not in sys.modules:
        sys.modules[NAME] = None


def require(what: str) -> None:
    """Fail, naming `what` needs bitsandbytes, in a process started without it: peft or transformers
    would otherwise take their path for dense layers, or fail with an `pip install` hint."""
    if off():
        raise BitsandbytesError(
            f"{what} needs bitsandbytes, but this process was started without it (zephyr.model.bnb.for_job(False), "
            "decided from the job's formats, model folders and optimizer before peft and transformers were "
            "imported); a job that quantizes must say so: for_job(needed(...)) with its format")
    if importlib.util.find_spec(NAME) is None:
        raise BitsandbytesError(f"{what} needs bitsandbytes, which is not installed (requirements.txt pins it)")


def needed(*, formats: Iterable[str | None] = (), model_dirs: Iterable[str | os.PathLike] = (),
           optim: str | None = None) -> bool:
    """Whether a job uses bitsandbytes: it quantizes to one of `formats` (an export's, a QLoRA base's; None
    or "dense": none), loads a bitsandbytes folder among `model_dirs`, or steps the bitsandbytes `optim`."""
    from ..study import QUANTIZED

    if any(format in QUANTIZED for format in formats):
        return True
    if any(quantized_folder(model_dir) for model_dir in model_dirs):
        return True
    if optim is not None:
        from .hyperparameters import bitsandbytes_optimizers

        return optim in bitsandbytes_optimizers()
    return False


def quantized_folder(model_dir: str | os.PathLike) -> bool:
    """Whether a model folder holds bitsandbytes weights (its config.json's `quantization_config` says so)."""
    from .modeldir import quantization_of

    return (quantization_of(model_dir) or {}).get("quant_method") == NAME
