"""Model cards: the `README.md` of every merged and quantized folder, in Markdown with YAML front
matter, from what the workflow knows about how the folder was made (and what its manifest records)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..study import FORMATS

CARD_FILE = "README.md"
#: Keys of a model card dict that `render_card` lays out in their own sections.
CARD_SECTIONS = ("model", "variant", "description", "parent", "base_source", "data", "qlora", "hyperparameters",
                 "experiment", "base_model", "tags", "precision")


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

    # what the numbers were computed in, and the speed settings that keep the math, as resolved
    precision = card.get("precision") or {}
    speed = {k: v for k, v in (training or {}).get("speed", {}).items() if k != "why"}
    out += ["## Precision and speed", ""]
    out += _table([("weights dtype", precision.get("weights")), ("compute", precision.get("compute")),
                   *((f"speed: {k}", v) for k, v in speed.items())])

    if training:
        out += ["## Training run", ""]
        out += _table([(k, training.get(k)) for k in ("steps", "epochs", "train_records", "validation_records",
                                                        "tokens_seen", "wall_seconds", "device")]
                      + [("records cut at max_length", _truncation(training.get("truncation")))])

    rest = {k: v for k, v in card.items() if k not in CARD_SECTIONS}
    if rest:
        out += ["## More", ""]
        out += _table(list(_flatten(rest)))

    if manifest.get("versions"):
        out += ["## Software", ""]
        out += _table(list(manifest["versions"].items()))
    out += ["Checksums of every file are in `manifest.json`.", ""]
    return "\n".join(out)


def quantized_card(manifest: dict, parent_manifest: dict) -> str:
    import yaml

    parent, bits = manifest["parent"], FORMATS[manifest["format"]].bits
    front = {"base_model": parent_manifest.get("model") or parent.get("dir"), "library_name": "transformers",
             "tags": ["zephyr", "bitsandbytes", f"{bits}-bit", manifest["format"]]}
    title = " ".join(str(x) for x in (manifest.get("model"), manifest.get("variant"), manifest["format"]) if x)
    return "\n".join([
        "---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "", f"# {title}", "",
        f"A {manifest['format_description']} copy of `{parent.get('dir')}`, saved right after quantizing.",
        "Load it with `zephyr.model.modeldir.load` (or `AutoModelForCausalLM.from_pretrained`).", "",
        *_table([
            ("format", manifest["format"]),
            ("parent", parent.get("dir")),
            ("parent variant", parent.get("variant")),
            ("parent manifest sha256", parent.get("manifest_sha256")),
            ("quantized modules", manifest["quantized_modules"]),
            ("unquantized weights dtype", manifest["dtype_unquantized"]),
            ("4-bit compute dtype", manifest["quantization_config"].get("bnb_4bit_compute_dtype")
             if bits == 4 else None),
            ("weights, parent (bytes)", f"{manifest['parent_weights_bytes']:,}"),
            ("weights, this copy (bytes)", f"{manifest['weights_bytes']:,}"),
            ("size ratio", manifest["size_ratio"]),
            ("quantized on", manifest["device"]),
        ]),
        "Checksums of every file are in `manifest.json`.", "",
    ])


def _truncation(cut: dict | None) -> str | None:
    """A run's `truncation` (zephyr/model/truncation.py) in words: records whose answer max_length cuts."""
    if not cut:
        return None
    return f"{cut['cut']} of {cut['measured']} ({cut['share']:.1%}) at max_length {cut['max_length']}"


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
