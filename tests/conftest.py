"""Shared fixtures. The hub is unreachable here: make any stray hub call fail at once."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
# Timed speed choices are kept per machine; tests keep theirs apart from the user's.
os.environ.setdefault("ZEPHYR_CACHE", tempfile.mkdtemp(prefix="zephyr-test-cache-"))

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SNAKEMAKE = Path(sys.executable).with_name("snakemake")


@pytest.fixture
def connections(monkeypatch) -> list:
    """Every network connection the test's code tries (name look-ups too), each refused at once: offline
    code should try none (one tried is one the hub client retries, with back-off, without a network)."""
    tried = []

    def refuse(where):
        tried.append(where)
        raise OSError(f"no network in tests ({where})")

    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *args, **kwargs: refuse(host))
    monkeypatch.setattr(socket.socket, "connect", lambda sock, address: refuse(address))
    return tried


def load_yaml(path):
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


@pytest.fixture
def tiny_config(tmp_path):
    """The tiny workflow config, with its local fixture files copied into a fresh work directory."""
    config = load_yaml(FIXTURES / "tiny.yaml")
    (tmp_path / "data").mkdir()
    shutil.copy(FIXTURES / "datasets" / "truthy_dpo.jsonl", tmp_path / "data" / "truthy_dpo.jsonl")
    shutil.copytree(FIXTURES / "tokenizer", tmp_path / "tokenizer")
    return config


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from a second thread, and two OpenMP threads crawl when another process
    holds one of the two cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def lively_dir(tmp_path_factory):
    """A tiny Qwen2 with its weights shaken: a fresh init only repeats its last token, which tests nothing."""
    import tinymodels

    return tinymodels.shake(tinymodels.qwen2(tmp_path_factory.mktemp("models") / "lively"))


@pytest.fixture(scope="module")
def lm(lively_dir):
    from zephyr.model import modeldir

    return modeldir.load(lively_dir, "cpu")


def write_config(directory: Path, config: dict, name: str = "config.test.yaml") -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


#: The longest one Snakemake run of a test may take (the tiny study takes a few minutes on 2 cores).
SNAKEMAKE_TIMEOUT = 1200


def study_path(workdir: Path, config_file: Path, kind: str, *args) -> str:
    """A path of the study as the workflow computes it in `workdir` (a shared file's fingerprint reads
    the study's local sources there): `study_path(tmp_path, config, "dataset", "epfl", "manifest.json")`."""
    import contextlib

    from zephyr import studies

    with contextlib.chdir(workdir):
        return getattr(studies.load(config_file)[1], kind)(*args)


def shared_file(workdir: Path, kind: str, name: str, file: str) -> Path:
    """The one shared file of `kind` (datasets, models, records) and `name` in `workdir`, whatever its
    fingerprint."""
    found = sorted((workdir / "resources" / kind / name).glob(file))
    assert len(found) == 1, found
    return found[0]


def run(cmd: list, *, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """`subprocess.run(cmd, capture_output=True, text=True)` that fails the test after `timeout` seconds,
    with the command's whole process group killed: a hung job must not hang the suite, nor a job that
    outlives its parent keep the output pipes open."""
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                          **kwargs) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            pytest.fail(f"{' '.join(map(str, cmd))} still ran after {timeout} s, killed:\n"
                        f"{stdout[-2000:]}\n{stderr[-4000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


#: Runs scripts/NAME.py in a fresh process as Snakemake does, with a `snakemake` object of the job's fields
#: (input, output, params, wildcards, log, resources: Namedlists), and prints which modules the job imported.
SCRIPT_DRIVER = """
import json, runpy, sys, types
from snakemake.iocontainers import Namedlist
script, fields, modules = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
job = types.SimpleNamespace(**{k: Namedlist(fromdict=v) if isinstance(v, dict) else v for k, v in fields.items()})
runpy.run_path(script, init_globals={"snakemake": job}, run_name="__main__")
print("IMPORTED " + json.dumps({m: sys.modules.get(m) is not None for m in modules}))
"""


def run_script(script: str, fields: dict, modules: list[str], *, timeout: float = 300) -> dict:
    """Run `scripts/<script>.py` as its own job (see `SCRIPT_DRIVER`; threads 1, no resources unless
    given); {module: imported} of `modules` once it finished."""
    import json

    fields = {"threads": 1, "resources": {}, "wildcards": {}, "params": {}, **fields}
    result = run([sys.executable, "-c", SCRIPT_DRIVER, str(ROOT / "scripts" / f"{script}.py"), json.dumps(fields),
                  json.dumps(modules)], timeout=timeout, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.rsplit("IMPORTED ", 1)[1])


def snakemake(workdir: Path, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run this checkout's workflow in `workdir` (outputs land there, not in the checkout); `env` adds
    to the environment."""
    cmd = [str(SNAKEMAKE), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir), *args]
    result = run(cmd, timeout=SNAKEMAKE_TIMEOUT, cwd=workdir, env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


def tiny_workdir(directory: Path) -> tuple[dict, Path]:
    """A work directory for the tiny config (its local files copied in); returns the config and its path."""
    config = load_yaml(FIXTURES / "tiny.yaml")
    (directory / "data").mkdir(exist_ok=True)
    shutil.copy(FIXTURES / "datasets" / "truthy_dpo.jsonl", directory / "data" / "truthy_dpo.jsonl")
    shutil.copytree(FIXTURES / "tokenizer", directory / "tokenizer", dirs_exist_ok=True)
    return config, write_config(directory, config)


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory):
    """The tiny study run once to the end, uninterrupted (several minutes on 2 cores): shared by the
    tests that read its outputs. Returns the work directory; its config is `config.test.yaml`.
    Tests may add files to it (a report, other configs) but must not rerun or change its outputs."""
    workdir = tmp_path_factory.mktemp("tiny_study")
    _, config = tiny_workdir(workdir)
    snakemake(workdir, "--cores", "2", "--configfile", str(config))
    return workdir
