"""LlamaFactory configs of the study's runs: train a variant with LlamaFactory instead of Zephyr's trainer.

The workflow indexes every SFT and ranking mixture in `results/mixtures/dataset_info.json`, and writes,
when asked for it, one LlamaFactory YAML per run of Tables 2 and 3:

    snakemake --cores 1 results/llamafactory/qwen/M1-DS-cosine.yaml
    llamafactory-cli train results/llamafactory/qwen/M1-DS-cosine.yaml     # from the workflow's directory

A YAML is the run's hyperparameter set in LlamaFactory's names, on the same base, data and LoRA targets:

- `trainer` sft / dpo → `stage`; `lora` r / alpha / dropout → `lora_rank` / `lora_alpha` / `lora_dropout`;
  `max_length` → `cutoff_len`; `beta` → `pref_beta`; `loss_type` → `pref_loss`; `label_smoothing` →
  `dpo_label_smoothing`; `completion_only_loss: false` → `train_on_prompt`; `gradient_checkpointing` /
  `activation_checkpointing: false` → `disable_gradient_checkpointing`. Every other key is a field of
  transformers' TrainingArguments and passes as is. A TRL setting with no LlamaFactory counterpart is
  an error naming it; one that only changes speed (and Zephyr's own `speed` block) is left out.
- What the set leaves to TRL's defaults (TRL's learning rate is not transformers', and Zephyr's LoRA
  dropout is not LlamaFactory's) is written out, so that LlamaFactory trains the same math.
- The base: M0 is the fetched model folder. A variant trained from another (DPO from M1) lists the
  parent run's LlamaFactory adapters, which LlamaFactory merges into the base before it trains a new
  adapter (`create_new_adapter`); DPO's reference, the model with the new adapter disabled, is then the
  parent, as in Zephyr.
- No `template` is named: LlamaFactory then parses the model folder's own chat template, the one
  Zephyr trains and evaluates with. (LlamaFactory joins a record's instruction and a non-empty input
  with one newline, Zephyr with a blank line.)
- QLoRA variants train on LlamaFactory's 4-bit bitsandbytes NF4 base (double quantization for nf4-dq).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from .. import files
from ..paths import validation_split
from . import lora as zlora

log = logging.getLogger(__name__)

#: The LlamaFactory release the YAMLs are written for and were checked with (bench/llamafactory_check.py).
VERSION = "0.9.5"
LORA_KEYS = {"r": "lora_rank", "alpha": "lora_alpha", "dropout": "lora_dropout"}
#: TRL fields with a LlamaFactory counterpart of another name.
RENAMED = {"max_length": "cutoff_len", "beta": "pref_beta", "label_smoothing": "dpo_label_smoothing",
           "packing": "packing"}
#: TRL fields that change speed, not what is trained: LlamaFactory decides these itself.
SPEED_ONLY = {"padding_free", "pad_to_multiple_of", "dataset_num_proc", "activation_offloading", "eval_packing"}
#: DPO losses both TRL and LlamaFactory have (same name).
PREF_LOSSES = {"sigmoid", "hinge", "ipo"}
#: Training settings whose TRL default (what Zephyr trains with when a set omits them) is written out.
MATH_KEYS = ("learning_rate", "lr_scheduler_type", "warmup_steps", "weight_decay", "max_grad_norm", "adam_beta1",
             "adam_beta2", "adam_epsilon", "optim", "num_train_epochs", "max_steps", "per_device_train_batch_size",
             "gradient_accumulation_steps")
#: The order of a YAML's training settings (the rest follow in the order they are set).
ORDER = ("cutoff_len", "pref_beta", "pref_loss", "per_device_train_batch_size", "gradient_accumulation_steps",
         "learning_rate", "lr_scheduler_type", "warmup_steps", "num_train_epochs", "max_steps", "optim",
         "weight_decay", "max_grad_norm", "adam_beta1", "adam_beta2", "adam_epsilon")
QLORA = {"nf4": {"quantization_bit": 4, "quantization_method": "bnb", "quantization_type": "nf4",
                 "double_quantization": False},
         "nf4-dq": {"quantization_bit": 4, "quantization_method": "bnb", "quantization_type": "nf4",
                    "double_quantization": True}}


class LlamaFactoryConfigError(ValueError):
    """A run that LlamaFactory cannot train as Zephyr would; names the run and the setting."""


def run_config(
    name: str,
    variant: dict,
    hyper: dict,
    *,
    base_dir: str,
    model_type: str,
    dataset_info: dict,
    dataset_dir: str,
    output_dir: str,
    parent: dict | None = None,
    lora_targets: list[str] | None = None,
    bf16: bool = False,
) -> dict:
    """The LlamaFactory training config (a YAML's mapping) of run `name` ("model/variant").

    `variant` is the config's entry (`data`, `parent`, `seed`, `qlora`), `hyper` its hyperparameter
    set; `dataset_info` the mixtures' index in `dataset_dir`; `parent` the parent run's LlamaFactory
    config when the variant is trained from another variant (None from M0).
    """
    data = variant["data"]
    if data not in dataset_info:
        raise LlamaFactoryConfigError(f"run {name}: mixture {data!r} is not in dataset_info.json "
                                      "(only non-empty SFT and preference mixtures are)")
    trainer = hyper.get("trainer")
    ranking = bool(dataset_info[data].get("ranking"))
    if (trainer, ranking) not in (("sft", False), ("dpo", True)):
        raise LlamaFactoryConfigError(f"run {name}: a {trainer} run on {'ranking' if ranking else 'SFT'} data {data!r}")
    targets = list(lora_targets or zlora.TARGETS.get(model_type) or [])
    if not targets:
        raise LlamaFactoryConfigError(f"run {name}: no LoRA targets known for model type {model_type!r}; "
                                      "name them in the model's lora_targets")

    out: dict = {"model_name_or_path": base_dir}
    if variant.get("parent", "M0") != "M0":
        if parent is None:
            raise LlamaFactoryConfigError(f"run {name}: trained from {variant['parent']}, whose config was not given")
        if parent["model_name_or_path"] != base_dir:
            raise LlamaFactoryConfigError(f"run {name}: its parent trains on {parent['model_name_or_path']}, "
                                          f"not {base_dir}")
        out["adapter_name_or_path"] = ",".join([*_listed(parent.get("adapter_name_or_path")), parent["output_dir"]])
        out["create_new_adapter"] = True
    if variant.get("qlora"):
        out.update(QLORA[variant["qlora"]])
    lora = zlora.shape(hyper)
    out.update(stage=trainer, do_train=True, finetuning_type="lora", lora_target=",".join(targets))
    out.update({LORA_KEYS[k]: v for k, v in lora.items()})
    out.update(dataset_dir=dataset_dir, dataset=data)
    validation = validation_split(data)
    if validation in dataset_info:
        out["eval_dataset"] = validation
    out.update(output_dir=output_dir, **_training_arguments(name, hyper, has_eval=validation in dataset_info))
    out["seed"] = variant.get("seed", 0)
    if bf16:
        out["bf16"] = True
    return out


def _training_arguments(name: str, hyper: dict, *, has_eval: bool) -> dict:
    """The set's TRL fields as LlamaFactory arguments, with TRL's defaults for the math it omits."""
    from transformers import TrainingArguments

    from .hyperparameters import DEFAULTS, config_class

    trainer = hyper["trainer"]
    trl_fields = {f.name: f.default for f in dataclasses.fields(config_class(trainer))}
    hf_fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    settings = {k: trl_fields[k] for k in MATH_KEYS if k not in hyper}
    settings.update({k: v for k, v in DEFAULTS.items() if k in hf_fields})
    settings["eval_strategy"] = "steps" if has_eval else "no"
    if trainer == "dpo":
        settings["pref_beta"] = trl_fields["beta"]
        settings["pref_loss"] = "sigmoid"
    if "max_length" in trl_fields:
        settings["cutoff_len"] = trl_fields["max_length"]
    for key, value in hyper.items():
        where = f"run {name}: hyperparameter {key}"
        if key in ("trainer", "lora", "speed") or key in SPEED_ONLY:
            continue
        if key in RENAMED:
            settings[RENAMED[key]] = value
        elif key == "loss_type":
            loss = value[0] if isinstance(value, list) and len(value) == 1 else value
            if trainer == "sft" and loss == "nll":
                continue
            if trainer != "dpo" or loss not in PREF_LOSSES:
                raise LlamaFactoryConfigError(f"{where}={value!r} has no LlamaFactory counterpart")
            settings["pref_loss"] = loss
        elif key == "completion_only_loss":
            settings["train_on_prompt"] = value is False
        elif key in ("gradient_checkpointing", "activation_checkpointing"):
            settings["disable_gradient_checkpointing"] = not value
        elif key in hf_fields:
            settings[key] = value
        else:
            raise LlamaFactoryConfigError(f"{where} is a setting of TRL that LlamaFactory does not have")
    return {**{k: settings[k] for k in ORDER if k in settings}, **settings}


def _listed(value) -> list[str]:
    if not value:
        return []
    return value.split(",") if isinstance(value, str) else list(value)


def write_run_config(
    out_path: str | Path,
    name: str,
    variant: dict,
    hyper: dict,
    *,
    base_manifest: str | Path,
    dataset_info: str | Path,
    parent_config: str | Path | None = None,
    lora_targets: list[str] | None = None,
    bf16: bool = False,
) -> dict:
    """Write run `name`'s LlamaFactory YAML to `out_path` (its adapter goes beside it, in a folder of
    the same name); paths are relative to the directory the workflow runs in, as given."""
    import yaml

    manifest = files.read_json(base_manifest)
    out_path = Path(out_path)
    parent = yaml.safe_load(Path(parent_config).read_text()) if parent_config else None
    config = run_config(
        name, variant, hyper,
        base_dir=str(Path(base_manifest).parent),
        model_type=manifest["model_type"],
        dataset_info=files.read_json(dataset_info),
        dataset_dir=str(Path(dataset_info).parent),
        output_dir=str(out_path.with_suffix("")),
        parent=parent,
        lora_targets=lora_targets,
        bf16=bf16,
    )
    header = (f"# LlamaFactory {VERSION} config of Zephyr run {name} (data {variant['data']}, parent "
              f"{variant.get('parent', 'M0')}).\n"
              f"# Run it from the workflow's directory:  llamafactory-cli train {out_path}\n")
    with files.atomic(out_path) as handle:
        handle.write(header + yaml.safe_dump(config, sort_keys=False))
    log.info("%s: wrote %s (%s on %s)", name, out_path, config["stage"], config["dataset"])
    return config
