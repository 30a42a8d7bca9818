"""Where models run: the device, its compute dtype, and how many CPU threads a job may use."""

from __future__ import annotations


def device() -> str:
    """"cuda" when a GPU is visible, else "cpu"."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def dtype_for(dev: str | None = None):
    """bfloat16 on a GPU that supports it, float32 otherwise (the CPU included)."""
    import torch

    dev = str(dev or device())
    if dev.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def set_threads(threads: int | None) -> None:
    """Cap torch's CPU threads at the job's share: on 2 cores, two jobs of 2 threads each run
    many times slower than two of 1 thread."""
    if threads:
        import torch

        torch.set_num_threads(int(threads))
