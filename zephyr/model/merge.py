"""Merged models: fold a LoRA adapter into its parent's weights.

`merge_adapter` checks that the adapter belongs to the base (its recorded base model and the shapes
of its target modules) before loading any weights, merges it in float32, and writes an ordinary
Hugging Face folder in the study precision's dtype with a model card (`README.md`) and a provenance
`manifest.json`, staged beside its final place and moved in at the end (`files.staged_dir`): a killed
job never leaves a folder that looks finished.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from .. import files
from .. import precision as precisions
from ..environment import installed_versions
from . import cards, modeldir
from .modeldir import ModelDirError

log = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def merge_adapter(base_dir: str | os.PathLike, adapter_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                  card: dict, precision: dict | None = None) -> dict:
    """Merge the LoRA adapter in `adapter_dir` into the model in `base_dir`; write the result to `out_dir`.

    `card` says how the adapter was made (model, variant, parent, base source, data, hyperparameters...);
    it goes into the model card and the manifest as given, with `precision` (the study's; float32 when
    not given), whose dtype the merged weights are stored in. Returns the manifest (also manifest.json).
    """
    import torch
    from peft import PeftModel

    base_dir, adapter_dir, out_dir = Path(base_dir), Path(adapter_dir), Path(out_dir)
    precision = precisions.check("precision", precision)
    card = {**card, "precision": precision}
    adapter_config = check_adapter(base_dir, adapter_dir)
    base_manifest = modeldir.read_manifest(base_dir, required=False)

    log.info("merging %s into %s → %s", adapter_dir, base_dir, out_dir)
    # in float32, stored in the precision's dtype: in bf16 each small LoRA update would be rounded into
    # the weights twice (the update itself, then the sum)
    base = modeldir.load_model(base_dir, "cpu", dtype="float32")
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload().to(getattr(torch, precision["weights"]))
    merged.eval()
    tokenizer_dir = adapter_dir if modeldir.has_tokenizer(adapter_dir) else base_dir
    tokenizer = modeldir.load_tokenizer(tokenizer_dir)

    manifest = {
        "kind": "merged",
        **{k: base_manifest[k] for k in modeldir.INHERITED_KEYS if k in base_manifest},
        "model": card.get("model", base_manifest.get("model")),
        "variant": card.get("variant"),
        "architecture": type(merged).__name__,
        "model_type": merged.config.model_type,
        "parameters": sum(p.numel() for p in merged.parameters()),
        "dtype": str(merged.dtype).removeprefix("torch."),
        "parent": modeldir.provenance(base_dir, base_manifest),
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
        with files.atomic(staged / cards.CARD_FILE) as handle:
            handle.write(cards.render_card(card, manifest=manifest, base_manifest=base_manifest,
                                     training=_training_summary(adapter_dir)))
        modeldir.write_manifest(staged, manifest)
    log.info("merged %s: %d parameters, %s, %d bytes of weights", out_dir, manifest["parameters"], manifest["dtype"],
             files.weights_size(out_dir))
    return manifest


def check_adapter(base_dir: str | os.PathLike, adapter_dir: str | os.PathLike) -> dict:
    """The adapter's config, once it is known to belong to `base_dir`; else a ModelDirError naming both.

    Reads only small files (configs, safetensors headers) and builds the base on the meta device, so a
    mismatch fails in a fraction of a second. The adapter belongs to the base when its recorded
    `base_model_name_or_path` is the base folder (compared as absolute paths; a relative path is taken
    from the working directory, as `from_pretrained` does) or the base's manifest names it (its
    `model`, or the hub id of its source), and when every target module exists in the base with the
    adapter's shapes. The adapter's files are checked against its manifest first (`modeldir.verify_adapter`).
    """
    base_dir, adapter_dir = Path(base_dir), Path(adapter_dir)
    config_path = adapter_dir / ADAPTER_CONFIG
    modeldir.check(base_dir)
    modeldir.verify_adapter(adapter_dir)
    if not config_path.is_file():
        raise ModelDirError(f"adapter {adapter_dir}: no {ADAPTER_CONFIG}; not a PEFT adapter folder")
    config = files.read_json(config_path)
    recorded = config.get("base_model_name_or_path")
    manifest = modeldir.read_manifest(base_dir, required=False)
    if not _same_base(recorded, base_dir, manifest):
        names = [n for n in (manifest.get("model"), (manifest.get("source") or {}).get("id")) if n]
        raise ModelDirError(
            f"adapter {adapter_dir} was trained on {recorded!r}, not on base {base_dir} "
            f"({Path(base_dir).resolve()}{', model ' + ' / '.join(map(repr, names)) if names else ''}); "
            "refusing to merge it"
        )
    meta = modeldir.meta_model(base_dir)
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
        raise ModelDirError(
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
        raise ModelDirError(f"adapter {adapter_dir}: no {ADAPTER_WEIGHTS[0]}")
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
                raise ModelDirError(f"adapter {adapter_dir} adapts {name}, which base {base_dir} does not have")
            if not isinstance(module, torch.nn.Linear) or len(shape) != 2:
                continue
            expected, got = (module.in_features, shape[1]) if match["ab"] == "A" else (module.out_features, shape[0])
            if expected != got:
                raise ModelDirError(
                    f"adapter {adapter_dir} does not fit base {base_dir}: {key} has shape {shape}, but {name} is "
                    f"Linear({module.in_features} → {module.out_features}) there; it was trained on another model"
                )


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
