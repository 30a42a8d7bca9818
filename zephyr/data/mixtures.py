"""Sampled mixtures: the study's SFT (D_S, D_L), DPO and MCQA sets, and the held-out evaluation sets.

From each component dataset, N_i = min(cap_i, S_i) records are drawn at random without replacement,
then all are concatenated and shuffled; a validation fraction is split off by group (a question and
all its answers fall on one side). Every random choice has its own seed derived from the mixture's
seed and the dataset's name, so adding a component or changing one cap leaves the other draws as
they were. Records drawn by the mixtures named in `exclude` (say, the held-out reward-accuracy pairs)
are removed first, by group, so training never sees a held-out question.

The written JSON is the Alpaca / ranking layout that LlamaFactory reads as it is. The records of one
mixture share one set of keys (a key some records lack, such as `system`, is present and empty in
those), so every JSON loader infers one schema for the file; `dataset_info` maps exactly the
LlamaFactory columns the records carry and registers no empty file.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import files

log = logging.getLogger(__name__)

#: Tasks whose records are a running text: a cap takes the first rows, in order, and nothing is shuffled.
ORDERED_TASKS = {"text"}

#: LlamaFactory `dataset_info.json` columns (its name: the record key) for the tasks it trains on.
LLAMAFACTORY_COLUMNS = {
    "sft": {"prompt": "instruction", "query": "input", "response": "output", "system": "system", "history": "history"},
    "preference": {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected",
                   "system": "system", "history": "history"},
}
#: Columns LlamaFactory reads without checking that the map names them: a record always carries them.
LLAMAFACTORY_REQUIRED = {"sft": {"prompt", "response"}, "preference": {"prompt", "chosen", "rejected"}}


#: The columns of a draw's warnings (`shortfalls`) and of the report's table of them.
WARNING_FIELDS = ["mixture", "part", "count", "warning"]


class MixtureError(ValueError):
    """A mixture that cannot be drawn as configured."""


@dataclass
class ComponentStats:
    dataset: str
    available: int
    excluded: int
    cap: int | None
    drawn: int
    capped: bool
    train: int = 0
    validation: int = 0


def group_key(record: dict) -> str:
    """Records sharing a group (one question's several answers) are drawn and split together."""
    return str(record.get("group") or record["id"])


def draw(
    name: str,
    spec: dict,
    records: dict[str, list[dict]],
    excluded: Iterable[dict] = (),
) -> tuple[list[dict], list[dict], list[ComponentStats]]:
    """Draw mixture `name` from `records` (by dataset); returns train, validation and per-dataset stats."""
    seed = spec["seed"]
    ordered = spec["task"] in ORDERED_TASKS
    banned = {group_key(r) for r in excluded}
    drawn: list[dict] = []
    stats: list[ComponentStats] = []
    for component in spec["components"]:
        dataset, cap = component["dataset"], component.get("cap")
        pool = [r for r in records[dataset] if group_key(r) not in banned]
        n = len(pool) if cap is None else min(cap, len(pool))
        if spec.get("exact") and cap is not None and cap > len(pool):
            raise MixtureError(f"mixture {name!r}: asks for {cap} records of {dataset!r}, which has {len(pool)}")
        if n == 0:
            raise MixtureError(f"mixture {name!r}: dataset {dataset!r} has no records left to draw")
        picked = range(n) if ordered else sorted(random.Random(f"{seed}:draw:{dataset}").sample(range(len(pool)), n))
        drawn.extend(pool[i] for i in picked)
        stats.append(ComponentStats(dataset, len(records[dataset]), len(records[dataset]) - len(pool), cap, n,
                                    capped=cap is not None and cap > len(pool)))
    if not ordered:
        random.Random(f"{seed}:shuffle").shuffle(drawn)
    drawn = uniform_keys(drawn)
    share = spec.get("validation", 0.0)
    try:
        train, validation = split(drawn, share, seed)
    except MixtureError as err:
        raise MixtureError(f"mixture {name!r}: {err}: lower mixtures.{name}.validation or draw more records") from None
    if share > 0 and not validation:
        raise MixtureError(f"mixture {name!r}: a validation share of {share} of its {len(drawn)} records "
                           f"holds out none, "
                           f"so its runs would have no validation loss: raise mixtures.{name}.validation to at least "
                           f"{0.5 / len(drawn):.2g}, draw more records, or set it to 0 to train without validation")
    for s in stats:
        s.train = sum(r["source"] == s.dataset for r in train)
        s.validation = sum(r["source"] == s.dataset for r in validation)
    log.info("%s: %d train + %d validation records from %d datasets", name, len(train), len(validation), len(stats))
    return train, validation, stats


def shortfalls(name: str, train: list[dict], stats: list[ComponentStats], least: dict[str, int] | None = None
               ) -> list[dict]:
    """What the draw of mixture `name` gave short of what was asked, without failing, one row per case
    (`WARNING_FIELDS`) for the report: a cap above its dataset's records (all are taken), and an
    evaluation set below the `least` items a task that reads it needs (by task: its standard error is
    wider than the study is sized for). An empty part is an error in `draw`, never a warning."""
    found = [{"mixture": name, "part": s.dataset, "count": s.drawn,
              "warning": f"cap {s.cap} on {s.dataset} exceeds its {s.drawn} records"
                         + (f" left after {s.excluded} excluded" if s.excluded else "") + f": all {s.drawn} taken"}
             for s in stats if s.capped]
    for task, items in (least or {}).items():
        if len(train) < items:
            found.append({"mixture": name, "part": "evaluation", "count": len(train),
                          "warning": f"{len(train)} items, fewer than the {items} {task} needs for the standard "
                                     f"error the study is sized for: raise the caps of mixtures.{name}.components "
                                     "or draw from a larger source"})
    return found


def uniform_keys(records: list[dict]) -> list[dict]:
    """The records with one set of keys (in order of first appearance): a key some records carry is
    added to the others, empty ("" for text, [] for a list such as `history`, None otherwise)."""
    keys: dict[str, object] = {}
    for record in records:
        for key, value in record.items():
            keys.setdefault(key, _empty(value))
    return [{key: record.get(key, empty) for key, empty in keys.items()} for record in records]


def _empty(value):
    return type(value)() if isinstance(value, (str, list, dict)) else None


def split(records: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Hold out about `fraction` of `records`, whole groups at a time, chosen at random."""
    if fraction <= 0:
        return records, []
    groups = sorted({group_key(r) for r in records})
    random.Random(f"{seed}:validation").shuffle(groups)
    target = round(fraction * len(records))
    sizes: dict[str, int] = {}
    for r in records:
        sizes[group_key(r)] = sizes.get(group_key(r), 0) + 1
    held: set[str] = set()
    count = 0
    for g in groups:
        if count >= target:
            break
        held.add(g)
        count += sizes[g]
    train = [r for r in records if group_key(r) not in held]
    if not train:
        raise MixtureError(f"a validation share of {fraction} of {len(records)} records in {len(groups)} groups "
                           "leaves no training records")
    return train, [r for r in records if group_key(r) in held]


def draw_files(name: str, spec: dict, records: Iterable[str | Path], exclude: Iterable[str | Path], out: dict,
               least: dict[str, int] | None = None) -> None:
    """Draw mixture `name` from record files (named `{dataset}.jsonl`) and write it to `out`, with its
    `shortfalls` (logged, and written to `out["warnings"]` where given) against the `least` items the
    tasks that evaluate on it need (`study.least_items`)."""
    by_dataset = {Path(p).stem: list(files.iter_jsonl(p)) for p in records}
    excluded = [r for p in exclude for r in files.read_json(p)]
    train, validation, stats = draw(name, spec, by_dataset, excluded)
    warnings = shortfalls(name, train, stats, least)
    for warning in warnings:
        log.warning("mixture %s, %s: %s", name, warning["part"], warning["warning"])
    write(out, train, validation, stats, warnings)
    if spec.get("reported_size") is not None:
        log.info("%s: drew %d records; the paper reports %d", name, len(train) + len(validation), spec["reported_size"])


def write(out: dict[str, str | Path], train: list[dict], validation: list[dict], stats: list[ComponentStats],
          warnings: list[dict] = ()) -> None:
    """Write the mixture (`train`), its `validation` split, `stats` CSV and (where `out` names the file)
    its `warnings` CSV, each atomically."""
    files.write_json(out["validation"], validation)
    if "warnings" in out:
        _write_csv(out["warnings"], warnings, WARNING_FIELDS)
    _write_csv(out["stats"], [asdict(s) for s in stats])
    files.write_json(out["train"], train)  # last: its presence means the mixture is complete


def gather_warnings(paths: Iterable[str | Path], out: str | Path) -> int:
    """The warnings CSVs of several mixtures' draws in one table at `out` (its header alone when none
    warns), for the report; returns the number of warnings."""
    import pandas as pd

    frames = [frame for p in paths if not (frame := pd.read_csv(p)).empty]
    rows = pd.concat(frames, ignore_index=True).to_dict("records") if frames else []
    _write_csv(out, rows, WARNING_FIELDS)
    return len(rows)


def _write_csv(path: str | Path, rows: list[dict], columns: list[str] | None = None) -> None:
    import pandas as pd  # here, not at the top: the workflow imports this module when it parses

    with files.atomic(path) as handle:
        pd.DataFrame(rows, columns=columns).to_csv(handle, index=False, lineterminator="\n")


def dataset_info(tasks: dict[str, str], directory: str | Path) -> dict:
    """LlamaFactory's dataset_info.json for the trainable mixtures in `directory` (by name: task), and
    their validation splits: each file that holds records, with the columns its records carry."""
    info = {}
    for name, task in tasks.items():
        if task not in LLAMAFACTORY_COLUMNS:
            continue
        for suffix, file_name in (("", f"{name}.json"), ("_validation", f"{name}.validation.json")):
            records = files.read_json(Path(directory) / file_name)
            if not records:
                log.info("%s: empty, not registered", file_name)
                continue
            entry = {"file_name": file_name, "formatting": "alpaca",
                     "columns": llamafactory_columns(task, records, file_name)}
            if task == "preference":
                entry["ranking"] = True
            info[name + suffix] = entry
    return info


def llamafactory_columns(task: str, records: list[dict], where: str = "records") -> dict[str, str]:
    """The LlamaFactory column map of `task` for the keys `records` carry: a key that only some
    records carry is an error (LlamaFactory would read it from every record)."""
    columns = {}
    for column, key in LLAMAFACTORY_COLUMNS[task].items():
        carried = sum(key in r for r in records)
        if carried == len(records):
            columns[column] = key
        elif carried:
            raise MixtureError(f"{where}: {carried} of {len(records)} records carry {key!r}; "
                               "the records of a mixture must share one set of keys (draw it again)")
        elif column in LLAMAFACTORY_REQUIRED[task]:
            raise MixtureError(f"{where}: no record carries {key!r}, which LlamaFactory needs for {task} data")
    return columns


def planned_size(config: dict, name: str, formatted: dict[str, int] | None = None) -> int:
    """The mixture's size before its validation split, from what each source holds once formatted: the
    count of its formatted records where known (`formatted`, dataset → records), else the config's
    recorded `records` (a filter's yield), else its recorded `rows`; capped by the component's cap."""
    total = 0
    for component in config["mixtures"][name]["components"]:
        dataset = component["dataset"]
        held = (formatted or {}).get(dataset, available_records(config["datasets"][dataset]))
        cap = component.get("cap")
        if held is None and cap is None:
            raise MixtureError(f"mixture {name!r}: {dataset} has neither a cap nor recorded rows")
        total += min(x for x in (held, cap) if x is not None)
    return total


def available_records(dataset: dict) -> int | None:
    """The records a source is known to give before it is fetched: recorded (`records`, else `rows`), or
    a generator's size (its formatter may still drop a few, counted in its job's log)."""
    for key in ("records", "rows"):
        if dataset.get(key) is not None:
            return dataset[key]
    source = dataset["source"]
    return source["size"] if source["kind"] == "generator" else None
