"""Every stored artifact of a study checked in full against its manifest: raw datasets, formatted records,
base models, mixtures, adapters, merged and quantized models, pair scores. One line per artifact; exit 1
when any does not match (a file missing, cut short, edited or swapped).

    python -m zephyr.verify [CONFIG]     # make verify CONFIG=...

Each job checks what it reads before it uses it (zephyr.files.verify); this reads everything at once,
after a copy, a restore or a disk's trouble. What is not built yet is listed as absent, and an artifact
written before it had a manifest as unchecked: neither is a mismatch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from . import files, studies, study
from .data import mixtures


def artifacts(config: dict, layout) -> Iterator[tuple[str, Path, Path, Callable[[], dict]]]:
    """(kind, path, its manifest, the check) of every artifact the study stores, in the order they are built."""
    from .model import modeldir

    def folder(kind: str, path: str | Path, check: Callable[[Path], dict]):
        path = Path(path)
        return kind, path, path / files.MANIFEST_FILE, lambda: check(path)

    def single(kind: str, path: str | Path):
        path = Path(path)
        return kind, path, files.sidecar(path), lambda: files.verify_file(path)

    def dataset_folder(path: Path) -> dict:
        return files.verify(path, files.rebuild_command(path / files.MANIFEST_FILE))

    for dataset in config["datasets"]:
        yield folder("dataset", Path(layout.dataset(dataset, files.MANIFEST_FILE)).parent, dataset_folder)
    for dataset in config["datasets"]:
        yield single("records", layout.records(dataset))
    for model in config["models"]:
        yield folder("base model", layout.base_model(model, None), modeldir.verify)
    for mixture in config["mixtures"]:
        manifest = Path(layout.mixture(mixture, "manifest.json"))
        yield "mixture", Path(layout.mixture(mixture)), manifest, lambda m=manifest: files.verify(
            m.parent, files.rebuild_command(m), manifest=m)
    trained = study.trained(config)
    for model, variant in trained:
        yield folder("adapter", Path(layout.adapter(model, variant, modeldir.ADAPTER_TARGET)).parent,
                     modeldir.verify_adapter)
    for model, variant in trained:
        yield folder("merged model", layout.merged_model(model, variant, None), modeldir.verify)
    for model, variant in study.exported(config):
        for format in config["exports"]["formats"]:
            yield folder("export", layout.export(model, variant, format, None), modeldir.verify)
    for model, variant in [(m, "M0") for m in config["models"]] + trained:
        if Path(layout.pair_scores(model, variant)).is_file():
            yield single("pair scores", layout.pair_scores(model, variant))


def verify_study(config: dict, layout, out=None) -> dict[str, int]:
    """Check every artifact (`artifacts`), printing one line each; returns how many had each status
    (ok, MISMATCH, unchecked, absent)."""
    counts = dict.fromkeys(("ok", "MISMATCH", "unchecked", "absent"), 0)
    for kind, path, manifest, check in artifacts(config, layout):
        if not path.exists():
            status, detail = "absent", "not built yet"
        elif not manifest.is_file():
            status, detail = "unchecked", f"no manifest ({manifest.name}): written before manifests were"
        else:
            try:
                recorded = check()
            except (files.IntegrityError, files.RowError, mixtures.MixtureError) as err:
                status, detail = "MISMATCH", str(err)
            else:
                sizes = recorded.get("sizes", {})
                status, detail = "ok", f"{len(recorded.get('files', {}))} files, {sum(sizes.values()):,} bytes"
        counts[status] += 1
        print(f"{status:<9} {kind:<12} {path}  {detail}", file=out or sys.stdout)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", nargs="?", default="config.yaml")
    args = parser.parse_args(argv)
    config, layout = studies.load(args.config)
    counts = verify_study(config, layout)
    print(f"study {config['experiment']!r}: {counts['ok']} artifact(s) match their manifest, {counts['MISMATCH']} "
          f"do not, {counts['unchecked']} have none, {counts['absent']} are not built")
    return 1 if counts["MISMATCH"] else 0


if __name__ == "__main__":
    sys.exit(main())
