"""Where models run: the device, the GPUs a job may use and its CPU threads, its free memory, and what
was timed on this machine.

A timed choice (the LM head, which moves a result by float rounding only) is made once per machine and
kept (`$ZEPHYR_CACHE`, default ~/.cache/zephyr/speed.json), so that reruns on one machine train the same
bytes; delete the file to time again.
"""

from __future__ import annotations

import fcntl
import functools
import itertools
import json
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

#: Lock files that keep concurrent local jobs on different GPUs (one file per GPU index, machine-wide).
LOCK_DIR = Path(tempfile.gettempdir()) / "zephyr-gpu-locks"
_held: list = []  # the claimed GPUs' open lock files: released when the job's process exits
_shares: list = []  # (ledger, entry, MB) of this process's shared claims: removed on release
_entry_ids = itertools.count()
#: Extra GPU memory a job books beyond what it plans for: the CUDA context, and an inference job's
#: activations and KV cache.
OVERHEAD_MB = 1536
#: Tokens of the LM-head timing on the CPU: enough for a stable figure, well under a second.
HEAD_PROBE_TOKENS = 256
#: On a GPU, at most a micro-batch's worth of tokens (there 256 would time kernel launches, not the head).
GPU_HEAD_PROBE_TOKENS = 8192


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
    Path(lock_dir).mkdir(parents=True, exist_ok=True)
    capacity = capacity_mb if capacity_mb is not None else (gpu_memory_mb() if memory_mb else {})
    if memory_mb and count == 1 and all(gpu in capacity for gpu in pool):
        return _claim_shared(pool, memory_mb, capacity, Path(lock_dir), wait_seconds)
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
            raise DeviceError(f"{count} GPU(s) not free after {wait_seconds:.0f} s: "
                              f"other jobs hold the locks in {lock_dir}")
        log.info("waiting for %d free GPU(s): other jobs hold the rest", count)
        time.sleep(5)


def _claim_shared(pool: list[str], memory_mb: int, capacity: Mapping[str, int], lock_dir: Path,
                  wait_seconds: float) -> list[str]:
    too_big = [gpu for gpu in pool if memory_mb > capacity[gpu]]
    if len(too_big) == len(pool):
        raise DeviceError(f"the job needs {memory_mb} MB of GPU memory, more than any GPU has ({dict(capacity)} MB)")
    deadline = time.monotonic() + wait_seconds
    while True:
        for gpu in pool:
            handle = open(lock_dir / f"gpu{gpu}.lock", "w")
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)  # fails while a whole-GPU job holds it
            except BlockingIOError:
                handle.close()
                continue
            entry = _book(lock_dir / f"gpu{gpu}.json", memory_mb, capacity[gpu])
            if entry is None:
                handle.close()
                continue
            _held.append(handle)
            _shares.append((lock_dir / f"gpu{gpu}.json", entry, memory_mb))
            log.info("GPU %s shared: %d MB booked of its %d MB (ledger in %s)", gpu, memory_mb, capacity[gpu],
                     lock_dir)
            return _use([gpu])
        if time.monotonic() > deadline:
            raise DeviceError(f"no GPU had {memory_mb} MB free after {wait_seconds:.0f} s: other jobs hold them "
                              f"(ledgers in {lock_dir})")
        log.info("waiting for a GPU with %d MB free", memory_mb)
        time.sleep(5)


def _book(ledger: Path, memory_mb: int, capacity_mb: int) -> str | None:
    """Add this job's booking to a GPU's ledger if the live bookings leave room; its entry name, else None."""
    with open(ledger.with_suffix(".ledger-lock"), "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        booked = json.loads(ledger.read_text()) if ledger.is_file() else {}
        booked = {name: b for name, b in booked.items() if _alive(b["pid"])}
        if sum(b["mb"] for b in booked.values()) + memory_mb > capacity_mb:
            return None
        entry = f"{os.getpid()}-{next(_entry_ids)}"
        booked[entry] = {"pid": os.getpid(), "mb": memory_mb}
        ledger.write_text(json.dumps(booked))
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
        with open(ledger.with_suffix(".ledger-lock"), "w") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            booked = json.loads(ledger.read_text()) if ledger.is_file() else {}
            booked.pop(entry, None)
            ledger.write_text(json.dumps(booked))
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


# ---- timings ---------------------------------------------------------------------------------------


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

    from .model.lm_head import PlainLogProb

    torch_dtype = getattr(torch, dtype)
    tokens = head_probe_tokens(device, vocab, free_bytes(device) if device == "cuda" else 0)
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
