"""Raw datasets: fetch one source into `resources/datasets/{dataset}/` with a provenance manifest.

Three kinds of source, one output shape (`data.parquet` + `manifest.json`):

- `hub`: `datasets.load_dataset` at the commit its revision resolves to, resolved first and recorded in
  the lock file beside the config (`zephyr.lock`), so that a rerun fetches exactly that commit;
- `local`: a user's jsonl, json, parquet or csv file (the course-internal EPFL pairs come this way);
- `generator`: seeded offline generators (`zephyr.data.generators`, built on reasoning-gym).

Nothing falls back: a source that cannot be had is an error naming the dataset and the source.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .. import files, lock
from ..environment import installed_versions
from . import generators

log = logging.getLogger(__name__)

DATA_FILE = "data.parquet"


class SourceError(RuntimeError):
    """A source that cannot be fetched or read."""


def fetch_dataset(
    dataset: str,
    source: dict,
    out_dir: str | Path,
    expected_rows: int | None = None,
    *,
    allow_row_change: bool = False,
    lock_file: str | Path | None = None,
) -> dict:
    """Fetch `source` into `out_dir` and return its manifest (also written as manifest.json).

    A hub source is fetched at the commit `lock_file` holds for it (resolved and recorded there at its
    first fetch). A row count other than the one the lock recorded, or else `expected_rows` (the
    config's), is an error unless `allow_row_change`: the same commit should give the same rows.
    """
    out_dir = Path(out_dir)
    kind = source["kind"]
    fetch = {"hub": _fetch_hub, "local": _fetch_local, "generator": _fetch_generator}.get(kind)
    if fetch is None:
        raise SourceError(f"dataset {dataset!r}: unknown source kind {kind!r}")
    try:
        pin = lock.pin(lock_file, "datasets", dataset, source) if kind == "hub" else None
    except lock.LockError as err:
        raise SourceError(f"dataset {dataset!r}: {err}") from None
    data_path = out_dir / DATA_FILE
    provenance = fetch(dataset, {**source, "revision": pin.revision} if pin else source, data_path)
    rows, columns = _shape(data_path)
    try:
        if rows == 0:
            raise SourceError(f"dataset {dataset!r}: the source is empty ({_describe(source)})")
        expected = _check_rows(dataset, rows, expected_rows, pin, allow_row_change)
    except SourceError:
        data_path.unlink()
        raise
    if pin:
        provenance["resolved_revision"] = pin.commit
        pin.record(rows=rows)
    manifest = {
        "dataset": dataset,
        "source": source,
        **provenance,
        "rows": rows,
        "expected_rows": expected,
        "columns": columns,
        **files.manifest_files(out_dir, [DATA_FILE]),
    }
    files.write_json(out_dir / files.MANIFEST_FILE, manifest)
    log.info("%s: %d rows, columns %s", dataset, rows, columns)
    return manifest


def _check_rows(dataset: str, rows: int, expected_rows: int | None, pin: lock.Pin | None, allowed: bool) -> int | None:
    """The count `rows` is held to: the lock's for this very request, else the config's."""
    locked = (pin.recorded or {}).get("rows") if pin else None
    expected = locked if locked is not None else expected_rows
    if expected is None or rows == expected:
        return expected
    where = (f"the lock file {pin.lock_file} records {locked} at commit {pin.commit}" if locked is not None
             else f"the config's rows say {expected}")
    if allowed:
        log.warning("%s: %d rows fetched, %s (allowed by allow_row_change)", dataset, rows, where)
        return expected
    raise SourceError(f"dataset {dataset!r}: {rows} rows fetched, but {where}; if the change is expected, set "
                      f"datasets.{dataset}.allow_row_change: true")


def load_rows(data_dir: str | Path) -> list[dict]:
    """The raw rows of a fetched dataset, its file checked against its manifest first."""
    data_dir = Path(data_dir)
    files.verify(data_dir, files.rebuild_command(data_dir / files.MANIFEST_FILE))
    return files.read_rows(data_dir / DATA_FILE)


def _shape(path: Path) -> tuple[int, list[str]]:
    import pyarrow.parquet as pq

    meta = pq.read_metadata(path)
    return meta.num_rows, list(meta.schema.to_arrow_schema().names)


def _describe(source: dict) -> str:
    keys = ("kind", "id", "config", "split", "revision", "path", "schema")
    return ", ".join(f"{k}={source[k]}" for k in keys if source.get(k) is not None)


def _fetch_hub(dataset: str, source: dict, data_path: Path) -> dict:
    import datasets

    kwargs = {
        "path": source["id"],
        "name": source.get("config"),
        "split": source["split"],
        "revision": source.get("revision"),
        "data_files": source.get("data_files"),
        "data_dir": source.get("data_dir"),
    }
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    log.info("%s: load_dataset(%s)", dataset, ", ".join(f"{k}={v!r}" for k, v in kwargs.items()))
    try:
        loaded = datasets.load_dataset(**kwargs)
    except Exception as err:  # the hub client raises many kinds; all mean the same to the user
        raise SourceError(f"dataset {dataset!r}: cannot load hub dataset ({_describe(source)}): {err}") from err
    data_path.parent.mkdir(parents=True, exist_ok=True)
    with files.atomic(data_path, "wb") as handle:
        loaded.to_parquet(handle)
    return {"versions": installed_versions("datasets")}


def _fetch_local(dataset: str, source: dict, data_path: Path) -> dict:
    path = Path(source["path"])
    if not path.is_file():
        raise SourceError(f"dataset {dataset!r}: local file {path} not found "
                          f"({source.get('description') or 'see config'})")
    rows = files.read_rows(path, source.get("format"))
    _write(dataset, rows, data_path, str(path), lambda index: files.row_place(path, index, source.get("format")))
    return {"original": {"path": str(path), "sha256": files.sha256(path)}}


def _fetch_generator(dataset: str, source: dict, data_path: Path) -> dict:
    rows = generators.generate(source["schema"], source["size"], source["seed"], **source.get("options", {}))
    _write(dataset, rows, data_path, f"generator {source['schema']}")
    return {"versions": {"reasoning-gym": generators.package_version()}}


def _write(dataset: str, rows: list[dict], data_path: Path, origin: str, place=None) -> None:
    import pyarrow as pa

    if not rows:
        raise SourceError(f"dataset {dataset!r}: {origin} holds no rows")
    try:
        files.write_parquet(data_path, rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as err:
        raise SourceError(f"dataset {dataset!r}: {origin}: {_conflict(rows, place)}: {err}") from err


def _conflict(rows: list[dict], place=None) -> str:
    """Which column of which row keeps the rows from sharing one schema, in the file's own terms."""
    place = place or (lambda index: f"row {index + 1}")
    found = files.type_conflict(rows)
    if found is None:
        return "rows do not share one schema"
    column, earlier, bad = found
    value = rows[bad][column]
    if earlier is None:
        return f"column {column!r} at {place(bad)} holds {_kind(value)} that cannot be stored"
    return (f"column {column!r} holds {_kind(rows[earlier][column])} at {place(earlier)} but {_kind(value)} at "
            f"{place(bad)}; a column must hold one kind of value in every row")


def _kind(value) -> str:
    kinds = {bool: "true/false", int: "a number", float: "a number", str: "text", list: "a list", dict: "an object"}
    return next((name for cls, name in kinds.items() if isinstance(value, cls)), type(value).__name__)
