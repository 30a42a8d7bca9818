"""Merged models and quantized exports: fold a LoRA adapter into its parent, and 4-bit / 8-bit copies.

- `merge_adapter` checks that the adapter belongs to the base (its recorded base model and the shapes
  of its target modules) before loading any weights, merges it, and writes an ordinary Hugging Face
  folder with a model card (`README.md`) and a provenance `manifest.json`.
- `quantize` writes a bitsandbytes NF4, NF4 + double quantization, or 8-bit copy of a model folder,
  saved right after quantizing: on CPU a forward pass repacks plain NF4 weights, and a save after it
  reloads damaged (see STACK-NOTES).
- `load_quantized` reloads such a copy for evaluation.

Every output folder is written beside its final place and moved in at the end (`files.staged_dir`), so a
failed or killed job never leaves a folder that looks finished.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Iterator

from . import files
from .devices import device, dtype_for
from .environment import installed_versions

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
CARD_FILE = "README.md"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")

#: precision → what it is; the keys are the `{precision}` of `results/models/{model}/{variant}-{precision}/`.
PRECISIONS = {
    "nf4": "4-bit NormalFloat (bitsandbytes NF4)",
    "nf4-dq": "4-bit NormalFloat with double quantization of the scales",
    "int8": "8-bit LLM.int8() (bitsandbytes)",
}
#: bitsandbytes' CPU 4-bit kernels work in blocks of 64 along a Linear's input and pack 32 outputs at a
#: time (`_convert_weight_packed_for_cpu`, used on CPUs with AVX-512 BF16): sizes must be multiples of 64.
CPU_4BIT_MULTIPLE = 64
#: What a merged or quantized folder inherits from its parent's manifest (the tokenizer is the same).
INHERITED_KEYS = ("model", "architecture", "model_type", "vocab_size", "tokenizer_size", "chat_template_source",
                  "special_tokens", "stop_token_ids")
#: Keys of a model card dict that `render_card` lays out in their own sections.
CARD_SECTIONS = ("model", "variant", "description", "parent", "base_source", "data", "qlora", "hyperparameters",
                 "experiment", "base_model", "tags")


class ExportError(ValueError):
    """A merge or export that cannot be done as asked; raised before any output is written."""


# ---- merging ---------------------------------------------------------------------------------------


def merge_adapter(base_dir: str | os.PathLike, adapter_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                  card: dict) -> dict:
    """Merge the LoRA adapter in `adapter_dir` into the model in `base_dir`; write the result to `out_dir`.

    `card` says how the adapter was made (model, variant, parent, base source, data, hyperparameters...);
    it goes into the model card and the manifest as given. Returns the manifest (also manifest.json).
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base_dir, adapter_dir, out_dir = Path(base_dir), Path(adapter_dir), Path(out_dir)
    adapter_config = check_adapter(base_dir, adapter_dir)
    base_manifest = _read_manifest(base_dir)

    log.info("merging %s into %s → %s", adapter_dir, base_dir, out_dir)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype="auto")
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    merged.eval()
    tokenizer_dir = adapter_dir if _has_tokenizer(adapter_dir) else base_dir
    tokenizer = _load_tokenizer(tokenizer_dir)

    manifest = {
        "kind": "merged",
        **{k: base_manifest[k] for k in INHERITED_KEYS if k in base_manifest},
        "model": card.get("model", base_manifest.get("model")),
        "variant": card.get("variant"),
        "architecture": type(merged).__name__,
        "model_type": merged.config.model_type,
        "parameters": sum(p.numel() for p in merged.parameters()),
        "dtype": str(merged.dtype).removeprefix("torch."),
        "parent": _parent_record(base_dir, base_manifest),
        "adapter": _adapter_record(adapter_dir, adapter_config),
        "tokenizer_from": str(tokenizer_dir),
        "hyperparameters": card.get("hyperparameters"),
        "card": card,
        "versions": installed_versions("torch", "transformers", "peft", "tokenizers", "safetensors"),
    }
    with files.staged_dir(out_dir) as staged:
        with torch.no_grad():
            merged.save_pretrained(staged)
        tokenizer.save_pretrained(staged)
        with files.atomic(staged / CARD_FILE) as handle:
            handle.write(render_card(card, manifest=manifest, base_manifest=base_manifest,
                                     training=_training_summary(adapter_dir)))
        manifest["files"] = _file_hashes(staged)
        files.write_json(staged / MANIFEST_FILE, manifest)
    log.info("merged %s: %d parameters, %s, %d bytes of weights", out_dir, manifest["parameters"], manifest["dtype"],
             files.weights_size(out_dir))
    return manifest


def check_adapter(base_dir: str | os.PathLike, adapter_dir: str | os.PathLike) -> dict:
    """The adapter's config, once it is known to belong to `base_dir`; else an ExportError naming both.

    Reads only small files (configs, safetensors headers) and builds the base on the meta device, so a
    mismatch fails in a fraction of a second. The adapter belongs to the base when its recorded
    `base_model_name_or_path` is the base folder (compared as absolute paths; a relative path is taken
    from the working directory, as `from_pretrained` does) or the base's manifest names it (its
    `model`, or the hub id of its source), and when every target module exists in the base with the
    adapter's shapes.
    """
    base_dir, adapter_dir = Path(base_dir), Path(adapter_dir)
    config_path = adapter_dir / ADAPTER_CONFIG
    if not (base_dir / "config.json").is_file():
        raise ExportError(f"base {base_dir}: no config.json; not a model folder")
    if not config_path.is_file():
        raise ExportError(f"adapter {adapter_dir}: no {ADAPTER_CONFIG}; not a PEFT adapter folder")
    config = files.read_json(config_path)
    recorded = config.get("base_model_name_or_path")
    manifest = _read_manifest(base_dir)
    if not _same_base(recorded, base_dir, manifest):
        names = [n for n in (manifest.get("model"), (manifest.get("source") or {}).get("id")) if n]
        raise ExportError(
            f"adapter {adapter_dir} was trained on {recorded!r}, not on base {base_dir} "
            f"({Path(base_dir).resolve()}{', model ' + ' / '.join(map(repr, names)) if names else ''}); "
            "refusing to merge it"
        )
    meta = _meta_model(base_dir)
    _check_targets(config, meta, base_dir, adapter_dir)
    _check_adapter_shapes(adapter_dir, meta, base_dir)
    return config


def _same_base(recorded: str | None, base_dir: Path, manifest: dict) -> bool:
    if not recorded:
        return False
    if recorded in {manifest.get("model"), (manifest.get("source") or {}).get("id")} - {None}:
        return True
    try:
        return Path(recorded).expanduser().resolve() == base_dir.resolve()
    except (OSError, RuntimeError):
        return False


def _meta_model(model_dir: Path) -> tuple[Any, dict]:
    """The model of `model_dir` built on the meta device (no weights read), and its modules by name."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return model, dict(model.named_modules())


def _check_targets(config: dict, meta: tuple, base_dir: Path, adapter_dir: Path) -> None:
    _, modules = meta
    targets = config.get("target_modules") or []
    names = [n for n in modules if n]
    if isinstance(targets, str):  # PEFT: a string is a regex matched against the full module name
        missing = [] if any(re.fullmatch(targets, n) for n in names) else [targets]
        targets = [targets]
    else:
        missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        leaves = sorted({n.rsplit(".", 1)[-1] for n, m in modules.items() if n and not list(m.children())})
        raise ExportError(
            f"adapter {adapter_dir} targets {missing} (of {list(targets)}), which base {base_dir} does not have; "
            f"its modules are named {leaves}"
        )


def _check_adapter_shapes(adapter_dir: Path, meta: tuple, base_dir: Path) -> None:
    """Each lora_A / lora_B matrix must fit the base module it adapts (a base of another size fails here)."""
    import torch

    _, modules = meta
    weights = adapter_dir / ADAPTER_WEIGHTS[0]
    if not weights.is_file():
        if (adapter_dir / ADAPTER_WEIGHTS[1]).is_file():
            return  # a pickled adapter: PEFT checks it when loading
        raise ExportError(f"adapter {adapter_dir}: no {ADAPTER_WEIGHTS[0]}")
    from safetensors import safe_open

    pattern = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$")
    with safe_open(str(weights), framework="pt") as handle:
        for key in handle.keys():
            match = pattern.match(key)
            if not match:
                continue
            name, shape = match["module"], list(handle.get_slice(key).get_shape())
            module = modules.get(name)
            if module is None:
                raise ExportError(f"adapter {adapter_dir} adapts {name}, which base {base_dir} does not have")
            if not isinstance(module, torch.nn.Linear) or len(shape) != 2:
                continue
            expected, got = (module.in_features, shape[1]) if match["ab"] == "A" else (module.out_features, shape[0])
            if expected != got:
                raise ExportError(
                    f"adapter {adapter_dir} does not fit base {base_dir}: {key} has shape {shape}, but {name} is "
                    f"Linear({module.in_features} → {module.out_features}) there; it was trained on another model"
                )


# ---- quantizing ------------------------------------------------------------------------------------


def quantization_config(precision: str, dev: str | None = None):
    """The BitsAndBytesConfig of a precision (compute in float32 on CPU, bfloat16 on a GPU that has it)."""
    from transformers import BitsAndBytesConfig

    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r}; expected one of {list(PRECISIONS)}")
    if precision == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_use_double_quant=precision == "nf4-dq",
                              bnb_4bit_compute_dtype=dtype_for(dev or device()))


def quantize(model_dir: str | os.PathLike, out_dir: str | os.PathLike, precision: str) -> dict:
    """Write a bitsandbytes `precision` copy ("nf4", "nf4-dq" or "int8") of `model_dir` to `out_dir`.

    Weights that are not quantized (embeddings, norms, the output head) keep the dtype they are stored
    in. The copy is saved right after loading, before any forward pass. Returns the manifest.
    """
    from transformers import AutoModelForCausalLM

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    dev = device()
    qconfig = quantization_config(precision, dev)
    if not (model_dir / "config.json").is_file():
        raise ExportError(f"{model_dir}: no config.json; not a model folder")
    existing = files.read_json(model_dir / "config.json").get("quantization_config")
    if existing:
        raise ExportError(f"{model_dir} is already quantized ({existing.get('quant_method', existing)}); "
                          "export from the unquantized model")
    if precision != "int8" and dev == "cpu":
        check_cpu_4bit(model_dir, qconfig)
    parent_manifest = _read_manifest(model_dir)
    parent_bytes = files.weights_size(model_dir)

    log.info("quantizing %s to %s on %s → %s", model_dir, precision, dev, out_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=qconfig, device_map={"": dev},
                                                 dtype="auto")
    tokenizer = _load_tokenizer(model_dir)
    quantized = sorted(n for n, m in model.named_modules() if type(m).__module__.startswith("bitsandbytes"))
    with files.staged_dir(out_dir) as staged:
        model.save_pretrained(staged)  # first thing after quantizing: no forward pass before this
        tokenizer.save_pretrained(staged)
        export_bytes = files.weights_size(staged)
        manifest = {
            "kind": "quantized",
            **{k: parent_manifest[k] for k in INHERITED_KEYS if k in parent_manifest},
            "variant": _quantized_variant(parent_manifest, model_dir, precision),
            "precision": precision,
            "precision_description": PRECISIONS[precision],
            "quantization_config": _jsonable(qconfig.to_dict()),
            "device": dev,
            "dtype_unquantized": str(model.dtype).removeprefix("torch."),
            "quantized_modules": len(quantized),
            "parent": _parent_record(model_dir, parent_manifest),
            "parent_weights_bytes": parent_bytes,
            "weights_bytes": export_bytes,
            "size_ratio": round(export_bytes / parent_bytes, 4) if parent_bytes else None,
            "versions": installed_versions("torch", "transformers", "bitsandbytes", "accelerate", "safetensors"),
        }
        with files.atomic(staged / CARD_FILE) as handle:
            handle.write(_quantized_card(manifest, parent_manifest))
        manifest["files"] = _file_hashes(staged)
        files.write_json(staged / MANIFEST_FILE, manifest)
    log.info("%s: %s, %d modules quantized, %d → %d bytes of weights (%.2fx)", out_dir, precision, len(quantized),
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
    model, modules = _meta_model(model_dir)
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
        raise ExportError(
            f"{model_dir}: 4-bit export on CPU needs Linear sizes that are multiples of {CPU_4BIT_MULTIPLE} "
            f"(bitsandbytes' CPU kernels), but {shown}. Use sizes that are multiples of {CPU_4BIT_MULTIPLE}, "
            "the int8 export, or a GPU"
        )


def load_quantized(model_dir: str | os.PathLike):
    """A quantized (or any) model folder, loaded on this machine's device in eval mode, ready to score."""
    from transformers import AutoModelForCausalLM

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ExportError(f"{model_dir}: no config.json; not a model folder")
    model = AutoModelForCausalLM.from_pretrained(model_dir, device_map={"": device()})
    return model.eval()


# ---- model cards -----------------------------------------------------------------------------------


def render_card(card: dict, *, manifest: dict | None = None, base_manifest: dict | None = None,
                training: dict | None = None) -> str:
    """A Markdown model card with YAML front matter, from the caller's `card` dict (and what the
    merge recorded in `manifest`): base model and its revision, the adapter, the data, the
    hyperparameters, then anything else the card holds."""
    import yaml

    manifest, base_manifest = manifest or {}, base_manifest or {}
    source = card.get("base_source") or base_manifest.get("source") or {}
    hyper = card.get("hyperparameters") or {}
    trainer = hyper.get("trainer") if isinstance(hyper, dict) else None
    tags = list(card.get("tags") or ["zephyr", "lora", "merged"])
    tags += [t for t in (trainer, "qlora" if card.get("qlora") else None) if t and t not in tags]
    front = {
        "base_model": card.get("base_model") or source.get("id") or card.get("model") or base_manifest.get("model"),
        "library_name": "transformers",
        "tags": tags,
    }
    title = " ".join(str(card[k]) for k in ("model", "variant") if card.get(k)) or "Merged model"
    out = ["---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip(), "---", "", f"# {title}", ""]
    if card.get("description"):
        out += [str(card["description"]).strip(), ""]
    parent_name = card.get("parent") or manifest.get("parent", {}).get("variant") or "base"
    experiment = f" (experiment {_fmt_value(card['experiment'])})" if card.get("experiment") else ""
    out += [
        f"A LoRA adapter{f' ({trainer.upper()})' if trainer else ''} merged into the weights of its parent "
        f"`{parent_name}`, made by the Zephyr workflow{experiment}.",
        "",
    ]

    parent = manifest.get("parent", {})
    out += ["## Base model", ""]
    out += _table([
        ("parent variant", card.get("parent")),
        ("model", card.get("model") or base_manifest.get("model")),
        ("source", _fmt_mapping(source) if source else None),
        ("revision", source.get("revision")),
        ("resolved revision", base_manifest.get("resolved_revision")),
        ("architecture", base_manifest.get("architecture") or manifest.get("architecture")),
        ("parameters", f"{manifest['parameters']:,}" if manifest.get("parameters") else None),
        ("dtype", manifest.get("dtype")),
        ("folder", parent.get("dir")),
        ("manifest sha256", parent.get("manifest_sha256")),
    ])

    adapter = manifest.get("adapter", {})
    out += ["## Adapter", ""]
    out += _table([
        ("folder", adapter.get("dir")),
        ("method", adapter.get("peft_type")),
        ("rank r", adapter.get("r")),
        ("alpha", adapter.get("lora_alpha")),
        ("dropout", adapter.get("lora_dropout")),
        ("target modules", ", ".join(adapter["target_modules"]) if isinstance(adapter.get("target_modules"), list)
         else adapter.get("target_modules")),
        ("QLoRA", card.get("qlora") if "qlora" in card else None),
        ("weights sha256", adapter.get("weights_sha256")),
    ])

    out += ["## Training data", ""]
    data = card.get("data")
    out += _table([("mixture", data if not isinstance(data, dict) else None)] +
                  (list(_flatten(data)) if isinstance(data, dict) else []))

    out += ["## Hyperparameters", ""]
    out += _table(list(_flatten(hyper)) if isinstance(hyper, dict) else [("hyperparameters", hyper)])

    if training:
        out += ["## Training run", ""]
        out += _table([(k, training.get(k)) for k in ("steps", "epochs", "train_records", "validation_records",
                                                        "tokens_seen", "wall_seconds", "device")])

    rest = {k: v for k, v in card.items() if k not in CARD_SECTIONS}
    if rest:
        out += ["## More", ""]
        out += _table(list(_flatten(rest)))

    if manifest.get("versions"):
        out += ["## Software", ""]
        out += _table(list(manifest["versions"].items()))
    out += ["Checksums of every file are in `manifest.json`.", ""]
    return "\n".join(out)


def _quantized_card(manifest: dict, parent_manifest: dict) -> str:
    import yaml

    parent = manifest["parent"]
    front = {"base_model": parent_manifest.get("model") or parent.get("dir"), "library_name": "transformers",
             "tags": ["zephyr", "bitsandbytes", "8-bit" if manifest["precision"] == "int8" else "4-bit",
                      manifest["precision"]]}
    title = " ".join(str(x) for x in (manifest.get("model"), manifest.get("variant")) if x) or "Quantized model"
    return "\n".join([
        "---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "", f"# {title}", "",
        f"A {manifest['precision_description']} copy of `{parent.get('dir')}`, saved right after quantizing.",
        "Load it with `zephyr.export.load_quantized` (or `AutoModelForCausalLM.from_pretrained`).", "",
        *_table([
            ("precision", manifest["precision"]),
            ("parent", parent.get("dir")),
            ("parent variant", parent.get("variant")),
            ("parent manifest sha256", parent.get("manifest_sha256")),
            ("quantized modules", manifest["quantized_modules"]),
            ("unquantized weights dtype", manifest["dtype_unquantized"]),
            ("weights, parent (bytes)", f"{manifest['parent_weights_bytes']:,}"),
            ("weights, this copy (bytes)", f"{manifest['weights_bytes']:,}"),
            ("size ratio", manifest["size_ratio"]),
            ("quantized on", manifest["device"]),
        ]),
        "Checksums of every file are in `manifest.json`.", "",
    ])


def _table(rows: list[tuple[str, Any]]) -> list[str]:
    rows = [(k, v) for k, v in rows if v is not None and v != ""]
    if not rows:
        return ["(none recorded)", ""]
    lines = ["| | |", "|---|---|"]
    lines += [f"| {_cell(k)} | {_cell(_fmt_value(v))} |" for k, v in rows]
    return lines + [""]


def _flatten(mapping: dict, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _fmt_value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt_value(v) for v in value) if value else "—"
    if isinstance(value, dict):
        return _fmt_mapping(value)
    if isinstance(value, float):
        return f"{value:g}"
    return "—" if value is None else str(value)


def _fmt_mapping(mapping: dict) -> str:
    return ", ".join(f"{k}={_fmt_value(v)}" for k, v in mapping.items())


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


# ---- records and file helpers ----------------------------------------------------------------------


def _read_manifest(model_dir: Path) -> dict:
    path = Path(model_dir) / MANIFEST_FILE
    return files.read_json(path) if path.is_file() else {}


def _parent_record(model_dir: Path, manifest: dict) -> dict:
    path = Path(model_dir) / MANIFEST_FILE
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


def _adapter_record(adapter_dir: Path, config: dict) -> dict:
    weights = next((adapter_dir / n for n in ADAPTER_WEIGHTS if (adapter_dir / n).is_file()), None)
    return {
        "dir": str(adapter_dir),
        "base_model_name_or_path": config.get("base_model_name_or_path"),
        "peft_type": config.get("peft_type"),
        "r": config.get("r"),
        "lora_alpha": config.get("lora_alpha"),
        "lora_dropout": config.get("lora_dropout"),
        "target_modules": sorted(config["target_modules"]) if isinstance(config.get("target_modules"), (list, set))
        else config.get("target_modules"),
        "config_sha256": files.sha256(adapter_dir / ADAPTER_CONFIG),
        "weights_sha256": files.sha256(weights) if weights else None,
    }


def _training_summary(adapter_dir: Path) -> dict | None:
    path = adapter_dir / "summary.json"
    return files.read_json(path) if path.is_file() else None


def _quantized_variant(parent_manifest: dict, model_dir: Path, precision: str) -> str:
    parent_variant = parent_manifest.get("variant") or ("M0" if parent_manifest.get("source") else model_dir.name)
    return f"{parent_variant}-{precision}"


def _has_tokenizer(model_dir: Path) -> bool:
    return any((model_dir / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"))


def _load_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def _file_hashes(directory: Path) -> dict[str, str]:
    return {p.name: files.sha256(p) for p in sorted(directory.iterdir()) if p.is_file() and p.name != MANIFEST_FILE}


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
