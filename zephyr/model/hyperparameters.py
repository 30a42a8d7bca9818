"""A hyperparameter set as the trainer will take it, checked without importing torch or TRL: the config
check runs this at every Snakemake parse (a dry run included), where those imports would cost seconds.

A set is data: every key but `trainer`, `lora` and `speed` is a field of TRL's SFTConfig or DPOConfig,
passed as is (an unknown key is an error naming it). Here also: the step a set takes (what
`speed.plan` sizes), its split over data-parallel processes, and the GPU memory a small run books.

The string choices of TrainingArguments (`lr_scheduler_type`, `optim`) are checked against transformers'
own enums, read from the installed transformers' source (`library_class`) rather than imported: importing
transformers.trainer_utils or transformers.training_args imports torch, 5 to 6 s on 2 CPU cores at every
parse; reading and parsing the two files takes about 20 ms.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import importlib.util
import math
from pathlib import Path

from .. import files
from .. import precision as precisions
from ..keys import KeyedError
from . import speed

#: Keys of a hyperparameter set that are not TRL config fields.
OWN_KEYS = {"trainer", "lora", "speed"}
#: TRL fields a set may not give → (what decides them instead, why): `speed` (the math unchanged) or the
#: config's `precision` (a study setting, the same for every run).
DECIDED = {"gradient_checkpointing": ("speed.gradient_checkpointing", "auto: only when memory needs it"),
           **dict.fromkeys(precisions.TRAINER_FIELDS, ("the config's precision.compute",
                                                        "a study setting, the same for every run"))}
#: Settings Zephyr fixes unless a hyperparameter set overrides them.
DEFAULTS = {
    "report_to": "none",
    "logging_steps": 5,
    "save_strategy": "steps",
    "save_steps": 50,
    "save_total_limit": 2,
    "eval_steps": 50,
    "dataloader_num_workers": 0,
    "include_num_input_tokens_seen": "non_padding",
    "ddp_find_unused_parameters": False,  # every LoRA weight gets a gradient; the search costs a pass
}
#: A one-GPU run that needs at most this share of its GPU's memory books it and shares the GPU with other
#: jobs (the tiny study's runs); a larger one takes the GPU whole, and `speed` grows its micro-batch into it.
SHARE_GPU_UP_TO = 0.25
#: TrainingArguments' string choices → the transformers module and enum that list them (TrainingArguments
#: turns the string into that enum, and refuses any other).
CHOICES = {"lr_scheduler_type": ("trainer_utils.py", "SchedulerType"), "optim": ("training_args.py", "OptimizerNames")}
#: The pinned TRL's config fields (`make envs` writes them; a test checks them against the installed TRL).
TRL_FIELDS = Path(__file__).with_name("trl_fields.json")
CONFIG_NAMES = {"sft": "SFTConfig", "dpo": "DPOConfig"}


class TrainingError(KeyedError, ValueError):
    """A run that cannot train as configured; raised before any model is loaded."""


def config_class(trainer: str):
    from trl import DPOConfig, SFTConfig

    try:
        return {"sft": SFTConfig, "dpo": DPOConfig}[trainer]
    except KeyError:
        raise TrainingError(f"unknown trainer {trainer!r}; expected 'sft' or 'dpo'") from None


def write_trl_fields() -> None:
    """Write `trl_fields.json` from the installed TRL (`make envs`)."""
    from ..environment import pins

    fields = {trainer: sorted(f.name for f in dataclasses.fields(config_class(trainer))) for trainer in CONFIG_NAMES}
    files.write_json(TRL_FIELDS, {"trl": pins()["trl"], **fields})


def check_hyperparameters(where: str, hyper: dict) -> None:
    """Fail on a key TRL does not know, naming where the set came from, the key and the nearest field.

    Reads the field names from `trl_fields.json`, not from TRL (see the module's docstring)."""
    trainer = hyper.get("trainer")
    if trainer not in CONFIG_NAMES:
        raise TrainingError(f"{where}: unknown trainer {trainer!r}; expected one of {list(CONFIG_NAMES)}")
    known = set(files.read_json(TRL_FIELDS)[trainer])
    unknown = sorted(set(hyper) - known - OWN_KEYS)
    if unknown:
        nearest = {key: close[0] for key in unknown if (close := difflib.get_close_matches(key, known, n=1))}
        hint = "; did you mean " + ", ".join(nearest.values()) + "?" if nearest else ""
        raise TrainingError(f"{where}: {', '.join(unknown)} not a field of TRL's {CONFIG_NAMES[trainer]}{hint}")
    if "seed" in hyper:
        raise TrainingError(f"{where}.seed: a hyperparameter set may not set the training seed: every variant trained "
                            "with the set would take it in place of its own, and no run would record the seed it "
                            "used; remove it and set each variant's seed (variants.NAME.seed, 0 by default)",
                            ("seed",))
    for key, (instead, why) in DECIDED.items():
        if key in hyper:
            raise TrainingError(f"{where}: set {instead} instead of {key} ({why})")
    for key in CHOICES:
        if key in hyper and hyper[key] not in (allowed := library_choices(key)):
            close = difflib.get_close_matches(str(hyper[key]), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TrainingError(f"{where}.{key}: {hyper[key]!r} is not one of transformers' {CHOICES[key][1]} values "
                                f"{allowed}{hint}", (key,))
    try:
        speed.check(where, hyper.get("speed"))
    except speed.SpeedError as err:
        raise TrainingError(str(err), err.key) from None
    save, logging = hyper.get("save_steps"), hyper.get("logging_steps")
    if isinstance(save, int) and isinstance(logging, int) and save >= 1 and logging >= 1 and save % logging:
        raise TrainingError(f"{where}: save_steps {save} is not a multiple of logging_steps {logging}: a run resumed "
                            "from a checkpoint between two logged steps logs a loss over the resumed steps only, "
                            "and its history would differ from an uninterrupted run's; choose save_steps a multiple "
                            f"of {logging}")


def check_step(where: str, hyper: dict, processes: int) -> None:
    """The set's step splits over `processes` data-parallel processes with its global batch, and a
    forced `speed.micro_batch` divides the batch of one process and step (as `speed.plan` needs at job
    time); TrainingArguments' own per_device_train_batch_size default where the set gives none."""
    split = split_accumulation(where, hyper, processes)
    micro = split.get("per_device_train_batch_size", training_default("per_device_train_batch_size"))
    try:
        speed.check_micro_batch(where, speed.check(where, hyper.get("speed"))["micro_batch"],
                                micro * split.get("gradient_accumulation_steps", 1))
    except speed.SpeedError as err:
        raise TrainingError(str(err), err.key) from None


@functools.cache
def library_class(module: str, name: str) -> ast.ClassDef:
    """Class `name` of the installed transformers' `module` (a path under the package), read from its
    source without importing it (see the module's docstring)."""
    spec = importlib.util.find_spec("transformers")  # a top-level package: found, not imported
    path = Path(spec.submodule_search_locations[0]) / module
    for node in ast.parse(path.read_text(encoding="utf-8"), str(path)).body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node
    raise TrainingError(f"{path} has no class {name}: is the pinned transformers installed?")


@functools.cache
def library_choices(key: str) -> list[str]:
    """The values of the transformers enum that lists `key`'s choices (`CHOICES`), in its order."""
    return [item.value.value for item in library_class(*CHOICES[key]).body
            if isinstance(item, ast.Assign) and isinstance(getattr(item.value, "value", None), str)]


@functools.cache
def bitsandbytes_optimizers() -> frozenset[str]:
    """The `optim` values whose optimizer is bitsandbytes' (transformers' `_BITSANDBYTES_OPTIMIZERS`), read
    from its source (`library_class`): a training job decides from them whether to import bitsandbytes
    (zephyr/model/bnb.py) before transformers is imported."""
    enum = {item.targets[0].id: item.value.value for item in library_class("training_args.py", "OptimizerNames").body
            if isinstance(item, ast.Assign) and isinstance(getattr(item.value, "value", None), str)}
    path = Path(importlib.util.find_spec("transformers").submodule_search_locations[0]) / "trainer_optimizer.py"
    for node in ast.parse(path.read_text(encoding="utf-8"), str(path)).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_BITSANDBYTES_OPTIMIZERS"
                                                for t in node.targets):
            return frozenset(enum[item.attr] for item in node.value.elts)
    raise TrainingError(f"{path} has no _BITSANDBYTES_OPTIMIZERS: is the pinned transformers installed?")


@functools.cache
def training_default(field: str):
    """TrainingArguments' default of `field`, read from its source (`library_class`): `field(default=...)`
    or a plain value."""
    for item in library_class("training_args.py", "TrainingArguments").body:
        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) and item.target.id == field:
            value = item.value
            if isinstance(value, ast.Call):
                value = next(k.value for k in value.keywords if k.arg == "default")
            return ast.literal_eval(value)
    raise TrainingError(f"TrainingArguments has no field {field!r}")


def trl_default(trainer: str, field: str):
    """A TRL config field's default (TrainingArguments' per-device batch 8, TRL's max_length 1024...)."""
    return {f.name: f.default for f in dataclasses.fields(config_class(trainer))}[field]


def gpu_booking_mb(hyper: dict, base_dir: str | Path, precision: dict, qlora: str | None = None,
                   capacity_mb: dict[str, int] | None = None) -> int | None:
    """GPU memory a one-GPU run books to share its GPU: what `speed.plan` needs to keep the set's own
    micro-batch without checkpointing, and a job's overhead; None where it would take more than
    `SHARE_GPU_UP_TO` of the smallest GPU (`capacity_mb`, GPU id to MB; nvidia-smi's when not given),
    or there is no GPU: the run takes a GPU whole."""
    from transformers import AutoConfig

    from .. import devices

    capacity = devices.gpu_memory_mb() if capacity_mb is None else capacity_mb
    if not capacity:
        return None
    knobs, shape = speed.check("speed", hyper.get("speed")), step_shape(hyper)
    need = speed.training_bytes(
        AutoConfig.from_pretrained(base_dir), max_length=shape["max_length"],
        micro_batch=shape["micro_batch"] if knobs["micro_batch"] == "auto" else knobs["micro_batch"],
        sequences_per_example=shape["sequences_per_example"], quantized=bool(qlora), dtype=precision["weights"])
    booking = math.ceil(need / 2**20) + devices.OVERHEAD_MB
    return booking if booking <= SHARE_GPU_UP_TO * min(capacity.values()) else None


def step_shape(hyper: dict) -> dict:
    """A set's step as `speed.plan` sizes it: the micro-batch and accumulation it gives, the longest
    sequence (TRL's default max_length when unset; 2048 where that is unbounded), sequences per example."""
    trainer = hyper["trainer"]
    return {"micro_batch": hyper.get("per_device_train_batch_size",
                                     trl_default(trainer, "per_device_train_batch_size")),
            "accumulation": hyper.get("gradient_accumulation_steps", 1),
            "max_length": hyper.get("max_length", trl_default(trainer, "max_length")) or 2048,
            "sequences_per_example": 2 if trainer == "dpo" else 1}


def split_accumulation(where: str, hyper: dict, processes: int) -> dict:
    """The set for one of `processes` data-parallel processes, with the same global batch
    (per-device batch x accumulation x processes): a GPU count is not a hyperparameter."""
    if processes <= 1:
        return hyper
    steps = hyper.get("gradient_accumulation_steps", 1)
    if steps % processes:
        raise TrainingError(f"{where}: gradient_accumulation_steps={steps} cannot be split over {processes} "
                            "GPUs; make it a multiple of compute.gpus, so that the global batch stays the same")
    return {**hyper, "gradient_accumulation_steps": steps // processes}


def evaluation_keys(hyper: dict) -> dict:
    """The keys by which a hyperparameter set asks to evaluate during training (`eval_strategy` other
    than "no", `eval_steps` under a strategy that is not "no", `eval_on_start`), with their values.
    A set without them evaluates only where its mixture holds out a validation split (`training.trl_config`);
    one with them on a mixture without it fails at the Trainer's first evaluation, or trains without
    the validation curve that the figures and `make check-default` read."""
    strategy = hyper.get("eval_strategy")
    asks = {"eval_strategy": strategy not in (None, "no"),
            "eval_steps": hyper.get("eval_steps") is not None and strategy != "no",
            "eval_on_start": bool(hyper.get("eval_on_start"))}
    return {key: hyper[key] for key, asked in asks.items() if asked}
