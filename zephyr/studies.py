"""Studies side by side: which config a study's tree belongs to, and the tools that list, clean and draw them.

A study is a config (`zephyr.paths.Layout`: its own output tree). When every final output is written,
the workflow records the study in `{outputs}/study.json`: its name, config files and the fingerprint of
the config as validated. A reader of results (`make check-default`, `make timings`) reads a tree only
when that record is there and its fingerprint is the config's: the files of another study, or of
another configuration of the same study, are refused with both fingerprints named.

    python -m zephyr.studies list                 # every study present, its fingerprint, complete or not
    python -m zephyr.studies dir [CONFIG]         # a config's output folder
    python -m zephyr.studies clean [CONFIG]       # remove one study's outputs (shared files stay)
    python -m zephyr.studies draw N [CONFIG]      # write the config of draw N (every seed moved), print its path
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import yaml

from . import files, lock, paths

#: How far draw N moves every seed of a config: N-1 times this.
DRAW_STEP = 1000


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
    for where, seed in _seeds(load_config(config_file)):
        node = data
        for key in where[:-1]:
            node = node[key]
        node[where[-1]] = seed + (n - 1) * DRAW_STEP
    data["experiment"] = f"{data['experiment']}-seeds{n}"
    data.pop("outputs", None)
    out = Path(paths.outputs_dir(data)) / "config.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# Draw {n} of {config_file}, written by `python -m zephyr.studies draw {n} {config_file}`:\n"
              f"# every seed moved by {(n - 1) * DRAW_STEP}; edit {config_file}, not this file.\n")
    text = header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120)
    if not out.is_file() or out.read_text(encoding="utf-8") != text:  # unchanged: no newer mtime to rerun on
        with files.atomic(out) as handle:
            handle.write(text)
    return out


def _seeds(node, where: tuple = ()) -> list[tuple[tuple, int]]:
    """(path, value) of every `seed` key of a config tree."""
    if isinstance(node, dict):
        found = [(where + ("seed",), node["seed"])] if isinstance(node.get("seed"), int) else []
        return found + [s for k, v in node.items() if k != "seed" for s in _seeds(v, where + (k,))]
    if isinstance(node, list):
        return [s for i, v in enumerate(node) for s in _seeds(v, where + (i,))]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every study present")
    sub.add_parser("dir").add_argument("config", nargs="?", default="config.yaml")
    cleaning = sub.add_parser("clean")
    cleaning.add_argument("config", nargs="?", default="config.yaml")
    cleaning.add_argument("--study", help="a study's name or folder, as `list` shows it (instead of its config)")
    drawn = sub.add_parser("draw")
    drawn.add_argument("n", type=int)
    drawn.add_argument("config", nargs="?", default="config.yaml")
    args = parser.parse_args(argv)
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
        elif args.command == "dir":
            print(load(args.config)[1].results)
        else:
            name, layout = by_name(args.study) if args.study else (load(args.config)[0]["experiment"],
                                                                   load(args.config)[1])
            remove(layout)
            print(f"removed study {name!r} ({layout.results}/); shared files under {paths.SHARED}/ kept")
    except StudyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
