"""Quantized exports: a bitsandbytes NF4, NF4 + double quantization, or 8-bit copy of a model folder.

The copy is saved right after loading, before any forward pass: on CPU a forward pass repacks plain
NF4 weights, and a save after it reloads damaged (measured with bitsandbytes 0.50.2). Staged like every
output folder.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from .. import files
from .. import precision as precisions
from ..devices import device
from ..environment import installed_versions
from ..study import FORMATS
from . import cards, modeldir
from .modeldir import ModelDirError

log = logging.getLogger(__name__)

#: bitsandbytes' CPU 4-bit kernels work in blocks of 64 along a Linear's input and pack 32 outputs at a
#: time (`_convert_weight_packed_for_cpu`, used on CPUs with AVX-512 BF16): sizes must be multiples of 64.
CPU_4BIT_MULTIPLE = 64


def quantize(model_dir: str | os.PathLike, out_dir: str | os.PathLike, format: str,
             study_precision: dict | None = None) -> dict:
    """Write a bitsandbytes copy of `model_dir` in `format` ("nf4", "nf4-dq" or "int8") to `out_dir`.

    Weights that are not quantized (embeddings, norms, the output head) are kept in the study
    precision's dtype (zephyr/precision.py; float32 when not given), and 4-bit layers compute in its
    compute dtype. The copy is saved right after loading, before any forward pass. Returns the manifest.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    study_precision = precisions.check("precision", study_precision)
    dev = device()
    compute = precisions.compute_dtype(study_precision)
    qconfig = modeldir.quantization_config(format, compute)
    existing = modeldir.quantization_of(model_dir)
    if existing:
        raise ModelDirError(f"{model_dir} is already quantized ({existing.get('quant_method', existing)}); "
                            "export from the unquantized model")
    if FORMATS[format].bits == 4 and dev == "cpu":
        check_cpu_4bit(model_dir, qconfig)
    parent_manifest = modeldir.read_manifest(model_dir, required=False)
    parent_bytes = files.weights_size(model_dir)

    log.info("quantizing %s to %s on %s → %s", model_dir, format, dev, out_dir)
    model = modeldir.load_model(model_dir, dev, dtype=study_precision["weights"], format=format,
                                compute_dtype=compute)
    tokenizer = modeldir.load_tokenizer(model_dir)
    quantized = sorted(n for n, m in model.named_modules() if type(m).__module__.startswith("bitsandbytes"))
    with files.staged_dir(out_dir) as staged:
        model.save_pretrained(staged)  # first thing after quantizing: no forward pass before this
        tokenizer.save_pretrained(staged)
        export_bytes = files.weights_size(staged)
        parent = modeldir.provenance(model_dir, parent_manifest)
        manifest = {
            "kind": "quantized",
            **{k: parent_manifest[k] for k in modeldir.INHERITED_KEYS if k in parent_manifest},
            "variant": parent["variant"],
            "format": format,
            "format_description": FORMATS[format].description,
            "quantization_config": _jsonable(qconfig.to_dict()),
            "device": dev,
            "study_precision": study_precision,
            "dtype_unquantized": str(model.dtype).removeprefix("torch."),
            "quantized_modules": len(quantized),
            "parent": parent,
            "parent_weights_bytes": parent_bytes,
            "weights_bytes": export_bytes,
            "size_ratio": round(export_bytes / parent_bytes, 4) if parent_bytes else None,
            "versions": installed_versions("torch", "transformers", "bitsandbytes", "accelerate", "safetensors"),
        }
        with files.atomic(staged / cards.CARD_FILE) as handle:
            handle.write(cards.quantized_card(manifest, parent_manifest))
        modeldir.write_manifest(staged, manifest)
    log.info("%s: %s, %d modules quantized, %d → %d bytes of weights (%.2fx)", out_dir, format, len(quantized),
             parent_bytes, export_bytes, manifest["size_ratio"] or 0)
    return manifest


def check_cpu_4bit(model_dir: str | os.PathLike, qconfig=None) -> None:
    """Fail clearly, before loading, when a Linear that would be quantized has a size that is not a
    multiple of 64: bitsandbytes' CPU 4-bit kernels fail on it at the first forward pass with a
    cryptic `RuntimeError: shape '[128, 5]' is invalid`."""
    import torch
    from transformers.quantizers.base import HfQuantizer
    from transformers.quantizers.quantizers_utils import should_convert_module

    model_dir = Path(model_dir)
    model, modules = modeldir.meta_model(model_dir)
    skip = HfQuantizer.get_modules_to_not_convert(
        model, getattr(qconfig, "llm_int8_skip_modules", None), model._keep_in_fp32_modules
    )
    bad = [
        f"{name} (Linear {m.in_features} → {m.out_features})"
        for name, m in modules.items()
        if type(m) is torch.nn.Linear and should_convert_module(name, skip)
        and (m.in_features % CPU_4BIT_MULTIPLE or m.out_features % CPU_4BIT_MULTIPLE)
    ]
    if bad:
        shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise ModelDirError(
            f"{model_dir}: 4-bit export on CPU needs Linear sizes that are multiples of {CPU_4BIT_MULTIPLE} "
            f"(bitsandbytes' CPU kernels), but {shown}. Use sizes that are multiples of {CPU_4BIT_MULTIPLE}, "
            "the int8 export, or a GPU"
        )


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
