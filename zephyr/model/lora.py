"""LoRA: the modules it adapts per architecture, the shape a set gets where it names none, and a run's
peft config. Training, the LlamaFactory writer and the config check all read them here."""

from __future__ import annotations

# LoRA on the attention projections by default (the report names no targets: config/paper.yaml says
# so beside its `lora_targets`), by config.model_type. BLOOM fuses q, k, v
# into `query_key_value`; its `dense` is the attention output projection (the counterpart of o_proj).
TARGETS: dict[str, list[str]] = {
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "bloom": ["query_key_value", "dense"],
}
#: The shape of a set that names none (LlamaFactory's own dropout is 0: its YAMLs get this one written out).
DEFAULTS = {"r": 8, "alpha": 16, "dropout": 0.05}


class LoraError(ValueError):
    """LoRA targets that name no module of the model, or none known for its architecture."""


def complete(hyperparameters: dict) -> None:
    """Give every set's `lora` (the schema makes it) the keys it lacks, in place: a set is a param of its
    jobs, so the keys it names keep their place (a reordered dict would rerun them)."""
    for hyper in hyperparameters.values():
        for key, value in DEFAULTS.items():
            hyper["lora"].setdefault(key, value)


def shape(hyper: dict) -> dict:
    """A set's r, alpha and dropout, DEFAULTS where it names none (a set built outside a config file)."""
    return {**DEFAULTS, **hyper.get("lora", {})}


def peft_config(hyper: dict, model, override: list[str] | None = None):
    """The `LoraConfig` of a run of `hyper` on `model` (targets: `override`, else its architecture's)."""
    from peft import LoraConfig

    lora = shape(hyper)
    return LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                      target_modules=targets(model, override), task_type="CAUSAL_LM")


def targets(model, override: list[str] | None = None) -> list[str]:
    """LoRA target module names for `model`; each must name one of its Linear layers."""
    names = linear_module_names(model)
    model_type = getattr(model.config, "model_type", None)
    chosen = list(override) if override else TARGETS.get(model_type)
    if chosen is None:
        raise LoraError(
            f"no LoRA target modules known for model type {model_type!r}; name them (lora_targets) "
            f"among its linear modules: {_suffixes(names)}"
        )
    missing = [t for t in chosen if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        raise LoraError(
            f"LoRA targets {missing} name no linear module of this {model_type!r} model; "
            f"its linear modules: {_suffixes(names)}"
        )
    return chosen


def linear_module_names(model) -> list[str]:
    """Full names of the modules LoRA can wrap (Linear, and GPT-2's Conv1D)."""
    import torch
    from transformers.pytorch_utils import Conv1D

    return [name for name, module in model.named_modules() if isinstance(module, (torch.nn.Linear, Conv1D))]


def _suffixes(names: list[str]) -> list[str]:
    return sorted({name.rsplit(".", 1)[-1] for name in names})
