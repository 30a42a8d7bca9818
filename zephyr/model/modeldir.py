"""A model folder: an ordinary Hugging Face folder plus Zephyr's `manifest.json` (provenance and file
checksums). The one place that reads and writes manifests, checks a folder, builds the bitsandbytes
config, and loads a folder: for inference (dense or quantized), for training (dense or QLoRA), or as
stored (merging); each with its tokenizer, pad token ensured.

Every load names its dtype (the config's `precision`, zephyr/precision.py) or keeps the stored one
(merging reads float32 and writes the precision's): nothing here picks a dtype from the machine.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .. import files
from .. import precision as precisions
from ..devices import device as current_device
from ..study import FORMATS, QUANTIZED
from . import bnb

CONFIG_FILE = "config.json"
#: What a merged or quantized folder inherits from its parent's manifest (the tokenizer is the same).
INHERITED_KEYS = ("model", "architecture", "model_type", "vocab_size", "tokenizer_size", "chat_template_source",
                  "special_tokens", "stop_token_ids")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


class ModelDirError(ValueError):
    """A model folder that cannot be read, merged or exported as asked; raised before any output is written."""


# ---- the folder ------------------------------------------------------------------------------------


def check(model_dir: str | os.PathLike) -> Path:
    """`model_dir` as a Path, once it holds a config.json."""
    model_dir = Path(model_dir)
    if not (model_dir / CONFIG_FILE).is_file():
        raise ModelDirError(f"{model_dir}: no {CONFIG_FILE}; not a model folder")
    return model_dir


def quantization_of(model_dir: str | os.PathLike) -> dict | None:
    """The folder's bitsandbytes `quantization_config`, or None for dense weights."""
    return files.read_json(check(model_dir) / CONFIG_FILE).get("quantization_config") or None


def read_manifest(model_dir: str | os.PathLike, *, required: bool = True) -> dict:
    """The folder's manifest; `{}` for a plain Hugging Face folder unless `required`."""
    path = Path(model_dir) / files.MANIFEST_FILE
    if path.is_file():
        return files.read_json(path)
    if required:
        raise ModelDirError(f"{model_dir}: no {files.MANIFEST_FILE}; not a folder written by Zephyr")
    return {}


def write_manifest(directory: Path, manifest: dict) -> dict:
    """Record the checksum and size of every file of `directory` in `manifest` and write it there, last."""
    manifest.update(files.manifest_files(directory, (p.name for p in directory.iterdir()
                                                     if p.is_file() and p.name != files.MANIFEST_FILE)))
    files.write_json(directory / files.MANIFEST_FILE, manifest)
    return manifest


def verify(model_dir: str | os.PathLike) -> dict:
    """The folder's files checked against its manifest (`files.verify`) before they are used; the
    message names the smallest rerun that rebuilds the folder alone (`files.rebuild_command`)."""
    model_dir = Path(model_dir)
    return files.verify(model_dir, files.rebuild_command(model_dir / files.MANIFEST_FILE))


#: What an adapter's manifest leaves out: the run's records that carry wall times (two identical runs differ
#: in them), read by the report alone. The weights, config, tokenizer and validation items are checked.
ADAPTER_UNCHECKED = ("summary.json", "log_history.csv")
#: The file the training rule is asked for: the target that rebuilds an adapter.
ADAPTER_TARGET = "adapter_config.json"


def write_adapter_manifest(adapter_dir: Path, about: dict) -> dict:
    """Record the checksum and size of an adapter folder's files (`ADAPTER_UNCHECKED` aside), last."""
    names = [p.name for p in Path(adapter_dir).iterdir()
             if p.is_file() and p.name != files.MANIFEST_FILE and p.name not in ADAPTER_UNCHECKED]
    manifest = {**about, **files.manifest_files(adapter_dir, names)}
    files.write_json(Path(adapter_dir) / files.MANIFEST_FILE, manifest)
    return manifest


def verify_adapter(adapter_dir: str | os.PathLike) -> dict:
    """An adapter folder checked against its manifest before it is merged or loaded ({} when it has none)."""
    adapter_dir = Path(adapter_dir)
    return files.verify(adapter_dir, files.rebuild_command(adapter_dir / ADAPTER_TARGET))


def provenance(model_dir: Path, manifest: dict) -> dict:
    """Who a merged or quantized folder's parent is: its folder, identity and checksums."""
    path = Path(model_dir) / files.MANIFEST_FILE
    return {
        "dir": str(model_dir),
        "model": manifest.get("model"),
        "variant": manifest.get("variant") or ("M0" if manifest.get("source") else None),
        "kind": manifest.get("kind") or ("base" if manifest.get("source") else None),
        "source": manifest.get("source"),
        "resolved_revision": manifest.get("resolved_revision"),
        "manifest_sha256": files.sha256(path) if path.is_file() else None,
        "weights_sha256": {p.name: files.sha256(p) for p in sorted(Path(model_dir).glob("*.safetensors"))},
    }


def identity_files(model_dir: str | os.PathLike) -> list[Path]:
    """The files whose content says which weights a folder holds: its manifest (which records every
    file's checksum) when Zephyr wrote it, else its config and weight files."""
    model_dir = Path(model_dir)
    manifest = model_dir / files.MANIFEST_FILE
    if manifest.is_file():
        return [manifest]
    return [model_dir / CONFIG_FILE, *sorted(model_dir.glob("*.safetensors"))]


def has_tokenizer(model_dir: Path) -> bool:
    return any((Path(model_dir) / n).is_file() for n in TOKENIZER_FILES)


def meta_model(model_dir: Path) -> tuple[Any, dict]:
    """The folder's model built on the meta device (no weights read), and its modules by name."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return model, dict(model.named_modules())


# ---- loading ---------------------------------------------------------------------------------------


def quantization_config(format: str, compute_dtype: str):
    """The BitsAndBytesConfig of a quantized format: the one 4-bit / 8-bit config of training and export;
    4-bit layers compute in `compute_dtype` (the study precision's, `precision.compute_dtype`)."""
    import torch
    from transformers import BitsAndBytesConfig

    if format not in QUANTIZED:
        raise ModelDirError(f"unknown quantized format {format!r}; expected one of {list(QUANTIZED)}")
    bnb.require(f"the {format} format")
    if FORMATS[format].bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_use_double_quant=format == "nf4-dq",
                              bnb_4bit_compute_dtype=getattr(torch, compute_dtype))


def load_tokenizer(model_dir: str | os.PathLike):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ensure_pad_token(tokenizer)
    return tokenizer


def ensure_pad_token(tokenizer) -> str:
    """Give a tokenizer without a pad token its EOS as pad; says where the pad came from."""
    if tokenizer.pad_token is not None:
        return "tokenizer"
    if tokenizer.eos_token is None:
        raise ModelDirError(f"tokenizer {tokenizer.name_or_path!r} has neither a pad nor an eos token")
    tokenizer.pad_token = tokenizer.eos_token
    return "eos"


def load_model(model_dir: str | os.PathLike, device: str | None = None, *, dtype: str = "float32",
               format: str | None = None, compute_dtype: str | None = None):
    """The folder's causal LM on `device` (this machine's by default), its (unquantized) weights in
    `dtype` ("float32", "bfloat16"; "auto": as stored).

    `format` quantizes dense weights while loading (QLoRA, exports), its 4-bit layers computing in
    `compute_dtype`; a folder that is already quantized loads as it was saved. Under a data-parallel
    launcher each process takes its own GPU (LOCAL_RANK).
    """
    import torch
    from transformers import AutoModelForCausalLM

    model_dir = check(model_dir)
    verify(model_dir)
    device = device or current_device()
    place = f"cuda:{os.environ['LOCAL_RANK']}" if device == "cuda" and os.environ.get("LOCAL_RANK") else device
    kwargs: dict[str, Any] = {"dtype": dtype if dtype == "auto" else getattr(torch, dtype)}
    if format:
        if compute_dtype is None:
            raise ModelDirError(f"{model_dir}: quantizing to {format} needs the dtype its layers compute in")
        kwargs["quantization_config"] = quantization_config(format, compute_dtype)
    elif bnb.quantized_folder(model_dir):
        bnb.require(f"{model_dir} (bitsandbytes weights)")
    if format or quantization_of(model_dir):
        kwargs["device_map"] = {"": place}
    model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    if "device_map" not in kwargs:
        model.to(place)
    _same_4bit_kernels(model)
    return model


def _same_4bit_kernels(model) -> None:
    """Keep bitsandbytes' 4-bit layers on one kernel on every CPU. On a CPU with AVX-512-bf16 a layer's
    first forward in eval mode repacks its weights for a bf16 kernel for good: its numbers then differ
    from an AVX2 machine's, and a QLoRA run that evaluates during training fails at its next training
    step (bitsandbytes 0.50.2: `result += bias` on a leaf that requires grad). Off: the kernel every CPU has."""
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False


def load(model_dir: str | os.PathLike, device: str | None = None, *, dtype: str = "float32"):
    """(model, tokenizer) of a folder, dense or quantized, in eval mode: ready to score, in `dtype`."""
    model = load_model(model_dir, device, dtype=dtype)
    model.eval()
    return model, load_tokenizer(model_dir)


def load_as_trained(base_dir: str | os.PathLike, adapter_dir: str | os.PathLike, qlora: str, precision: dict):
    """(model, tokenizer) of a QLoRA variant as it was trained, in eval mode: `base_dir` quantized as
    `qlora` while loading (as training loaded it), its 4-bit layers computing in the study `precision`'s
    compute dtype, with the adapter of `adapter_dir` on top, unmerged."""
    from peft import PeftModel

    verify_adapter(adapter_dir)
    base = load_model(base_dir, dtype=precision["weights"], format=qlora,
                      compute_dtype=precisions.compute_dtype(precision))
    model = PeftModel.from_pretrained(base, adapter_dir)
    model.eval()
    return model, load_tokenizer(adapter_dir)


def load_for_training(model_dir: str | os.PathLike, device: str, qlora: str | None, precision: dict):
    """The model to put LoRA on, its frozen weights in the study `precision`'s dtype: dense, or quantized
    while loading for QLoRA (prepared for k-bit training)."""
    model = load_model(model_dir, device, dtype=precision["weights"], format=qlora,
                       compute_dtype=precisions.compute_dtype(precision))
    if qlora:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return model
