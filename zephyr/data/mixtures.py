"""Sampled mixtures: the study's SFT (D_S, D_L), DPO and MCQA sets, and the held-out evaluation sets.

From each component dataset, N_i = min(cap_i, S_i) records are drawn at random without replacement,
then all are concatenated and shuffled; a validation fraction is split off by group (a question and
all its answers fall on one side). Every random choice has its own seed derived from the mixture's
seed and the dataset's name, so adding a component or changing one cap leaves the other draws as
they were. Records drawn by the mixtures named in `exclude` (say, the held-out reward-accuracy pairs)
are removed first, by group and by normalized prompt, so training never sees a held-out question.

Text is compared once `formats.normalize`d (Unicode NFKC, case and whitespace folded): exact duplicates
within a dataset and ties (chosen the same as rejected) are dropped before drawing, counted in the
stats and the manifest; records sharing a prompt (within a dataset or across two) stay on one side of
the validation split; and `check_leakage` refuses a held-out item (an evaluation set's, a validation
split's) that a training mixture also holds, however the config is written.

The written JSON is the Alpaca / ranking layout that LlamaFactory reads as it is. The records of one
mixture share one set of keys (a key some records lack, such as `system`, is present and empty in
those), so every JSON loader infers one schema for the file; `dataset_info` maps exactly the
LlamaFactory columns the records carry and registers no empty file.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import files
from ..paths import mixture_file, validation_split
from .formats import normalize

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
#: Mixture tasks a study trains on: SFT and preference pairs (a variant's trainer, LlamaFactory), MCQA.
TRAINED_TASKS = ("sft", "preference", "mcqa")
#: Record fields that name a record rather than say what it holds: left out when records are compared.
IDENTITY_FIELDS = ("id", "source", "group")
#: The columns of the leakage check's table (`check_leakage`).
LEAKAGE_FIELDS = ["held_out", "part", "held_out_as", "trained", "trained_as", "held_out_items", "trained_items",
                  "shared"]


class MixtureError(ValueError):
    """A mixture that cannot be drawn as configured."""


class LeakageError(MixtureError):
    """A held-out item (of an evaluation set or a validation split) that a training mixture also holds."""


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
    #: Records dropped before drawing: exact duplicates of an earlier record (normalized), and ties.
    duplicates: int = 0
    ties: int = 0


def group_key(record: dict) -> str:
    """Records sharing a group (one question's several answers) are drawn and split together."""
    return str(record.get("group") or record["id"])


def prompt_key(record: dict) -> str | None:
    """What a record asks, `normalize`d: its instruction and input (SFT, preference pairs), its question
    (MCQA, GSM8K) or its context (HellaSwag); None for running text. Held-out items and training records
    are compared by it, and records sharing it fall on one side of the validation split."""
    if "instruction" in record:
        text = record["instruction"] + (f"\n\n{record['input']}" if record.get("input") else "")
    else:
        text = record.get("question", record.get("query"))
    return (normalize(text) or None) if isinstance(text, str) else None


def content_key(record: dict) -> str:
    """A record's whole content, `normalize`d: every field but those naming it (`IDENTITY_FIELDS`), an
    empty one as an absent one. Two records with one key are exact duplicates."""
    def norm(value):
        if isinstance(value, str):
            return normalize(value)
        if isinstance(value, list):
            return [norm(v) for v in value]
        return {k: norm(v) for k, v in value.items()} if isinstance(value, dict) else value

    kept = {k: norm(v) for k, v in record.items() if k not in IDENTITY_FIELDS and v not in ("", [], {}, None)}
    return json.dumps(kept, ensure_ascii=False, sort_keys=True)


def is_tie(record: dict) -> bool:
    """A preference pair whose chosen and rejected answers are the same text once `normalize`d."""
    return "chosen" in record and normalize(record["chosen"]) == normalize(record.get("rejected", ""))


def _clean(rows: list[dict], ordered: bool) -> tuple[list[dict], int, int]:
    """`rows` less ties and exact duplicates of an earlier row (running text keeps its repeats: headings,
    blank lines); returns them with the count of each."""
    kept, seen, ties, duplicates = [], set(), 0, 0
    for row in rows:
        if is_tie(row):
            ties += 1
            continue
        if not ordered:
            key = content_key(row)
            if key in seen:
                duplicates += 1
                continue
            seen.add(key)
        kept.append(row)
    return kept, ties, duplicates


def draw(
    name: str,
    spec: dict,
    records: dict[str, list[dict]],
    excluded: Iterable[dict] = (),
) -> tuple[list[dict], list[dict], list[ComponentStats]]:
    """Draw mixture `name` from `records` (by dataset); returns train, validation and per-dataset stats."""
    seed = spec["seed"]
    ordered = spec["task"] in ORDERED_TASKS
    excluded = list(excluded)
    banned = {group_key(r) for r in excluded}
    banned_prompts = {key for r in excluded if (key := prompt_key(r))}
    drawn: list[dict] = []
    stats: list[ComponentStats] = []
    for component in spec["components"]:
        dataset, cap = component["dataset"], component.get("cap")
        unique, ties, duplicates = _clean(records[dataset], ordered)
        for count, what in ((duplicates, "exact duplicates of an earlier record (same normalized text)"),
                            (ties, "ties (chosen and rejected the same normalized text: no preference)")):
            if count:
                log.warning("mixture %s, %s: %d of its %d records are %s: dropped before drawing and splitting",
                            name, dataset, count, len(records[dataset]), what)
        pool = [r for r in unique if group_key(r) not in banned and prompt_key(r) not in banned_prompts]
        n = len(pool) if cap is None else min(cap, len(pool))
        if spec.get("exact") and cap is not None and cap > len(pool):
            raise MixtureError(f"mixture {name!r}: asks for {cap} records of {dataset!r}, which has {len(pool)}")
        if n == 0:
            raise MixtureError(f"mixture {name!r}: dataset {dataset!r} has no records left to draw")
        picked = range(n) if ordered else sorted(random.Random(f"{seed}:draw:{dataset}").sample(range(len(pool)), n))
        drawn.extend(pool[i] for i in picked)
        stats.append(ComponentStats(dataset, len(records[dataset]), len(unique) - len(pool), cap, n,
                                    capped=cap is not None and cap > len(pool), duplicates=duplicates, ties=ties))
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


def split_groups(records: list[dict]) -> list[str]:
    """Each record's group in the validation split: its `group_key`, joined with every group whose records
    share a normalized prompt with it (`prompt_key`), and named by the least key of those it joins: a
    question asked twice in a dataset never falls on both sides. Without shared prompts, its group_key."""
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        while parent.setdefault(key, key) != key:
            key = parent[key] = parent[parent[key]]
        return key

    first: dict[str, str] = {}
    for r in records:
        group, prompt = root(group_key(r)), prompt_key(r)
        if prompt is None:
            continue
        other = root(first.setdefault(prompt, group))
        if other != group:
            parent[max(other, group)] = min(other, group)  # a root is the least key of its groups
    return [root(group_key(r)) for r in records]


def split(records: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Hold out about `fraction` of `records`, whole groups at a time (`split_groups`), chosen at random."""
    if fraction <= 0:
        return records, []
    labels = split_groups(records)
    groups = sorted(set(labels))
    random.Random(f"{seed}:validation").shuffle(groups)
    target = round(fraction * len(records))
    sizes: dict[str, int] = {}
    for label in labels:
        sizes[label] = sizes.get(label, 0) + 1
    held: set[str] = set()
    count = 0
    for g in groups:
        if count >= target:
            break
        held.add(g)
        count += sizes[g]
    train = [r for r, label in zip(records, labels) if label not in held]
    if not train:
        raise MixtureError(f"a validation share of {fraction} of {len(records)} records in {len(groups)} groups "
                           "leaves no training records")
    return train, [r for r, label in zip(records, labels) if label in held]


def draw_files(name: str, spec: dict, records: dict[str, str | Path], exclude: Iterable[str | Path], out: dict,
               least: dict[str, int] | None = None) -> None:
    """Draw mixture `name` from record files (`records`: dataset → its records file, checked against its
    manifest first) and write it to `out`, with its `shortfalls` (logged, and written to `out["warnings"]`
    where given) against the `least` items the tasks that evaluate on it need (`study.least_items`), and
    (where `out` names it) its manifest: what was dropped before drawing, and every written file's checksum."""
    by_dataset = {}
    for dataset, path in records.items():
        files.verify_file(path)
        by_dataset[dataset] = list(files.iter_jsonl(path))
    excluded = [r for p in exclude for r in read(p)]
    train, validation, stats = draw(name, spec, by_dataset, excluded)
    warnings = shortfalls(name, train, stats, least)
    for warning in warnings:
        log.warning("mixture %s, %s: %s", name, warning["part"], warning["warning"])
    about = {"mixture": name, "task": spec["task"], "train": len(train), "validation": len(validation),
             "duplicates_dropped": {s.dataset: s.duplicates for s in stats},
             "ties_dropped": {s.dataset: s.ties for s in stats}}
    write(out, train, validation, stats, warnings, about)
    if spec.get("reported_size") is not None:
        log.info("%s: drew %d records; the paper reports %d", name, len(train) + len(validation), spec["reported_size"])


def write(out: dict[str, str | Path], train: list[dict], validation: list[dict], stats: list[ComponentStats],
          warnings: list[dict] = (), about: dict | None = None) -> None:
    """Write the mixture (`train`), its `validation` split, `stats` CSV and (where `out` names the file)
    its `warnings` CSV, each atomically; then (where `out` names it) its `manifest`: `about` with the
    checksum and size of each file written."""
    files.write_json(out["validation"], validation)
    if "warnings" in out:
        _write_csv(out["warnings"], warnings, WARNING_FIELDS)
    _write_csv(out["stats"], [asdict(s) for s in stats])
    files.write_json(out["train"], train)  # its presence means the mixture is complete (the manifest aside)
    if "manifest" in out:
        written = [Path(path) for key, path in out.items() if key != "manifest"]
        folder = Path(out["manifest"]).parent
        if any(path.parent != folder for path in written):
            raise MixtureError(f"a mixture's files and its manifest go in one folder: {sorted(map(str, written))}")
        files.write_json(out["manifest"], {**(about or {}), **files.manifest_files(folder, [p.name for p in written])})


def manifest_of(path: str | Path) -> Path | None:
    """The manifest that lists a mixture's file (its training part, its validation split, ...), found by
    what the folder's manifests list rather than parsed from the file's name; None for a file no manifest
    lists (one a user wrote)."""
    path = Path(path)
    for manifest in sorted(path.parent.glob(f"*.{files.MANIFEST_FILE}")):
        if path.name in files.read_json(manifest).get("files", {}):
            return manifest
    return None


def read(path: str | Path) -> list[dict]:
    """A mixture's records (its training part or its validation split), checked against its manifest
    first (none: a file a user wrote, read as it is)."""
    manifest = manifest_of(path)
    if manifest is not None:
        files.verify(Path(path).parent, files.rebuild_command(manifest), manifest=manifest)
    return files.read_json(path)


def gather_warnings(paths: Iterable[str | Path], out: str | Path, config_warnings: Iterable[str] = (),
                    run_warnings: Iterable[dict] = ()) -> int:
    """The warnings of the config (`zephyr.config.config_warnings`, part "config"), the warnings CSVs of
    several mixtures' draws and the finished runs' warnings (rows of `WARNING_FIELDS`) in one table at
    `out` (its header alone when none warns), for the report; returns the number of warnings."""
    import pandas as pd

    frames = [frame for p in paths if not (frame := pd.read_csv(p)).empty]
    rows = [{"mixture": "", "part": "config", "count": None, "warning": w} for w in config_warnings]
    rows += pd.concat(frames, ignore_index=True).to_dict("records") if frames else []
    rows += list(run_warnings)
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
        for registered, file_name in ((name, mixture_file(name)),
                                      (validation_split(name), mixture_file(name, "validation.json"))):
            records = read(Path(directory) / file_name)
            if not records:
                log.info("%s: empty, not registered", file_name)
                continue
            entry = {"file_name": file_name, "formatting": "alpaca",
                     "columns": llamafactory_columns(task, records, file_name)}
            if task == "preference":
                entry["ranking"] = True
            info[registered] = entry
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


def leakage_plan(config: dict) -> list[dict]:
    """Which held-out part of which mixture must share no item with which training mixture (`check_leakage`),
    read from a validated config, each check with its reasons in words and the fix.

    Held out: every evaluation set (`evaluation.TASK.data`), against every training mixture: a variant's
    `data`, or an SFT, preference or MCQA mixture no task evaluates on; an evaluation set a variant trains
    on is checked against itself, and so refused. And every validation split, against its own mixture's
    training part and the training mixtures of the variants each variant that validates on it is trained
    from (its parent's, their parents'...): a model is validated on items none of its training saw."""
    mixtures, variants = config["mixtures"], config["variants"]
    evaluated: dict[str, list[str]] = {}
    for task, spec in config["evaluation"].items():
        if isinstance(spec, dict) and spec.get("data") in mixtures:  # running text (perplexity) asks nothing
            evaluated.setdefault(spec["data"], []).append(f"evaluation.{task}.data")
    evaluated = {m: keys for m, keys in evaluated.items() if mixtures[m]["task"] not in ORDERED_TASKS}
    trained_by: dict[str, list[str]] = {}
    for variant, spec in variants.items():
        trained_by.setdefault(spec["data"], []).append(variant)
    training = {m: f"trained by {', '.join(trained_by[m])}" if m in trained_by else f"a {spec['task']} mixture"
                for m, spec in mixtures.items()
                if m in trained_by or (spec["task"] in TRAINED_TASKS and m not in evaluated)}
    checks: dict[tuple, dict] = {}

    def check(held: str, part: str, held_as: str, trained: str, trained_as: str, fix: str) -> None:
        checks.setdefault((held, part, trained), {"held_out": held, "part": part, "held_out_as": held_as,
                                                   "trained": trained, "trained_as": trained_as, "fix": fix})

    for held, keys in evaluated.items():
        for trained, trained_as in training.items():
            fix = (f"point {' and '.join(keys)} at a mixture no variant trains on" if held == trained else
                   f"list {held} in mixtures.{trained}.exclude (its items are then left out, by group and by "
                   "normalized prompt)")
            check(held, "train", f"evaluation set ({', '.join(keys)})", trained, trained_as, fix)
    for held, spec in mixtures.items():
        if spec.get("validation", 0) > 0:
            check(held, "validation", "validation split", held, "its own training part",
                  "the split keeps records sharing a normalized prompt on one side: draw it again")
    for variant, spec in variants.items():
        held, parent = spec["data"], spec["parent"]
        if mixtures[held].get("validation", 0) <= 0:
            continue
        while parent in variants:
            trained = variants[parent]["data"]
            if trained != held:
                check(held, "validation", f"validation split of {variant}", trained,
                      f"trained on by {parent}, which {variant} is trained from",
                      f"list {trained} in mixtures.{held}.exclude")
            parent = variants[parent]["parent"]
    return list(checks.values())


def check_leakage(plan: list[dict], part: Callable[[str, str], list[dict]]) -> list[dict]:
    """Run `plan` (`leakage_plan`) on the mixtures' records, `part(mixture, "train" | "validation")`:
    one row per check (`LEAKAGE_FIELDS`); a held-out item whose normalized prompt (`prompt_key`) a training
    mixture also holds is a LeakageError naming both mixtures, the items and the text, for every check."""
    read_parts: dict[tuple[str, str], list[dict]] = {}
    prompts: dict[str, dict[str, dict]] = {}
    rows, found = [], []
    for entry in plan:
        held_name, trained = entry["held_out"], entry["trained"]
        key = (held_name, entry["part"])
        for needed in (key, (trained, "train")):
            if needed not in read_parts:
                read_parts[needed] = part(*needed)
        held = read_parts[key]
        if trained not in prompts:
            prompts[trained] = {}
            for record in read_parts[(trained, "train")]:
                if (prompt := prompt_key(record)) is not None:
                    prompts[trained].setdefault(prompt, record)
        shared = [(record, prompts[trained][prompt], prompt) for record in held
                  if (prompt := prompt_key(record)) is not None and prompt in prompts[trained]]
        rows.append({**{k: entry[k] for k in LEAKAGE_FIELDS if k in entry}, "held_out_items": len(held),
                     "trained_items": len(read_parts[(trained, "train")]), "shared": len(shared)})
        if shared:
            label = held_name if entry["part"] == "train" else validation_split(held_name)
            record, twin, prompt = shared[0]
            text = prompt if len(prompt) <= 80 else prompt[:77] + "..."
            found.append(f"{label} ({entry['held_out_as']}) shares {len(shared)} of its {len(held)} items with "
                         f"training mixture {trained} ({entry['trained_as']}): e.g. {label} item {record.get('id')} "
                         f"and {trained} item {twin.get('id')}, normalized {text!r}; {entry['fix']}")
    if found:
        raise LeakageError("held-out items in training mixtures (compared by their prompt, Unicode NFKC, case and "
                           "whitespace folded):\n  " + "\n  ".join(found))
    return rows


def check_leakage_files(plan: list[dict], parts: dict[str, dict[str, str | Path]], out: str | Path) -> list[dict]:
    """`check_leakage` on mixture files (`parts`: mixture → {"train": path, "validation": path}, each
    checked against its manifest), its table written to `out` (only when nothing leaks)."""
    rows = check_leakage(plan, lambda mixture, part: read(parts[mixture][part]))
    for row in rows:
        log.info("%s %s (%s) against %s (%s): %d held-out and %d training items, %d shared", row["held_out"],
                 row["part"], row["held_out_as"], row["trained"], row["trained_as"], row["held_out_items"],
                 row["trained_items"], row["shared"])
    _write_csv(out, rows, LEAKAGE_FIELDS)
    return rows


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
