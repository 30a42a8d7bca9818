"""Test-only (tests/test_kill.py): SIGKILL one chosen kind of Zephyr job at a chosen point, once.

This folder is on PYTHONPATH only in that test's runs, so Python imports this module first in every
process there; it acts only in the process of a Snakemake `script:` job named in ZEPHYR_TEST_KILL
("script:point,..."), and only until that script's marker exists in ZEPHYR_TEST_KILL_DIR. A point is
either a file-name pattern (the job is killed as it is about to move a file or folder of that name
into place, i.e. with its work done and its output not yet published) or `checkpoint-N` (killed
right after the trainer saved checkpoint N, i.e. between two checkpoints).
"""

import fnmatch
import importlib.abc
import importlib.util
import os
import signal
import sys


def _kill(marker: str, what: str) -> None:
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:  # this kind of job was killed once already
        return
    os.write(fd, what.encode())
    os.fsync(fd)
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


class _PatchTrainer(importlib.abc.MetaPathFinder):
    """Wrap transformers' Trainer._save_checkpoint once transformers.trainer is imported."""

    def __init__(self, marker: str, step: int):
        self.marker, self.step = marker, step

    def find_spec(self, name, path=None, target=None):
        if name != "transformers.trainer":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module
        marker, step = self.marker, self.step

        def exec_module(module):
            run(module)
            save = module.Trainer._save_checkpoint

            def _save_checkpoint(trainer, *args, **kwargs):
                save(trainer, *args, **kwargs)
                if trainer.state.global_step == step:
                    _kill(marker, f"{trainer.args.output_dir}/checkpoint-{step}")

            module.Trainer._save_checkpoint = _save_checkpoint

        spec.loader.exec_module = exec_module
        return spec


def _arm() -> None:
    spec, markers = os.environ.get("ZEPHYR_TEST_KILL"), os.environ.get("ZEPHYR_TEST_KILL_DIR")
    program = sys.argv[0] if sys.argv else ""
    if not (spec and markers and f"{os.sep}.snakemake{os.sep}scripts{os.sep}" in os.path.abspath(program)):
        return
    for item in spec.split(","):
        script, point = item.split(":", 1)
        if os.path.basename(program).endswith(f".{script}.py"):
            break
    else:
        return
    marker = os.path.join(markers, script)
    if os.path.exists(marker):
        return
    if point.startswith("checkpoint-"):
        sys.meta_path.insert(0, _PatchTrainer(marker, int(point.split("-", 1)[1])))
        return
    replace = os.replace

    def patched_replace(src, dst, *args, **kwargs):
        if fnmatch.fnmatch(os.path.basename(os.fspath(dst)), point):
            _kill(marker, os.fspath(dst))
        return replace(src, dst, *args, **kwargs)

    os.replace = patched_replace


_arm()
