"""Where models run: the device, the GPUs a job may use and its CPU threads, and its free memory."""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

log = logging.getLogger(__name__)

#: Lock files that keep concurrent local jobs on different GPUs (one file per GPU index, machine-wide).
LOCK_DIR = Path(tempfile.gettempdir()) / "zephyr-gpu-locks"
#: How often a job waiting for GPUs tries again.
POLL_SECONDS = 5
_held: list = []  # the claimed GPUs' open lock files: released when the job's process exits
_shares: list = []  # (ledger, entry, MB) of this process's shared claims: removed on release
_entry_ids = itertools.count()
#: Extra GPU memory a job books beyond what it plans for: the CUDA context, and an inference job's
#: activations and KV cache.
OVERHEAD_MB = 1536


class DeviceError(RuntimeError):
    """A job asked for GPUs that are not there."""


def device() -> str:
    """"cuda" when a GPU is visible, else "cpu"."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


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
               wait_seconds: float = 600, memory_mb: int | None = None,
               capacity_mb: Mapping[str, int] | None = None) -> list[str]:
    """Make exactly `count` GPUs visible to this job (CUDA_VISIBLE_DEVICES) and return their ids.

    Inside a SLURM job, SLURM has chosen the job's GPUs: they are checked and kept. A local run has
    no such choice: Snakemake's `--resources gpu=N` only counts GPUs, so every job would land on
    GPU 0. There, free GPUs (of those visible, or of a CUDA_VISIBLE_DEVICES the user set for the whole
    run) are claimed through a lock file each, held until the job ends. `count` 0 hides every GPU, so
    a job that declared none cannot take one from jobs that did.

    A one-GPU job that says how much GPU memory it needs (`memory_mb`) shares a GPU with other such
    jobs up to the GPU's memory (`capacity_mb`, GPU id → MB; read from nvidia-smi when not given):
    it holds the GPU's lock shared, so a whole-GPU job waits for it and it waits for a whole-GPU job,
    and books its memory in the GPU's ledger (entries of ended processes do not count).
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
    lock_dir = Path(lock_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    capacity = capacity_mb if capacity_mb is not None else (gpu_memory_mb() if memory_mb else {})
    if memory_mb and count == 1 and all(gpu in capacity for gpu in pool):
        if all(memory_mb > capacity[gpu] for gpu in pool):
            raise DeviceError(f"the job needs {memory_mb} MB of GPU memory, more than any GPU has "
                              f"({dict(capacity)} MB)")
        return _wait_for(lambda: _share_one(pool, memory_mb, capacity, lock_dir), wait_seconds,
                         f"no GPU had {memory_mb} MB free after {wait_seconds:.0f} s: other jobs hold them "
                         f"(ledgers in {lock_dir})", f"waiting for a GPU with {memory_mb} MB free")
    return _wait_for(lambda: _take_whole(pool, count, lock_dir), wait_seconds,
                     f"{count} GPU(s) not free after {wait_seconds:.0f} s: other jobs hold the locks in {lock_dir}",
                     f"waiting for {count} free GPU(s): other jobs hold the rest")


def _wait_for(attempt: Callable[[], list[str] | None], wait_seconds: float, gave_up: str, waiting: str) -> list[str]:
    """Make the GPUs of the first `attempt` that gets some visible, trying every POLL_SECONDS; a
    DeviceError saying `gave_up` once `wait_seconds` have passed."""
    deadline = time.monotonic() + wait_seconds
    while (ids := attempt()) is None:
        if time.monotonic() > deadline:
            raise DeviceError(gave_up)
        log.info(waiting)
        time.sleep(POLL_SECONDS)
    return _use(ids)


def _lock(lock_dir: Path, gpu: str, mode: int):
    """The GPU's lock file, held with `mode` (exclusive: a whole-GPU job; shared: a job booking part of it);
    None while another job holds it the other way."""
    handle = open(lock_dir / f"gpu{gpu}.lock", "w")
    try:
        fcntl.flock(handle, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def _take_whole(pool: list[str], count: int, lock_dir: Path) -> list[str] | None:
    """The first `count` GPUs of `pool` whose locks no other job holds, held exclusively; None if fewer are free."""
    taken = []
    for gpu in pool:
        handle = _lock(lock_dir, gpu, fcntl.LOCK_EX)
        if handle is None:
            continue
        taken.append((gpu, handle))
        if len(taken) == count:
            _held.extend(handle for _, handle in taken)
            log.info("GPUs %s claimed (locks in %s)", ",".join(g for g, _ in taken), lock_dir)
            return [g for g, _ in taken]
    for _, handle in taken:
        handle.close()
    return None


def _share_one(pool: list[str], memory_mb: int, capacity: Mapping[str, int], lock_dir: Path) -> list[str] | None:
    """The first GPU of `pool` that no whole-GPU job holds and whose ledger has `memory_mb` free, its lock
    held shared and the memory booked; None if none has."""
    for gpu in pool:
        handle = _lock(lock_dir, gpu, fcntl.LOCK_SH)  # fails while a whole-GPU job holds it
        if handle is None:
            continue
        entry = _book(lock_dir / f"gpu{gpu}.json", memory_mb, capacity[gpu])
        if entry is None:
            handle.close()
            continue
        _held.append(handle)
        _shares.append((lock_dir / f"gpu{gpu}.json", entry, memory_mb))
        log.info("GPU %s shared: %d MB booked of its %d MB (ledger in %s)", gpu, memory_mb, capacity[gpu], lock_dir)
        return [gpu]
    return None


@contextlib.contextmanager
def _ledger(path: Path) -> Iterator[dict]:
    """A GPU's bookings (entry → pid and MB), read under the ledger's lock and written back if changed."""
    with open(path.with_suffix(".ledger-lock"), "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        booked = json.loads(path.read_text()) if path.is_file() else {}
        before = dict(booked)
        yield booked
        if booked != before:
            path.write_text(json.dumps(booked))


def _book(ledger: Path, memory_mb: int, capacity_mb: int) -> str | None:
    """Add this job's booking to a GPU's ledger if the live bookings leave room; its entry name, else None."""
    with _ledger(ledger) as booked:
        live = {name: b for name, b in booked.items() if _alive(b["pid"])}
        if sum(b["mb"] for b in live.values()) + memory_mb > capacity_mb:
            return None
        entry = f"{os.getpid()}-{next(_entry_ids)}"
        booked.clear()
        booked.update(live, **{entry: {"pid": os.getpid(), "mb": memory_mb}})
        return entry


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        pass
    return True


def gpu_memory_mb() -> dict[str, int]:
    """Total memory of each GPU by index, from nvidia-smi (without initialising CUDA); {} without one."""
    if shutil.which("nvidia-smi") is None:
        return {}
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return {}
    return {index.strip(): int(float(total)) for index, total in (line.split(",") for line in out.splitlines() if line)}


def inference_memory_mb(model_dir: str | Path) -> int:
    """GPU memory an evaluation or export of a model folder needs: its weights and a fixed overhead."""
    from .files import weights_size

    return int(weights_size(model_dir) * 1.2 / 2**20) + OVERHEAD_MB


def booked_bytes() -> int | None:
    """The GPU memory this process booked on a shared GPU, which its plans must stay within; None when
    it holds its GPUs whole (or none)."""
    return sum(mb for _, _, mb in _shares) * 2**20 if _shares else None


def _use(ids: list[str]) -> list[str]:
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(ids)
    return ids


def release_gpus() -> None:
    """Give the claimed GPUs back before the process ends (tests; a job just exits)."""
    while _shares:
        ledger, entry, _ = _shares.pop()
        with _ledger(ledger) as booked:
            booked.pop(entry, None)
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


def for_job(threads: int | None, resources: Mapping, memory_mb: int | None = None) -> list[str]:
    """A Snakemake job's share of the machine: its CPU threads and its GPUs. A one-GPU job given its
    GPU memory need (`memory_mb`; a `gpu_mem_mb` resource overrides it) shares a GPU on local runs."""
    set_threads(threads)
    memory_mb = int(resources.get("gpu_mem_mb", 0) or 0) or memory_mb
    return claim_gpus(gpus_of(resources), memory_mb=memory_mb)


def free_bytes(device: str) -> int:
    """Free memory of the device a run trains on: the GPU's (at most what the job booked on a shared
    GPU), or the machine's available RAM."""
    if device == "cuda":
        import torch

        free = torch.cuda.mem_get_info()[0]
        booked = booked_bytes()
        return free if booked is None else min(free, booked)
    import psutil

    return psutil.virtual_memory().available
