"""Studies side by side: which config a study's tree belongs to, and the tools that list, clean and draw them.

A study is a config (`zephyr.paths.Layout`: its own output tree). When every final output is written,
the workflow records the study in `{outputs}/study.json`: its name, config files and the fingerprint of
the config as validated. A reader of results (`make check-default`, `make timings`) reads a tree only
when that record is there and its fingerprint is the config's: the files of another study, or of
another configuration of the same study, are refused with both fingerprints named.

    python -m zephyr.studies list                 # every study present, its fingerprint, complete or not
    python -m zephyr.studies dir [CONFIG]         # a config's output folder
    python -m zephyr.studies clean [CONFIG...]    # remove a study's outputs (shared files stay)
    python -m zephyr.studies draw N [CONFIG]      # write the config of draw N (every seed moved), print its path
    python -m zephyr.studies draws [N] [CONFIG]   # write draws 2..N of a study (training seeds moved), print the
                                                  # config files in run order, draw 1 first

A replicate (`draw`, `make run SEEDS=N`) moves every seed: another study altogether. A study's draws (`draws`,
`make run DRAWS=N`) move only what makes a training run random, so that they are compared item by item on the
same evaluation sets: draw k >= 2 takes the base models' (M0) outputs from draw 1's tree (rules/draws.smk).
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import sys
from pathlib import Path

import yaml

from . import files, lock, paths

#: How far draw N moves every seed of a config (a draw of a study: its training seeds): N-1 times this.
DRAW_STEP = 1000
#: The key `draws` writes into the config of draw k >= 2: its number, draw 1's config file and outputs.
DRAW = "draw"


class StudyError(RuntimeError):
    """A study's tree that does not belong to the config being read."""


def load(config_file: str | Path) -> tuple[dict, paths.Layout]:
    """A config file read and validated as the workflow reads it, and its study's layout."""
    from .config import load as load_config

    config = load_config(config_file)
    return config, paths.Layout(config, lock.lock_path(config_file))


def check_current(config: dict, layout: paths.Layout) -> dict:
    """The study's record, once it is proven this config's (same fingerprint) and complete; else a
    StudyError that says what the tree holds and how to make it current."""
    where = Path(layout.study_file())
    if not where.is_file():
        raise StudyError(f"{where} is missing: study {config['experiment']!r} has not finished under "
                         f"{layout.results}/ (run it to the end: make run, or snakemake --configfile ...)")
    found = files.read_json(where)
    expected = paths.fingerprint(config)
    if found.get("config_fingerprint") != expected:
        raise StudyError(f"{layout.results}/ holds study {found.get('experiment')!r} run with config fingerprint "
                         f"{found.get('config_fingerprint')} ({', '.join(found.get('config_files', []))}); this "
                         f"config's is {expected}: rerun the workflow with this config before reading its results")
    missing = [p for p in found.get("final_outputs", []) if not Path(p).exists()]
    if missing:
        raise StudyError(f"study {config['experiment']!r} is incomplete: {', '.join(missing)} missing")
    return found


def find(root: str | Path = paths.PLAIN) -> list[dict]:
    """Every study present under `root`: the recorded ones, and trees with outputs but no record yet."""
    root = Path(root)
    found = []
    for record_file in sorted(root.glob(f"**/{paths.STUDY_FILE}")):
        data = files.read_json(record_file)
        missing = [p for p in data.get("final_outputs", []) if not Path(p).exists()]
        found.append({**data, "complete": not missing, "folder": str(record_file.parent)})
    recorded = {Path(s["folder"]) for s in found}
    for mixtures in sorted(root.glob("**/mixtures")):
        folder = mixtures.parent
        if folder not in recorded and not any(r in folder.parents for r in recorded if r != root):
            found.append({"experiment": "?", "folder": str(folder), "config_fingerprint": "?", "complete": False,
                          "config_files": []})
    return found


def by_name(study: str) -> tuple[str, paths.Layout]:
    """A study present under results/ by its name or folder (`find`), and its layout."""
    found = [s for s in find() if study in (s["experiment"], s["folder"], Path(s["folder"]).name)]
    if len(found) != 1:
        names = ", ".join(f"{s['experiment']} ({s['folder']})" for s in find()) or "none"
        raise StudyError(f"no single study named {study!r} under {paths.PLAIN}/ (present: {names})")
    return found[0]["experiment"], paths.Layout({"experiment": found[0]["experiment"], "outputs": found[0]["folder"]})


def owned(layout: paths.Layout) -> list[Path]:
    """What removing the study removes: its own tree (the plain layout: its folders, not other studies')."""
    if layout.results != paths.PLAIN:
        return [Path(layout.results)]
    results = Path(layout.results)
    mine = [results / name for name in paths.PLAIN_FOLDERS]
    mine += [p for p in results.glob("*") if p.is_file()]
    return [*mine, Path(layout.logs), Path(layout.benchmarks)]


def remove(layout: paths.Layout) -> None:
    """Remove what the study owns (`owned`), checkpoints included; shared files stay."""
    for path in owned(layout):
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def draw(config_file: str | Path, n: int) -> Path:
    """Write draw `n` of a config: every `seed` moved by (n-1) x DRAW_STEP, named `{experiment}-seeds{n}`,
    with its outputs in their own tree; returns the written config's path."""
    if n < 1:
        raise StudyError(f"draw {n}: draws count from 1 (1 is the config as written)")
    from .config import load as load_config

    data = yaml.safe_load(Path(config_file).read_text(encoding="utf-8"))
    # every seed the workflow reads, its schema defaults included (a variant's seed 0 when unwritten)
    _move(data, _seeds(load_config(config_file)), (n - 1) * DRAW_STEP)
    data["experiment"] = f"{data['experiment']}-seeds{n}"
    data.pop("outputs", None)
    out = Path(paths.outputs_dir(data)) / "config.yaml"
    _write(out, f"# Draw {n} of {config_file}, written by `python -m zephyr.studies draw {n} {config_file}`:\n"
                f"# every seed moved by {(n - 1) * DRAW_STEP}; edit {config_file}, not this file.\n", data)
    return out


def _write(out: Path, header: str, data: dict) -> None:
    """A written config, rewritten only when its text changed: an unchanged one gives no newer mtime to rerun on."""
    text = header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120)
    if not out.is_file() or out.read_text(encoding="utf-8") != text:
        with files.atomic(out) as handle:
            handle.write(text)


def _move(data: dict, seeds: list[tuple[tuple, int]], by: int) -> None:
    """Set each seed of `seeds` ((path, value) as `_seeds` gives them) to its value + `by` in a config tree."""
    for where, seed in seeds:
        node = data
        for key in where[:-1]:
            node = node[key]
        node[where[-1]] = seed + by


def _seeds(node, where: tuple = ()) -> list[tuple[tuple, int]]:
    """(path, value) of every `seed` key of a config tree."""
    if isinstance(node, dict):
        found = [(where + ("seed",), node["seed"])] if isinstance(node.get("seed"), int) else []
        return found + [s for k, v in node.items() if k != "seed" for s in _seeds(v, where + (k,))]
    if isinstance(node, list):
        return [s for i, v in enumerate(node) for s in _seeds(v, where + (i,))]
    return []


def evaluation_sets(config: dict) -> set[str]:
    """The mixtures every draw of a study keeps as they are: each evaluation set (`evaluation.TASK.data`) and
    every mixture one excludes (its draw reads theirs)."""
    kept = {spec["data"] for spec in config["evaluation"].values() if isinstance(spec, dict) and "data" in spec}
    todo = list(kept)
    while todo:
        for other in config["mixtures"][todo.pop()]["exclude"]:
            if other not in kept:
                kept.add(other)
                todo.append(other)
    return kept


def training_seeds(config: dict) -> list[tuple[tuple, int]]:
    """(path, value) of every seed of a validated config that makes a training run random, what a draw moves: the
    seed of each mixture that is not an evaluation set (`evaluation_sets`), each variant's `seed` (0 unless
    written) and each `data_seed`. Not the raw data's, nor a scratch model's: they are the study's, not a run's."""
    kept = evaluation_sets(config)
    return [*((("mixtures", m, "seed"), spec["seed"]) for m, spec in config["mixtures"].items() if m not in kept),
            *((("variants", v, "seed"), spec["seed"]) for v, spec in config["variants"].items()),
            *((("hyperparameters", h, "data_seed"), spec["data_seed"])
              for h, spec in config["hyperparameters"].items() if "data_seed" in spec)]


def draws(config_file: str | Path, n: int | None = None) -> list[Path]:
    """Write the configs of a study's draws 2..N (N: `n`, else the config's `draws`) and return every draw's
    config file in the order to run them, draw 1 first.

    Draw k is the config with its `training_seeds` moved by (k-1) x DRAW_STEP, named `{experiment}-draw{k}`,
    in its own tree, its `draw` key naming draw 1. Draw 1 is the config itself; where `n` is not its `draws`, a
    copy with `draws: n` in its outputs folder (the same study and tree). A written config with hub sources
    gets a link as its lock file, to the config's own: the same pinned commits, the same shared folders."""
    from .config import load as load_config

    config = load_config(config_file, quiet=True)  # the runs print its warnings
    if DRAW in config:
        raise StudyError(f"{config_file} is draw {config[DRAW]['number']} of {config[DRAW]['of']}: write the "
                         f"draws of {config[DRAW]['of']}")
    n = config["draws"] if n is None else n
    if n < 1:
        raise StudyError(f"{n} draws: a study has 1 draw or more (1 is the config as written)")
    data = yaml.safe_load(Path(config_file).read_text(encoding="utf-8"))
    command = f"written by `python -m zephyr.studies draws {n} {config_file}`"
    first = Path(config_file)
    if n != config["draws"]:
        first = Path(paths.outputs_dir(config)) / f"draws{n}.yaml"
        items = [(k, v) for k, v in data.items() if k != "draws"]
        at = 1 + max(i for i, (k, _) in enumerate(items) if k in ("experiment", "outputs"))
        _write(first, f"# Draw 1 of {n} of {config_file}, {command}:\n"
                      f"# the config with draws: {n}; edit {config_file}, not this file.\n",
               dict([*items[:at], ("draws", n), *items[at:]]))
        _link_lock(first, config_file, config)
    written = [first]
    for k in range(2, n + 1):
        out = _draw_file(config, k)
        _write(out, f"# Draw {k} of {config_file}, {command}:\n# its training seeds moved by "
                    f"{(k - 1) * DRAW_STEP}; edit {config_file}, not this file.\n",
               _drawn(data, config, k, os.path.relpath(first)))
        _link_lock(out, config_file, config)
        written.append(out)
    return written


def _draw_file(config: dict, k: int) -> Path:
    """Where draw k of a study (a validated config, draw 1) has its config: its tree's `config.yaml`."""
    return Path(paths.outputs_dir({"experiment": f"{config['experiment']}-draw{k}"})) / "config.yaml"


def _drawn(data: dict, config: dict, k: int, first: str) -> dict:
    """Draw k of a config (`data`, as written or validated; `config`, validated): its training seeds moved, its own
    name and tree, draw 1's `draws` left out, and the `draw` key naming draw 1's config file and outputs."""
    data = copy.deepcopy(data)
    _move(data, training_seeds(config), (k - 1) * DRAW_STEP)
    rest = {key: value for key, value in data.items() if key not in ("experiment", "outputs", "draws")}
    return {"experiment": f"{config['experiment']}-draw{k}",
            DRAW: {"number": k, "of": first, "base": paths.outputs_dir(config)}, **rest}


def _link_lock(config_file: Path, original: str | Path, config: dict) -> None:
    """The lock of a written config with hub sources: a link to the lock of the config it is written from, so its
    sources resolve to the same commits and shared folders (`paths.Layout` resolves the link)."""
    if not any(spec["source"]["kind"] == "hub" for kind in ("datasets", "models") for spec in config[kind].values()):
        return
    link = lock.lock_path(config_file)
    target = os.path.relpath(lock.lock_path(original).resolve(), link.parent.resolve())
    if link.is_symlink() and os.readlink(link) == target:
        return
    if link.exists() and not link.is_symlink():
        raise StudyError(f"{link} is a file, where the link to {lock.lock_path(original)} belongs: merge its "
                         f"entries into that lock file and remove it")
    staged = link.with_name(f".{link.name}.link")
    staged.unlink(missing_ok=True)
    staged.symlink_to(target)
    os.replace(staged, link)


def other_draws(config: dict) -> list[Path]:
    """The config files of draws 2..N of a study (draw 1's validated config), where `draws` writes them; none
    for a draw k >= 2 (draw 1 compares the draws). Paths only: nothing is read or written."""
    return [] if DRAW in config else [_draw_file(config, k) for k in range(2, config["draws"] + 1)]


def other_draw_configs(config: dict, config_file: str | Path) -> list[dict]:
    """The validated configs of draws 2..N (`other_draws`) for the rules of draw 1 (`config`, from `config_file`):
    each proven to be draw 1 with its training seeds moved (`check_draw`); one missing or stale is a ConfigError
    that says how to write it."""
    from .config import ConfigError
    from .config import load as load_config

    found = []
    for k, draw_file in enumerate(other_draws(config), 2):
        if not draw_file.is_file():
            raise ConfigError(f"{draw_file} is missing: study {config['experiment']!r} has {config['draws']} draws; "
                              f"write them first: python -m zephyr.studies draws {config['draws']} CONFIG "
                              f"(make run DRAWS={config['draws']} does)")
        drawn = load_config(draw_file, quiet=True)
        check_draw(drawn, draw_file, config, config_file, k)
        found.append(drawn)
    return found


def check_draw(config: dict, config_file: str | Path, first: dict, first_file: str | Path, k: int) -> None:
    """Refuse the config of draw `k` (`config`) unless it is draw 1's (`first`) with only its training seeds moved:
    an edited draw, or one written from an older draw 1, is no draw of the study, and the base models' outputs it
    takes from draw 1 would not be its own. The ConfigError names both files and the keys that differ."""
    from .config import ConfigError, validate

    expected = validate(_drawn(first, first, k, config.get(DRAW, {}).get("of", str(first_file))))
    differ = _differences(expected, config)
    if differ:
        raise ConfigError(f"{config_file} is not draw {k} of {first_file}: {', '.join(differ[:6])}"
                          f"{' ...' if len(differ) > 6 else ''} differ{'s' if len(differ) == 1 else ''} (a draw "
                          f"moves the training seeds only, and takes the base models' outputs from draw 1); write "
                          f"the draws again from draw 1's config (python -m zephyr.studies draws N CONFIG; make run "
                          f"DRAWS=N does) and edit that config, not a draw's")


def _differences(a, b, where: tuple = ()) -> list[str]:
    """The dotted keys at which two config trees differ."""
    from .keys import dotted

    if isinstance(a, dict) and isinstance(b, dict):
        return [d for key in [*a, *(k for k in b if k not in a)]
                for d in _differences(a.get(key, _ABSENT), b.get(key, _ABSENT), (*where, key))]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, (*where, i))]
    return [] if a == b else [dotted(where)]


_ABSENT = object()


def draw_base(config: dict, config_file: str | Path, layout: paths.Layout) -> paths.Layout | None:
    """Draw 1's layout, for draw k >= 2 (its `draw` key; None for draw 1): the tree whose base models' (M0)
    outputs this draw takes instead of computing them. Only once this config is proven draw 1's with its training
    seeds moved (`check_draw`), reading the same shared files (`base_inputs`: hub locks included); else a
    ConfigError naming both files."""
    if DRAW not in config:
        return None
    from .config import ConfigError
    from .config import load as load_config

    of = config[DRAW]["of"]
    if not Path(of).is_file():
        raise ConfigError(f"{config_file} is draw {config[DRAW]['number']} of {of}, which is missing: write the "
                          f"draws again (python -m zephyr.studies draws N CONFIG; make run DRAWS=N does)")
    first = load_config(of, quiet=True)
    check_draw(config, config_file, first, of, config[DRAW]["number"])
    base = paths.Layout(first, lock.lock_path(of))
    if paths.fingerprint(base_inputs(config, layout)) != paths.fingerprint(base_inputs(first, base)):
        raise ConfigError(f"{config_file} reads other shared files than its draw 1, {of} (its lock file "
                          f"{layout.lock_file}, draw 1's {base.lock_file}): write the draws again (python -m "
                          f"zephyr.studies draws N CONFIG links each draw's lock file to draw 1's)")
    return base


def base_inputs(config: dict, layout: paths.Layout) -> dict:
    """Everything the base models' (M0) evaluations, pair scores and exports read: the base models and the
    records of the evaluation sets (their shared paths, by fingerprint), the evaluation sets' specs, `evaluation`,
    `precision` and `exports`. Draw k takes those outputs from draw 1 only while this is the same."""
    kept = sorted(evaluation_sets(config))
    mixtures = config["mixtures"]
    return {"models": [layout.base_model(m, None) for m in config["models"]],
            "records": sorted({layout.records(c["dataset"]) for m in kept for c in mixtures[m]["components"]}),
            "evaluation_sets": {m: mixtures[m] for m in kept}, "evaluation": config["evaluation"],
            "precision": config["precision"], "exports": config["exports"]}


def main(argv: list[str] | None = None) -> int:
    from .config import ConfigError

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every study present")
    sub.add_parser("dir").add_argument("config", nargs="?", default="config.yaml")
    cleaning = sub.add_parser("clean")
    cleaning.add_argument("config", nargs="*", default=["config.yaml"], help="its config (every draw's: several)")
    cleaning.add_argument("--study", help="a study's name or folder, as `list` shows it (instead of its config)")
    drawn = sub.add_parser("draw")
    drawn.add_argument("n", type=int)
    drawn.add_argument("config", nargs="?", default="config.yaml")
    drawing = sub.add_parser("draws", help="write draws 2..N of a study, print the config files in run order")
    drawing.add_argument("n", nargs="?", help="how many draws (default: the config's `draws`)")
    drawing.add_argument("config", nargs="?", default="config.yaml")
    args = parser.parse_args(argv)
    if args.command == "draws" and args.n is not None and not args.n.isdigit():  # `draws CONFIG`
        if args.config != "config.yaml":
            parser.error(f"draws: N must be a whole number, not {args.n!r}")
        args.n, args.config = None, args.n
    try:
        if args.command == "list":
            studies = find()
            if not studies:
                print("no study under results/ yet (make run)")
            for s in studies:
                state = "complete" if s["complete"] else "incomplete"
                print(f"{s['folder']:<40} {s['experiment']:<28} config {s['config_fingerprint']}  {state}"
                      f"  ({', '.join(s['config_files']) or 'no record'})")
        elif args.command == "draw":
            print(draw(args.config, args.n))
        elif args.command == "draws":
            print("\n".join(map(str, draws(args.config, None if args.n is None else int(args.n)))))
        elif args.command == "dir":
            print(load(args.config)[1].results)
        else:
            named = [by_name(args.study)] if args.study else [(c["experiment"], layout) for c, layout in
                                                              map(load, args.config)]
            for name, layout in named:
                remove(layout)
                print(f"removed study {name!r} ({layout.results}/); shared files under {paths.SHARED}/ kept")
    except (StudyError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
