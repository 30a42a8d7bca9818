"""Reading and writing the workflow's files: tabular rows in four formats, JSON(L), atomically.

Every writer goes through `atomic` (a folder through `staged_dir`), so a killed job never leaves a
half-written file that looks finished: the file appears under its name only once complete. What a
killed writer leaves (a hidden `.NAME.xxxxxxxx.part` beside it) is removed by the next write of NAME.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

ROW_FORMATS = ("jsonl", "json", "parquet", "csv")
#: The provenance file of every fetched or built folder (datasets and models alike).
MANIFEST_FILE = "manifest.json"

log = logging.getLogger(__name__)


class RowError(ValueError):
    """A malformed row in a user's file: names the file and the line or row."""


class IntegrityError(ValueError):
    """A stored file that does not match its folder's manifest: names the file, what the manifest says,
    and the command that rebuilds the folder."""


@contextlib.contextmanager
def atomic(path: str | os.PathLike, mode: str = "w"):
    """Open a temporary file beside `path`, and move it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; give it the mode open() would have
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def staged_dir(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside `out_dir`; move it onto `out_dir` only if the block succeeds.

    On failure (any exception, KeyboardInterrupt included) the temporary folder is removed and `out_dir`
    is left as it was. An existing `out_dir` is replaced whole, never merged into.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(out_dir)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".part"))
    try:
        yield tmp
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it 0700; give it the mode mkdir would have
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def link(source: str | os.PathLike, path: str | os.PathLike) -> None:
    """`path` as a hard link to `source` (a file two trees share, stored once; a copy with its times kept where
    the file system has no hard links), appearing under its name only once whole, as `atomic`'s files do. Safe:
    every writer replaces a file (`atomic`), none writes into one, so neither tree's file changes the other's."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    try:
        os.unlink(tmp)
        try:
            os.link(source, tmp)
        except OSError:  # another file system, or one without hard links
            shutil.copy2(source, tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def link_tree(source: str | os.PathLike, out_dir: str | os.PathLike) -> None:
    """`out_dir` as a folder of hard links to `source`'s files (`link`), replaced whole (`staged_dir`)."""
    source = Path(source)
    with staged_dir(out_dir) as staged:
        for file in sorted(p for p in source.rglob("*") if p.is_file()):
            link(file, staged / file.relative_to(source))


def share(pairs: Iterable[tuple[str, str]], same: Iterable[tuple[str, str]] = (), folders: bool = False) -> None:
    """Another tree's files (each pair's first) into this one (its second), as `link`s: a file's sidecar manifest
    goes with it, and `folders`: each file's whole folder (a model's). First each pair of `same` (what this tree's
    file was made from, and the other's) is proven byte-identical: what is shared was computed from the same input
    (a draw k >= 2 takes the base models' outputs from draw 1, rules/draws.smk)."""
    for mine, other in same:
        if sha256(mine) != sha256(other):
            raise IntegrityError(f"{mine} differs from {other}: the files computed from it cannot be shared; draw "
                                 f"both again")
    for source, target in pairs:
        if folders:
            source, target = Path(source).parent, Path(target).parent
            link_tree(source, target)
        else:
            if sidecar(source).is_file():
                link(sidecar(source), sidecar(target))
            link(source, target)
        log.info("%s: shared with %s", target, source)


def remove_leftovers(path: str | os.PathLike) -> list[Path]:
    """Remove what a killed `atomic` or `staged_dir` left beside `path` (its temporary `.part` file or
    folder, a replaced folder's `.old`); returns what it removed. One job writes a path at a time
    (Snakemake's rule), so whatever is left under the path's temporary names is dead."""
    path = Path(path)
    # tempfile's names: the prefix, 8 characters of its alphabet, the suffix; nothing else matches
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.(part|old)")
    removed = []
    if path.parent.is_dir():
        for leftover in path.parent.iterdir():
            if pattern.fullmatch(leftover.name):
                if leftover.is_dir() and not leftover.is_symlink():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)
                removed.append(leftover)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _replace_dir(new: Path, out_dir: Path) -> None:
    """Move `new` onto `out_dir`; an existing folder is moved aside first and removed after."""
    if out_dir.is_symlink() or out_dir.is_file():
        raise FileExistsError(f"{out_dir} exists and is not a folder; not replacing it")
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".old"))
        os.replace(out_dir, old)
    os.replace(new, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Deterministic JSON: same object, same bytes."""
    with atomic(path) as handle:
        json.dump(obj, handle, ensure_ascii=False, indent=2, sort_keys=False)
        handle.write("\n")


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> int:
    n = 0
    with atomic(path) as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_text(path: str | os.PathLike) -> str:
    """A UTF-8 text file (a leading byte-order mark is dropped); bytes that are not UTF-8 are a RowError
    naming the line and column."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise RowError(_not_utf8(path, line, column, raw[err.start])) from None


def _not_utf8(path, line: int, column: int, byte: int) -> str:
    return (f"{path}: line {line}, column {column}: not UTF-8 text (byte 0x{byte:02x}); "
            f"save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)")


def read_json(path: str | os.PathLike) -> Any:
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise RowError(f"{path}: line {err.lineno}: not valid JSON ({err.msg})") from err


def iter_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    """Rows of a JSON Lines file; blank lines are skipped, a malformed one (or one that is not UTF-8)
    fails naming its line."""
    with open(path, "rb") as handle:
        for lineno, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise RowError(_not_utf8(path, lineno, err.start + 1, raw[err.start])) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise RowError(f"{path}: line {lineno}: not valid JSON ({err.msg})") from err
            if not isinstance(row, dict):
                raise RowError(f"{path}: line {lineno}: expected a JSON object, got {type(row).__name__}")
            yield row


def read_rows(path: str | os.PathLike, fmt: str | None = None) -> list[dict]:
    """All rows of a tabular file (jsonl, json, parquet or csv; by suffix unless `fmt` says)."""
    path = Path(path)
    fmt = fmt or row_format(path)
    if fmt == "jsonl":
        return list(iter_jsonl(path))
    if fmt == "json":
        data = read_json(path)
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise RowError(f"{path}: expected a JSON list of objects (or {{'data': [...]}})")
        for index, row in enumerate(data):
            if not isinstance(row, dict):
                raise RowError(f"{path}: item {index}: expected a JSON object, got {type(row).__name__}")
        return data
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if fmt == "csv":
        import pandas as pd

        try:
            frame = pd.read_csv(io.StringIO(read_text(path)), dtype=str, keep_default_na=False)
        except pd.errors.ParserError as err:
            raise RowError(f"{path}: {err}") from err
        return frame.to_dict(orient="records")
    raise RowError(f"{path}: unknown row format {fmt!r}; expected one of {ROW_FORMATS}")


def row_format(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in ROW_FORMATS:
        raise RowError(f"{path}: cannot tell the format from the suffix; expected one of {ROW_FORMATS}")
    return suffix


def write_parquet(path: str | os.PathLike, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    # from_pylist takes its columns from the first row alone: use the union, in first-seen order
    columns = list(dict.fromkeys(key for row in rows for key in row))
    table = pa.Table.from_pylist([{key: row.get(key) for key in columns} for row in rows])
    with atomic(path, "wb") as handle:
        pq.write_table(table, handle)


def type_conflict(rows: list[dict]) -> tuple[str, int | None, int] | None:
    """Where rows cannot share one Arrow schema: the first column whose values have no common type,
    as (column, an earlier row whose value conflicts or None, the first row that cannot join), 0-based."""
    import pyarrow as pa

    def fails(values) -> bool:
        try:
            pa.array(values)
            return False
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            return True

    for column in dict.fromkeys(key for row in rows for key in row):
        values = [row.get(column) for row in rows]
        if not fails(values):
            continue
        low, high = 1, len(values)  # the shortest failing prefix: a longer one fails too
        while low < high:
            middle = (low + high) // 2
            low, high = (middle + 1, high) if not fails(values[:middle]) else (low, middle)
        bad = low - 1
        earlier = next((i for i in range(bad) if values[i] is not None and fails([values[i], values[bad]])), None)
        return column, earlier, bad
    return None


def row_place(path: str | os.PathLike, index: int, fmt: str | None = None) -> str:
    """Where the `index`-th row (0-based) of a tabular file is, in words a user finds it by: the line
    of a JSON Lines file, the item of a JSON list, the row of a CSV or Parquet file (from 1)."""
    fmt = fmt or row_format(Path(path))
    if fmt == "jsonl":
        with open(path, "rb") as handle:
            rows = (lineno for lineno, line in enumerate(handle, 1) if line.strip())
            return f"line {next(itertools.islice(rows, index, None), '?')}"
    if fmt == "json":
        return f"item {index}"
    return f"row {index + 1}"


def sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_files(directory: str | os.PathLike, names: Iterable[str]) -> dict:
    """What a manifest records of a folder's files: `files` (name → sha256) and `sizes` (name → bytes)."""
    paths = [Path(directory) / name for name in sorted(names)]
    return {"files": {p.name: sha256(p) for p in paths}, "sizes": {p.name: p.stat().st_size for p in paths}}


def rebuild_command(target: str | os.PathLike) -> str:
    """The smallest rerun that rebuilds one stored artifact: its job alone (`--force` on the file; `--forcerun
    RULE` would rerun every job of the rule in the DAG, and so everything after them). A rebuilt artifact is
    byte-identical (the jobs are deterministic), and Snakemake (7.8 and later) does not rerun a job whose
    newer input of up to 1 MB (a manifest) has the checksum it recorded: nothing downstream reruns."""
    return f"snakemake --cores 1 --force {target} (with the study's --configfile)"


def sidecar(path: str | os.PathLike) -> Path:
    """The manifest of a single stored file (records, pair scores): `NAME.manifest.json` beside `NAME.EXT`."""
    path = Path(path)
    return path.with_name(f"{path.name.rsplit('.', 1)[0]}.{MANIFEST_FILE}")


def write_sidecar(path: str | os.PathLike, about: dict | None = None) -> dict:
    """Write the manifest of one stored file beside it (`sidecar`): `about` with its sha256 and size."""
    path = Path(path)
    manifest = {**(about or {}), **manifest_files(path.parent, [path.name])}
    write_json(sidecar(path), manifest)
    return manifest


def verify_file(path: str | os.PathLike, rebuild: str | None = None) -> dict:
    """Check one stored file against its `sidecar` manifest (`verify`); {} when it has none."""
    path = Path(path)
    return verify(path.parent, rebuild or rebuild_command(path), manifest=sidecar(path))


def verify(directory: str | os.PathLike, rebuild: str, manifest: str | os.PathLike | None = None) -> dict:
    """Check the files a folder's manifest lists before they are used; returns the manifest ({} when the
    folder has none: a plain folder a user points at). `manifest`: where the manifest is when it is not the
    folder's `manifest.json` (a mixture's, a single file's `sidecar`); its names are the folder's files.

    Every listed file must be there, of the recorded size, and of the recorded sha256, however old: a
    file of the same size copied with its time kept (`cp -p` from a sibling variant) is caught as surely
    as one edited after the manifest. Hashing every read costs 0.65 s a GB (measured 2026-12-06 on the
    2-core AMD EPYC with SHA-NI, file in the page cache: sha256 0.36 s for 540 MiB, 1.5 GB/s; blake2b 0.66 s,
    xxh3_128 0.05 s, reading alone 0.03 s): 0.36 s for each load of the default's 135M model in float32,
    some 1.2 s for a 0.5B one, a small share of a job that starts torch, and no second digest to record
    beside the sha256 every manifest already holds. `rebuild` is the command that rebuilds it."""
    directory = Path(directory)
    path = Path(manifest) if manifest is not None else directory / MANIFEST_FILE
    if not path.is_file():
        return {}
    manifest = read_json(path)
    sizes = manifest.get("sizes", {})
    for name, digest in manifest.get("files", {}).items():
        file, fix = directory / name, f"; rebuild it alone: {rebuild}"
        if not file.is_file():
            raise IntegrityError(f"{file}: missing, but {path} lists it{fix}")
        size = file.stat().st_size
        if name in sizes and size != sizes[name]:
            raise IntegrityError(f"{file}: {size:,} bytes, but {path} records {sizes[name]:,} "
                                 f"(cut short or changed after it was written){fix}")
        if (actual := sha256(file)) != digest:
            raise IntegrityError(f"{file}: sha256 {actual[:16]}..., but {path} records {digest[:16]}... "
                                 f"(changed after it was written){fix}")
    return manifest


def weights_size(model_dir: str | os.PathLike) -> int:
    """Bytes of the weight files (`*.safetensors`) of a model folder."""
    return sum(p.stat().st_size for p in Path(model_dir).glob("*.safetensors") if p.is_file())
