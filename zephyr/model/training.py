"""LoRA fine-tuning with TRL: SFT (the paper's Table 2) and DPO (Table 3).

A hyperparameter set is data, checked by zephyr/model/hyperparameters.py (the config check runs it too).
Checkpoints go to a directory keyed by a fingerprint of everything the run depends on, outside every
declared output: a killed job resumes from its last checkpoint when rerun, and a changed run never
resumes from a stale one.

DPO from a model M is trained on M's merged weights with `ref_model=None`, so TRL scores the
reference with the adapter disabled: the reference is the parent M itself, as the study needs.

A job given several GPUs trains data-parallel: `launch` starts one process per GPU through
`accelerate launch`, each running `python -m zephyr.model.training SPEC`. The global batch stays the
hyperparameter set's: the processes split its gradient accumulation steps between them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from .. import files, logs
from .. import precision as precisions
from ..data import mixtures
from ..environment import installed_versions
from ..paths import VALIDATION_ITEMS
from . import bnb, lm_head, lora, modeldir, speed
from .hyperparameters import (
    DEFAULTS,
    OWN_KEYS,
    TrainingError,
    bitsandbytes_optimizers,
    check_hyperparameters,
    config_class,
    split_accumulation,
    step_shape,
    trl_default,
)
from .prompts import examples, pairs_cut
from .truncation import RECORDS, truncation

log = logging.getLogger("zephyr.model.training")  # also when run as `python -m zephyr.model.training`

def check_prompt_lengths(name: str, tokenizer, rows: list[dict], max_length: int | None) -> None:
    """TRL's DPO drops, and SFT truncates to nothing, examples whose prompt fills `max_length`:
    say how many before training, and refuse a run that would have nothing left."""
    if max_length is None:
        return
    texts = [tokenizer.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False) for r in rows]
    too_long = sum(len(ids) >= max_length for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
    if too_long == len(rows):
        raise TrainingError(f"run {name}: every prompt is at least max_length={max_length} tokens long; "
                            f"raise max_length")
    if too_long:
        log.warning("run %s: %d of %d prompts are at least max_length=%d tokens and will be dropped or cut",
                    name, too_long, len(rows), max_length)


def sft_lengths(tokenizer, rows: list[dict], max_length: int | None, most: int = 2000) -> list[int]:
    """Token lengths of SFT examples (prompt and completion through the chat template), cut at
    `max_length`: of `most` of them drawn at random (seeded) from a larger set, enough for a padding share."""
    import random

    if len(rows) > most:
        rows = random.Random(0).sample(rows, most)
    texts = [tokenizer.apply_chat_template(r["prompt"] + r["completion"], tokenize=False) for r in rows]
    lengths = map(len, tokenizer(texts, add_special_tokens=False)["input_ids"])
    return [min(n, max_length) if max_length else n for n in lengths]


def check_pair_lengths(name: str, tokenizer, records: list[dict], max_length: int | None) -> int:
    """DPO learns where chosen and rejected differ: a pair cut at `max_length` before that point is two
    identical sequences and no gradient. Say how many before training; refuse a run losing most of them.
    Returns how many pairs `max_length` cuts at all (either answer loses its end and its EOS)."""
    cut, equal, need = pairs_cut(tokenizer, records, max_length)
    if not equal:
        return cut
    message = (f"run {name}: {equal} of {len(records)} preference pairs are cut at max_length={max_length} before "
               f"chosen and rejected differ, so DPO learns nothing from them (the longest pair needs {need} tokens)")
    if 2 * equal > len(records):
        raise TrainingError(message + "; raise max_length")
    log.warning(message)
    return cut


def trl_config(hyper: dict, output_dir: str | Path, *, device: str, seed: int, has_eval: bool, precision: dict):
    cls = config_class(hyper["trainer"])
    settings = {**DEFAULTS, "eval_strategy": "steps" if has_eval else "no", "seed": seed}
    settings.update({k: v for k, v in hyper.items() if k not in OWN_KEYS})
    settings.update(precisions.trainer_settings(precision))
    if device == "cpu":
        settings.update(use_cpu=True)
    return cls(output_dir=str(output_dir), **settings)


def fingerprint(*parts) -> str:
    """A short digest of everything a run depends on: its checkpoints are only resumed by the same run."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, (str, Path)) and Path(part).is_file():
            digest.update(files.sha256(part).encode())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


class _LogToFile:
    """Send the trainer's logged metrics to the rule's log (progress bars stay on the terminal)."""

    def __new__(cls):
        from transformers import TrainerCallback

        class Callback(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs:
                    log.info("step %d/%d %s", state.global_step, state.max_steps,
                             " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in logs.items()))

        return Callback()


def train(
    name: str,
    hyper: dict,
    base_dir: str | Path,
    train_path: str | Path,
    validation_path: str | Path | None,
    out_dir: str | Path,
    checkpoint_root: str | Path,
    *,
    seed: int = 0,
    lora_targets: list[str] | None = None,
    qlora: str | None = None,
    precision: dict | None = None,
    callbacks: Iterable = (),
) -> dict:
    """Train a LoRA adapter on `base_dir` and write it to `out_dir` with its log history and summary.
    `precision` is the config's (zephyr/precision.py; float32 when not given)."""
    import datasets
    import pandas as pd
    import torch
    from transformers import AutoConfig
    from trl import DPOTrainer, SFTTrainer

    from .. import devices

    check_hyperparameters(f"hyperparameters of run {name}", hyper)
    if hyper.get("optim") in bitsandbytes_optimizers():
        bnb.require(f"run {name}: optim {hyper['optim']}")
    precision = precisions.check(f"precision of run {name}", precision)
    processes = int(os.environ.get("WORLD_SIZE", 1))
    run_hyper = split_accumulation(f"hyperparameters of run {name}", hyper, processes)
    trainer_kind = hyper["trainer"]
    device = devices.device()
    train_records = mixtures.read(train_path)
    val_records = mixtures.read(validation_path) if validation_path else []
    run_id = fingerprint(name, hyper, seed, lora_targets, qlora, precision, str(base_dir),
                         *modeldir.identity_files(base_dir), train_path, validation_path or "", processes)
    checkpoint_dir = Path(checkpoint_root) / run_id
    last = last_complete_checkpoint(checkpoint_dir)
    log.info("%s: %s on %s, %d train / %d validation records, %s on device %s%s%s", name, trainer_kind, base_dir,
             len(train_records), len(val_records), precisions.label(precision), device,
             f" x {processes} processes" if processes > 1 else "",
             f", resuming from {last}" if last else "")

    tokenizer = modeldir.load_tokenizer(base_dir)
    train_examples = examples(trainer_kind, train_records)
    max_length = hyper.get("max_length", trl_default(trainer_kind, "max_length"))
    check_prompt_lengths(name, tokenizer, train_examples, max_length)
    if trainer_kind == "dpo":
        lengths = None
        cut_count = check_pair_lengths(name, tokenizer, train_records, max_length)
        measured = len(train_records)
    else:
        full = sft_lengths(tokenizer, train_examples, None)  # uncut: a sample of the largest sets
        lengths = [min(n, max_length) if max_length else n for n in full]
        cut_count, measured = sum(bool(max_length) and n > max_length for n in full), len(full)
    cut = truncation(name, RECORDS[trainer_kind], cut_count, measured, len(train_records), max_length)
    plan = _speed_plan(f"hyperparameters of run {name}", run_hyper, checkpoint_dir, device=device, qlora=qlora,
                       dtype=precision["weights"], model_config=AutoConfig.from_pretrained(base_dir), lengths=lengths)
    run_hyper = {**run_hyper, **plan.settings()}
    model = modeldir.load_for_training(base_dir, device, qlora, precision)
    peft_config = lora.peft_config(hyper, model, lora_targets)
    args = trl_config(run_hyper, checkpoint_dir, device=device, seed=seed, has_eval=bool(val_records),
                      precision=precision)
    trainer_cls = SFTTrainer if trainer_kind == "sft" else DPOTrainer
    with lm_head.use(plan.lm_head):
        trainer = trainer_cls(
            model=model,
            args=args,
            train_dataset=datasets.Dataset.from_list(train_examples),
            eval_dataset=datasets.Dataset.from_list(examples(trainer_kind, val_records)) if val_records else None,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=[_LogToFile(), *callbacks],
        )
        if plan.padding_free:
            _join_batches(trainer)
        if trainer_kind == "dpo" and run_hyper.get("train_sampling_strategy") in speed.GROUPING:
            _measure_pairs(trainer)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        if last:
            _carry_token_count(trainer, last)
            # the evaluation at the start is in the checkpoint's history already: the Trainer would
            # run it again at the resumed step, a point the uninterrupted run does not have
            trainer.args.eval_on_start = False
        trainer.train(resume_from_checkpoint=last)
        evaluated = [e["step"] for e in trainer.state.log_history if "eval_loss" in e]
        if val_records and evaluated[-1:] != [trainer.state.global_step]:
            trainer.evaluate()  # the final validation point of the loss curves
        wall = time.perf_counter() - start
        # (DPO's validation accuracy is a fraction of n pairs: its standard error needs no items)
        item_losses = _validation_item_losses(trainer, examples(trainer_kind, val_records)) \
            if trainer_kind == "sft" and val_records else []

    if not trainer.is_world_process_zero():
        return {}
    history = _in_one_order(_whole_run_train_loss(pd.DataFrame(trainer.state.log_history)))
    tokens = int(trainer.state.num_input_tokens_seen or 0)
    summary = {
        "run": name,
        "trainer": trainer_kind,
        "base": str(base_dir),
        "qlora": qlora,
        "precision": precision,
        "hyperparameters": hyper,
        "lora_targets": list(peft_config.target_modules),
        "train_records": len(train_records),
        "validation_records": len(val_records),
        "truncation": cut,
        "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "resumed_from": last,
        "processes": processes,
        "global_batch_size": args.per_device_train_batch_size * args.gradient_accumulation_steps * processes,
        "speed": {**{k: v for k, v in dataclasses.asdict(plan).items() if k != "why"}, "why": plan.why},
        "tokens_seen": tokens,
        "wall_seconds": round(wall, 2),
        "tokens_per_second": round(tokens / wall, 1) if wall else None,
        "peak_memory_mb": _peak_memory_mb(device),
        "device": device,
        "versions": installed_versions("torch", "transformers", "trl", "peft", "accelerate", "datasets"),
    }
    with files.staged_dir(out_dir) as staged:
        trainer.model.save_pretrained(staged)
        tokenizer.save_pretrained(staged)
        with files.atomic(Path(staged) / "log_history.csv") as handle:
            history.to_csv(handle, index=False, lineterminator="\n")
        files.write_json(Path(staged) / "summary.json", summary)
        with files.atomic(Path(staged) / VALIDATION_ITEMS) as handle:
            pd.DataFrame({"item": range(len(item_losses)), "eval_loss": item_losses}).to_csv(
                handle, index=False, lineterminator="\n")
        modeldir.write_adapter_manifest(staged, {"kind": "adapter", "run": name, "trainer": trainer_kind,
                                                 "base": str(base_dir)})
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    log.info("%s: %d steps, %d tokens in %.1f s (%.0f tokens/s)", name, summary["steps"], tokens, wall,
             summary["tokens_per_second"] or 0)
    return summary


def _validation_item_losses(trainer, val_examples: list[dict]) -> list[float]:
    """The trained model's validation loss on each record alone, through the trainer's own evaluation
    (same formatting, collation and loss as `eval_loss`); the evaluations stay out of the log history."""
    import datasets

    logged = len(trainer.state.log_history)
    losses = [trainer.evaluate(eval_dataset=datasets.Dataset.from_list([example]), metric_key_prefix="item")
              ["item_loss"] for example in val_examples]
    del trainer.state.log_history[logged:]
    return losses


def _join_batches(trainer) -> None:
    """Batches as one row of joined records (`speed.padding_free`), through TRL's own collator. TRL
    refuses `padding_free` with a `max_length` because it would not cut the records; here the trainer
    was built padded, so its datasets are already tokenized and cut at `max_length`."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    trainer.data_collator = DataCollatorForLanguageModeling(pad_token_id=trainer.processing_class.pad_token_id,
                                                            padding_free=True)


def _measure_pairs(trainer) -> None:
    """transformers' length-grouped samplers measure a row by its `input_ids`, which TRL's tokenized
    pairs lack (prompt, chosen and rejected ids apart): give each pair the length of its longer sequence
    in the length column, and keep that column through the unused-column filter (the collator ignores it)."""
    data, column = trainer.train_dataset, trainer.args.length_column_name
    trainer.train_dataset = data.add_column(column, [len(p) + max(len(c), len(r)) for p, c, r in zip(
        data["prompt_ids"], data["chosen_ids"], data["rejected_ids"], strict=True)])
    trainer._set_signature_columns_if_needed()
    trainer._signature_columns = [*trainer._signature_columns, column]


def _carry_token_count(trainer, checkpoint: str) -> None:
    """TRL counts `num_tokens` in the trainer, not in the checkpoint, so a resumed run would count from
    zero again: start it at the count logged at the checkpoint's step."""
    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
    counts = [e["num_tokens"] for e in state["log_history"] if "num_tokens" in e and e["step"] <= state["global_step"]]
    if counts and hasattr(trainer, "_total_train_tokens"):
        trainer._total_train_tokens = int(counts[-1])


def _whole_run_train_loss(history):
    """The Trainer's final `train_loss` averages only the steps of its own `train()` call, so a resumed
    run reports the mean since the restart: recompute it over every logged step (each logged loss is the
    mean over its logging interval), the same way for a run resumed or not."""
    if "train_loss" not in history or "loss" not in history:
        return history
    logged = history.dropna(subset=["loss"])
    if logged.empty:
        return history
    steps = logged["step"].astype(float)
    intervals = steps.diff().fillna(steps.iloc[0])
    history.loc[history["train_loss"].notna(), "train_loss"] = float((logged["loss"] * intervals).sum()
                                                                     / steps.iloc[-1])
    return history


def _in_one_order(history):
    """step and epoch first, the rest by name: the Trainer's history lists columns in the order they were
    first logged, and a resumed run's (read back from trainer_state.json) by name."""
    first = [c for c in ("step", "epoch") if c in history]
    return history[first + sorted(c for c in history.columns if c not in first)]


def last_complete_checkpoint(checkpoint_dir: Path) -> str | None:
    """The newest `checkpoint-N` folder whose save finished: the Trainer writes trainer_state.json after
    the weights and the optimizer, so a kill during a save leaves a folder without it."""
    if not checkpoint_dir.is_dir():
        return None
    saved = [p for p in checkpoint_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    complete = [p for p in saved if (p / "trainer_state.json").is_file()]
    return str(max(complete, key=lambda p: int(p.name.split("-")[-1]))) if complete else None


def _speed_plan(where: str, hyper: dict, checkpoint_dir: Path, **context) -> speed.Plan:
    """The run's speed settings: decided at its start and kept in its checkpoint folder, so that a
    resumed run keeps the settings it started with (timings and free memory vary between starts)."""
    saved = checkpoint_dir / "speed.json"
    if saved.is_file():
        kept = files.read_json(saved)
        log.info("%s: speed settings of the interrupted run: %s", where, kept)
        return speed.Plan(**kept, why={"resumed": str(saved)})
    plan = speed.plan(where, hyper.get("speed"), device=context["device"], model_config=context["model_config"],
                      **step_shape(hyper), dtype=context["dtype"], quantized=bool(context["qlora"]),
                      padded_to=hyper.get("pad_to_multiple_of"),
                      lengths=context["lengths"], grouped=hyper.get("train_sampling_strategy") in speed.GROUPING)
    log.info("%s: speed settings %s", where, ", ".join(f"{k}={v}" for k, v in plan.settings().items()) +
             f", lm_head={plan.lm_head}, padding_free={plan.padding_free}")
    for knob, reason in plan.why.items():
        log.info("  %s: %s", knob, reason)
    files.write_json(saved, {k: v for k, v in dataclasses.asdict(plan).items() if k != "why"})
    return plan


def _peak_memory_mb(device: str) -> float:
    if device == "cuda":
        import torch

        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20, 1)


def needs_bitsandbytes(spec: dict) -> bool:
    """Whether a run (`train`'s arguments) uses bitsandbytes: a QLoRA base, a bitsandbytes folder as its
    base, or a bitsandbytes optimizer (zephyr/model/bnb.py); the job decides before importing TRL."""
    return bnb.needed(formats=[spec.get("qlora")], model_dirs=[spec["base_dir"]], optim=spec["hyper"].get("optim"))


def launch(spec: dict, processes: int = 1, *, threads: int | None = None, log_file: str | Path | None = None) -> dict:
    """Train with `train(**spec)` here, or in `processes` data-parallel processes (one per GPU;
    gloo on a machine without one) started by `accelerate launch`, each logging to `log_file`."""
    if processes <= 1:
        return train(**spec)
    split_accumulation(f"hyperparameters of run {spec['name']}", spec["hyper"], processes)  # before any start-up
    import torch

    if torch.cuda.is_available() and processes > torch.cuda.device_count():
        raise TrainingError(f"run {spec['name']}: {processes} training processes (one per GPU) but this job sees "
                            f"{torch.cuda.device_count()} GPU(s); lower compute.gpus or give the job more GPUs")
    spec_file = Path(spec["checkpoint_root"]) / "launch.json"
    spec_file.parent.mkdir(parents=True, exist_ok=True)
    plain = {key: str(value) if isinstance(value, Path) else value for key, value in spec.items()}
    files.write_json(spec_file, {**plain, "log_file": str(log_file) if log_file else None})
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", "0",  # a free port: two jobs on one node do not collide
        "--num_cpu_threads_per_process", str(max(1, (threads or 1) // processes)),
        "-m", "zephyr.model.training", str(spec_file),
    ]
    log.info("%s: %d data-parallel processes: %s", spec["name"], processes, " ".join(command))
    for handler in logging.getLogger().handlers:
        handler.flush()
    result = subprocess.run(command)
    if result.returncode:
        raise TrainingError(f"run {spec['name']}: the {processes} training processes failed "
                            f"(exit {result.returncode}); "
                            f"see {log_file or 'the output above'}")
    spec_file.unlink()
    return files.read_json(Path(spec["out_dir"]) / "summary.json")


def main(argv: list[str]) -> None:
    """One data-parallel process of `launch` (rank from the launcher's environment)."""
    spec = files.read_json(argv[0])
    rank = int(os.environ.get("RANK", 0))
    logs.setup(spec.pop("log_file"), level=logging.INFO if rank == 0 else logging.WARNING, append=True,
               tag=f"rank {rank}")
    bnb.for_job(needs_bitsandbytes(spec))
    train(**spec)


if __name__ == "__main__":
    main(sys.argv[1:])
