"""Shared fixtures. The hub is unreachable here: make any stray hub call fail at once."""

import os
import tempfile
import shutil
import subprocess
import sys
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


def write_config(directory: Path, config: dict, name: str = "config.test.yaml") -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def snakemake(workdir: Path, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run this checkout's workflow in `workdir` (outputs land there, not in the checkout); `env` adds
    to the environment."""
    cmd = [str(SNAKEMAKE), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir), *args]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir, env={**os.environ, **(env or {})})
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
