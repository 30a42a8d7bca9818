"""What a config's training runs mean in numbers, before anything runs: `python -m zephyr.plan [CONFIG]`.

For each trained variant: its mixture's planned training records (what each source gives once
formatted, capped, less the validation share: the count of this config's formatted records when they
exist — the shared file its fingerprint names, so never another config's — else the config's recorded
`records` or `rows`), the global batch
(per-device batch x accumulation; several GPUs split the accumulation, so it stays), the optimizer
steps (TRL's max_steps, else epochs x steps per epoch) and
the warmup (warmup_steps, or its fraction of the steps when below 1; ignored by a constant schedule) and
the share of steps past it; then each dataset read with options (WikiQA's rows in D_L). A mixture whose
sources record no size plans "?" until it is drawn.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from . import paths, studies
from .data import mixtures

COLUMNS = ("variant", "trainer", "data", "records", "global batch", "steps/epoch", "epochs", "steps", "warmup",
           "past warmup")


def formatted_counts(config: dict, layout: paths.Layout) -> dict[str, int]:
    """Dataset → its formatted records, for the datasets this config has formatted already (one JSON
    line each): only the records its fingerprint names count."""
    counts = {}
    for name in config["datasets"]:
        path = Path(layout.records(name))
        if path.is_file():
            with open(path, "rb") as handle:
                counts[name] = sum(1 for line in handle if line.strip())
    return counts


def runs(config: dict, formatted: dict[str, int] | None = None) -> list[dict]:
    """One line per trained variant (per model when a variant trains several); `formatted` as
    `formatted_counts` gives it."""
    lines = []
    for name, spec in config["variants"].items():
        hyper = config["hyperparameters"][spec["hyperparameters"]]
        mixture = config["mixtures"][spec["data"]]
        try:
            planned = mixtures.planned_size(config, spec["data"], formatted)
            records = planned - round(mixture.get("validation", 0.0) * planned)
        except mixtures.MixtureError:
            records = None
        batch = hyper.get("per_device_train_batch_size", 8) * hyper.get("gradient_accumulation_steps", 1)
        per_epoch = math.ceil(records / batch) if records else None
        epochs = hyper.get("num_train_epochs", 3)
        steps = hyper["max_steps"] if hyper.get("max_steps", -1) > 0 else (
            math.ceil(epochs * per_epoch) if per_epoch else None)
        warmup = hyper.get("warmup_steps", 0)
        if isinstance(warmup, float) and warmup < 1:
            warmup = math.ceil(warmup * steps) if steps else f"{warmup:.0%}"
        past = f"{max(steps - warmup, 0) / steps:.0%}" if steps and isinstance(warmup, int) else None
        if hyper.get("lr_scheduler_type") == "constant":  # transformers' `constant` ignores warmup_steps
            warmup, past = (f"{warmup} (ignored)" if warmup else 0), "100%"
        lines.append({"variant": f"{name} ({', '.join(spec['models'])})", "trainer": hyper["trainer"],
                      "data": spec["data"], "records": records, "global batch": batch, "steps/epoch": per_epoch,
                      "epochs": epochs if hyper.get("max_steps", -1) <= 0 else "-", "steps": steps, "warmup": warmup,
                      "past warmup": past})
    return lines


def render(lines: list[dict]) -> str:
    cells = [[str("?" if line[c] is None else line[c]) for c in COLUMNS] for line in lines]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(COLUMNS)]
    rows = [COLUMNS, *cells]
    return "\n".join("  ".join(v.ljust(w) if i < 3 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths)))
                     for row in rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", nargs="?", default="config.yaml", help="config file (default: config.yaml)")
    args = parser.parse_args(argv)
    config, layout = studies.load(args.config)
    formatted = formatted_counts(config, layout)
    print(f"{args.config}: study {config['experiment']} (outputs {layout.results}/), compute.gpus "
          f"{config['compute']['gpus']}; {len(formatted)} of {len(config['datasets'])} datasets counted from this "
          f"config's formatted records ({paths.SHARED}/records/{{dataset}}/{{fingerprint}}.jsonl), the rest planned")
    print(render(runs(config, formatted)))
    readings = {name: spec["options"] for name, spec in config["datasets"].items() if spec.get("options")}
    for name, options in readings.items():
        used = [m for m, spec in config["mixtures"].items() if any(c["dataset"] == name for c in spec["components"])]
        print(f"{name} (in {', '.join(used) or 'no mixture'}): read with {options} (the config's comment says why)")


if __name__ == "__main__":
    main(sys.argv[1:])
