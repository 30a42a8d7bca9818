"""Evaluation throughput of one model folder: HellaSwag items/s and greedy generation tokens/s.

    .venv/bin/python bench/bench_eval.py --model resources/models/qwen --items 40

Records come from results/mixtures/hellaswag_eval.json and gsm8k_eval.json when the workflow has drawn
them, else from the seeded generators passed through the same formatters. Not a test: it prints.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def records(task: str, mixture: str, n: int, seed: int = 0) -> tuple[list[dict], str]:
    """The first `n` records of the drawn mixture, or `n` generated ones (`mixture` "": always generated)."""
    path = ROOT / "results" / "mixtures" / f"{mixture}.json"
    if mixture and path.is_file():
        rows = json.loads(path.read_text())
        if len(rows) >= n:
            return rows[:n], str(path.relative_to(ROOT))
    from zephyr.data import formats, generators

    raw = generators.generate(task, n, seed)
    return list(formats.format_rows(raw, task, dataset=f"{task}_generated", origin="generators")), f"generators.{task}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resources/models/qwen", help="model folder (dense or quantized)")
    parser.add_argument("--items", type=int, default=40, help="HellaSwag items to score")
    parser.add_argument("--gen-items", type=int, default=8, help="GSM8K questions to answer")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's; 1 avoids OpenMP stalls when another job holds a core)")
    args = parser.parse_args(argv)

    import torch

    from zephyr.devices import device
    from zephyr.evaluation import scoring, tasks
    from zephyr.model import modeldir

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads {torch.get_num_threads()}, device {device()}")
    start = time.perf_counter()
    model, tok = modeldir.load(args.model)
    params = sum(p.numel() for p in model.parameters())
    print(f"model {args.model}: {type(model).__name__}, {params / 1e6:.1f}M parameters, "
          f"loaded in {time.perf_counter() - start:.1f} s")

    hs, origin = records("hellaswag", "hellaswag_eval", args.items)
    requests = [(r["query"], " " + c) for r in hs for c in r["choices"]]
    scored = sum(n for _, n in scoring.encode_requests(tok, requests))
    start = time.perf_counter()
    _, summary = tasks.hellaswag(model, tok, hs, args.batch_size)
    wall = time.perf_counter() - start
    print(f"hellaswag ({origin}): {len(hs)} items ({len(requests)} requests, {scored} scored tokens) in {wall:.1f} s: "
          f"{len(hs) / wall:.2f} items/s; acc {summary['acc']:.3f} acc_norm {summary['acc_norm']:.3f}")

    gs, origin = records("gsm8k", "gsm8k_eval", args.gen_items)
    stats: dict = {}
    start = time.perf_counter()
    scoring.generate(model, tok, gs, args.max_new_tokens, args.batch_size, stats=stats)
    wall = time.perf_counter() - start
    print(f"generation ({origin}): {len(gs)} prompts ({stats['prompt_tokens']} prompt tokens), "
          f"{stats['new_tokens']} new tokens in {wall:.1f} s: {stats['new_tokens'] / wall:.1f} tokens/s "
          f"(batch {args.batch_size}, max_new_tokens {args.max_new_tokens})")


if __name__ == "__main__":
    main()
