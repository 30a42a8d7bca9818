"""Training throughput with 1 and more data-parallel processes (the multi-GPU path of a training job).

    .venv/bin/python bench/bench_train.py --model resources/models/qwen --processes 1 2
    CUDA_VISIBLE_DEVICES=0,1,2,3 .venv/bin/python bench/bench_train.py --processes 1 2 4

Each run is `zephyr.model.training.launch` with the same hyperparameters, hence the same global batch: the
processes split its accumulation steps. On a GPU machine each process takes a GPU; without one they
are gloo processes on the CPU, where start-up dominates. Not a test: it prints.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resources/models/qwen", help="base model folder")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per run")
    parser.add_argument("--batch-size", type=int, default=2, help="per-device batch")
    parser.add_argument("--accumulation", type=int, default=4, help="accumulation steps of one process")
    parser.add_argument("--max-length", type=int, default=256)
    args = parser.parse_args(argv)

    from bench_eval import records  # the drawn mixture, else generated records through the same formatter

    from zephyr.model import training

    hyper = {"trainer": "sft", "per_device_train_batch_size": args.batch_size,
             "gradient_accumulation_steps": args.accumulation, "max_steps": args.steps,
             "max_length": args.max_length, "learning_rate": 1e-4, "logging_steps": args.steps, "save_steps": 10**6}
    rows, origin = records("gsm8k", "D_S", args.steps * args.batch_size * args.accumulation)
    print(f"model {args.model}; {len(rows)} records from {origin}; global batch {args.batch_size * args.accumulation}")
    with tempfile.TemporaryDirectory() as tmp:
        train = Path(tmp) / "train.json"
        train.write_text(json.dumps(rows))
        for processes in args.processes:
            spec = dict(name=f"bench/{processes}", hyper=hyper, base_dir=args.model, train_path=str(train),
                        validation_path=None, out_dir=f"{tmp}/adapter{processes}", checkpoint_root=f"{tmp}/ckpt{processes}")
            start = time.perf_counter()
            summary = training.launch(spec, processes, threads=os.cpu_count(), log_file=f"{tmp}/train{processes}.log")
            total = time.perf_counter() - start
            print(f"{processes} process(es) on {summary['device']}: {summary['steps']} steps, "
                  f"{summary['tokens_seen']} tokens, training {summary['wall_seconds']:.1f} s "
                  f"({summary['tokens_per_second']:.0f} tokens/s), {total:.1f} s with start-up")


if __name__ == "__main__":
    main()
