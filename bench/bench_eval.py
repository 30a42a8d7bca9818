"""Evaluation throughput of one model folder: HellaSwag items/s and greedy generation tokens/s; or,
with --dtypes, how far each evaluation's metrics move between dtypes, against their standard errors.

    .venv/bin/python -m bench.bench_eval --items 40     # the default study's fetched qwen
    .venv/bin/python -m bench.bench_eval --model results/models/qwen/M2-DS --parent results/models/qwen/M1-DS-cosine \
        --dtypes float32 bfloat16      # after `make run`: the default's evaluation sets and settings

Records come from the study's (--config) drawn hellaswag_eval and gsm8k_eval mixtures when the workflow has drawn
them, else from the seeded generators passed through the same formatters. With --dtypes every task of
the config (`--config`) runs on its drawn mixture with its settings, in each dtype, through
`zephyr.evaluation.tasks` (reward accuracy when --parent names the reference). Not a test: it prints.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def records(task: str, mixture: str, n: int, seed: int = 0, layout=None) -> tuple[list[dict], str]:
    """The first `n` records of the study's drawn mixture (`layout`: the study's paths), or `n` generated
    ones (`mixture` "" or no layout: always generated)."""
    path = ROOT / (layout.mixture(mixture) if layout and mixture else "-")
    if mixture and path.is_file():
        rows = json.loads(path.read_text())
        if len(rows) >= n:
            return rows[:n], str(path.relative_to(ROOT))
    from zephyr.data import formats, generators

    raw = generators.generate(task, n, seed)
    return list(formats.format_rows(raw, task, dataset=f"{task}_generated", origin="generators")), f"generators.{task}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None,
                        help="model folder, dense or quantized (default: the study's fetched qwen base model)")
    parser.add_argument("--items", type=int, default=40, help="HellaSwag items to score")
    parser.add_argument("--gen-items", type=int, default=8, help="GSM8K questions to answer")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's; 1 avoids OpenMP stalls when another job holds a core)")
    parser.add_argument("--dtypes", nargs="+", choices=["float32", "bfloat16"], default=None,
                        help="compare every task's metrics between these dtypes instead")
    parser.add_argument("--parent", default=None, help="the reference model of reward accuracy (with --dtypes)")
    parser.add_argument("--config", default="config.yaml",
                        help="the study whose drawn sets (and, with --dtypes, evaluation settings) to read")
    args = parser.parse_args(argv)
    from zephyr import studies

    args.study = studies.load(args.config)
    args.model = args.model or args.study[1].base_model("qwen", None)
    if args.dtypes:
        compare_dtypes(args)
        return

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

    hs, origin = records("hellaswag", "hellaswag_eval", args.items, layout=args.study[1])
    requests = [(r["query"], " " + c) for r in hs for c in r["choices"]]
    scored = sum(n for _, n in scoring.encode_requests(tok, requests))
    start = time.perf_counter()
    _, summary = tasks.hellaswag(model, tok, hs, args.batch_size)
    wall = time.perf_counter() - start
    print(f"hellaswag ({origin}): {len(hs)} items ({len(requests)} requests, {scored} scored tokens) in {wall:.1f} s: "
          f"{len(hs) / wall:.2f} items/s; acc {summary['acc']:.3f} acc_norm {summary['acc_norm']:.3f}")

    gs, origin = records("gsm8k", "gsm8k_eval", args.gen_items, layout=args.study[1])
    stats: dict = {}
    start = time.perf_counter()
    scoring.generate(model, tok, gs, args.max_new_tokens, args.batch_size, stats=stats)
    wall = time.perf_counter() - start
    print(f"generation ({origin}): {len(gs)} prompts ({stats['prompt_tokens']} prompt tokens), "
          f"{stats['new_tokens']} new tokens in {wall:.1f} s: {stats['new_tokens'] / wall:.1f} tokens/s "
          f"(batch {args.batch_size}, max_new_tokens {args.max_new_tokens})")


def compare_dtypes(args) -> None:
    """Each task of the config on its drawn mixture, once per dtype: metric values, their difference and
    the first dtype's standard error, and the wall time of each."""
    import torch

    from zephyr import files, study
    from zephyr.evaluation import tasks
    from zephyr.model import modeldir

    if args.threads:
        torch.set_num_threads(args.threads)
    config, layout = args.study
    evaluation = config["evaluation"]
    names = [t for t, spec in study.TASKS.items()  # the dense tasks; those scored against a parent need --parent
             if t in evaluation and not spec.per_format and (args.parent or not spec.needs_parent)]
    results: dict = {}
    for dtype in args.dtypes:
        model, tok = modeldir.load(args.model, dtype=dtype)
        parent = modeldir.load(args.parent, dtype=dtype)[0] if args.parent else None
        for task in names:
            settings = study.task_settings(evaluation, task, {"weights": dtype, "compute": "plain"})
            records = files.read_json(ROOT / layout.mixture(settings["data"]))
            start = time.perf_counter()
            _, summary = tasks.RUNNERS[task](model, tok, records, settings, parent)
            results[task, dtype] = (summary, time.perf_counter() - start)
    first = args.dtypes[0]
    print(f"{args.model}{' against ' + args.parent if args.parent else ''}, torch threads {torch.get_num_threads()}")
    print(f"{'task':10} {'metric':16} " + " ".join(f"{d:>9}" for d in args.dtypes) + "      diff    stderr  diff/se")
    for task in names:
        summary = results[task, first][0]
        for metric in (m for m in study.TASKS[task].metrics if m in summary["stderr"]):
            values = [results[task, d][0][metric] for d in args.dtypes]
            se = summary["stderr"].get(metric)
            diff = values[-1] - values[0]
            ratio = f"{abs(diff) / se:8.2f}" if se else "       -"
            print(f"{task:10} {metric:16} " + " ".join(f"{v:9.4f}" for v in values)
                  + f" {diff:+9.4f} {se if se is not None else float('nan'):9.4f} {ratio}")
        times = ", ".join(f"{d} {results[task, d][1]:.1f} s" for d in args.dtypes)
        print(f"{task:10} {'wall':16} {times}")


if __name__ == "__main__":
    main()
