"""Where models run: the device, its compute dtype, the GPUs a job may use and its CPU threads."""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Mapping

log = logging.getLogger(__name__)

#: Lock files that keep concurrent local jobs on different GPUs (one file per GPU index, machine-wide).
LOCK_DIR = Path(tempfile.gettempdir()) / "zephyr-gpu-locks"
_held: list = []  # the claimed GPUs' open lock files: released when the job's process exits


class DeviceError(RuntimeError):
    """A job asked for GPUs that are not there."""


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


def _visible_count() -> int:
    """GPUs this process can see, counted without initialising CUDA (so CUDA_VISIBLE_DEVICES set
    afterwards still takes effect)."""
    import torch

    return torch.cuda.device_count()


def claim_gpus(count: int, *, available: int | None = None, lock_dir: str | Path = LOCK_DIR,
               wait_seconds: float = 600) -> list[str]:
    """Make exactly `count` GPUs visible to this job (CUDA_VISIBLE_DEVICES) and return their ids.

    Inside a SLURM job, SLURM has chosen the job's GPUs: they are checked and kept. A local run has
    no such choice: Snakemake's `--resources gpu=N` only counts GPUs, so every job would land on
    GPU 0. There, free GPUs (of those visible, or of a CUDA_VISIBLE_DEVICES the user set for the whole
    run) are claimed through a lock file each, held until the job ends. `count` 0 hides every GPU, so
    a job that declared none cannot take one from jobs that did.
    """
    if count <= 0:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        return []
    preset = os.environ.get("CUDA_VISIBLE_DEVICES")
    pool = [i.strip() for i in preset.split(",") if i.strip()] if preset is not None else None
    if pool is not None and "SLURM_JOB_ID" in os.environ:
        if len(pool) < count:
            raise DeviceError(f"the job asks for {count} GPU(s) but SLURM gave it {len(pool)} "
                              f"(CUDA_VISIBLE_DEVICES={preset!r})")
        return _use(pool[:count])
    if pool is None:
        pool = [str(i) for i in range(_visible_count() if available is None else available)]
    if len(pool) < count:
        raise DeviceError(f"the job asks for {count} GPU(s) but this machine shows {len(pool)}; "
                          "lower compute.gpus in the config")
    Path(lock_dir).mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_seconds
    while True:
        taken = []
        for gpu in pool:
            handle = open(Path(lock_dir) / f"gpu{gpu}.lock", "w")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            taken.append((gpu, handle))
            if len(taken) == count:
                _held.extend(handle for _, handle in taken)
                log.info("GPUs %s claimed (locks in %s)", ",".join(g for g, _ in taken), lock_dir)
                return _use([g for g, _ in taken])
        for _, handle in taken:
            handle.close()
        if time.monotonic() > deadline:
            raise DeviceError(f"{count} GPU(s) not free after {wait_seconds:.0f} s: other jobs hold the locks in {lock_dir}")
        log.info("waiting for %d free GPU(s): other jobs hold the rest", count)
        time.sleep(5)


def _use(ids: list[str]) -> list[str]:
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(ids)
    return ids


def release_gpus() -> None:
    """Give the claimed GPUs back before the process ends (tests; a job just exits)."""
    while _held:
        _held.pop().close()


def gpus_of(resources: Mapping) -> int:
    """GPUs a job was given: its `gpu` resource, or else the count of a GPU GRES (`gpu[:type][:count]`,
    for clusters that take only --gres; see profiles/slurm)."""
    gpu = int(resources.get("gpu", 0) or 0)  # (a Snakemake job's resources: a list with .get by name)
    if gpu:
        return gpu
    parts = str(resources.get("gres", "") or "").strip().split(":")
    if parts[0] != "gpu":
        return 0
    return int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 1


def for_job(threads: int | None, resources: Mapping) -> list[str]:
    """A Snakemake job's share of the machine: its CPU threads and its GPUs."""
    set_threads(threads)
    return claim_gpus(gpus_of(resources))
