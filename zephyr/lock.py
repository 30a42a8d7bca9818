"""The lock file: the commit each hub source resolved to at its first fetch, so that later fetches get
exactly that commit.

It sits beside the config in use (`config/paper.lock.yaml` for `config/paper.yaml`) and is meant to be
committed with it. Only hub sources are locked: local files and generators are pinned by their content.
The revision is resolved before anything is downloaded, and the download asks for that commit, so what
is fetched is what the lock records (a branch that moves in between cannot split the two).
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import files

log = logging.getLogger(__name__)

SECTIONS = {"datasets": "dataset_info", "models": "model_info"}  # lock section -> HfApi lookup
# What a fetch asked for, as the config says it: an entry's commit serves the same id and revision; its
# row count, the same selection of files too.
REQUESTED = ("id", "config", "split", "data_dir", "data_files", "revision")
FULL_SHA = re.compile(r"[0-9a-f]{40}")
HEADER = ("# Written by the fetch jobs: the commit each hub source resolved to, fetched exactly on every rerun.\n"
          "# Commit it with the config; delete an entry to resolve its revision again at the next fetch.\n")


class LockError(RuntimeError):
    """A lock file that cannot be read, or a revision the hub cannot resolve."""


def lock_path(config_file: str | os.PathLike) -> Path:
    """The lock file of a config file: `config/paper.yaml` -> `config/paper.lock.yaml`."""
    path = Path(config_file)
    return path.with_name(f"{path.stem}.lock.yaml")


def read(lock_file: str | os.PathLike | None) -> dict:
    """The lock file's entries by section ({} when there is none yet)."""
    if lock_file is None or not Path(lock_file).is_file():
        return {}
    try:
        data = yaml.safe_load(Path(lock_file).read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise LockError(f"lock file {lock_file} is not valid YAML ({err}); fix or delete it") from None
    sections = [data.get(s) or {} for s in SECTIONS] if isinstance(data, dict) else [None]
    entries = [e for section in sections if isinstance(section, dict) for e in section.values()]
    if not all(isinstance(section, dict) for section in sections) or not all(isinstance(e, dict) for e in entries):
        raise LockError(f"lock file {lock_file}: expected mappings {' and '.join(SECTIONS)} of entries by name")
    return {**data, **{s: data[s] or {} for s in SECTIONS if s in data}}


@dataclass
class Pin:
    """The commit one hub source is fetched at, and what the lock file recorded for this same request."""

    lock_file: Path | None
    section: str
    name: str
    source: dict
    commit: str | None  # None: a local folder, or offline with nothing locked (never invented)
    recorded: dict | None

    @property
    def revision(self) -> str | None:
        """What to download: the commit when there is one, else the revision as requested."""
        return self.commit or self.source.get("revision")

    def record(self, **counts) -> None:
        """Write this source's entry (with counts such as `rows`), keeping every other entry."""
        if self.lock_file is None or self.commit is None:
            return
        entry = {**_requested(self.source), "commit": self.commit, **counts}
        _write_entry(self.lock_file, self.section, self.name, entry)


def pin(lock_file: str | os.PathLike | None, section: str, name: str, source: dict) -> Pin:
    """Pin a hub source before it is downloaded: the lock's commit when its entry has the same id and
    requested revision (no hub call, so it also works offline from a cache), else a full sha given as
    the revision, else the hub's answer now."""
    lock_file = Path(lock_file) if lock_file is not None else None
    if os.path.isdir(source["id"]):
        return Pin(lock_file, section, name, source, None, None)
    entry = read(lock_file).get(section, {}).get(name) or {}
    if entry.get("commit") and all(entry.get(k) == source.get(k) for k in ("id", "revision")):
        recorded = entry if {k: entry[k] for k in REQUESTED if k in entry} == _requested(source) else None
        return Pin(lock_file, section, name, source, entry["commit"], recorded)
    return Pin(lock_file, section, name, source, _resolve(section, source), None)


def _requested(source: dict) -> dict:
    return {k: source[k] for k in REQUESTED if source.get(k) is not None}


def _resolve(section: str, source: dict) -> str | None:
    revision = source.get("revision")
    if revision and FULL_SHA.fullmatch(revision):
        return revision
    if os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        log.warning("%s: offline and not in the lock file: fetched at %r from the cache, no commit recorded",
                    source["id"], revision)
        return None
    from huggingface_hub import HfApi

    lookup = getattr(HfApi(), SECTIONS[section])
    try:
        return lookup(source["id"], revision=revision).sha
    except Exception as err:  # the hub client raises many kinds; all mean the same here
        raise LockError(f"cannot resolve revision {revision!r} of {source['id']} on the hub: {err}") from err


def _write_entry(lock_file: str | os.PathLike, section: str, name: str, entry: dict) -> None:
    """Read, change one entry, replace the file whole, under a lock on its folder: parallel fetch jobs
    each add their own entry. (The folder, not the file: the file is replaced, a waiter would hold a
    lock on the old one.)"""
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    folder = os.open(lock_file.parent, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        data = read(lock_file)
        data[section] = dict(sorted({**data.get(section, {}), name: entry}.items()))
        data = {**{s: data[s] for s in SECTIONS if s in data}, **data}  # datasets first, for a stable file
        with files.atomic(lock_file) as handle:
            handle.write(HEADER)
            yaml.safe_dump(data, handle, sort_keys=False, allow_unicode=True)
    finally:
        os.close(folder)  # releases the lock
    log.info("%s: %s %s recorded in %s", name, entry["id"], entry["commit"], lock_file)
