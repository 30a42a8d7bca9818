"""Config files read strictly, with the line of every key, and errors placed at the file and line that
set their key.

Snakemake's own reader lets a repeated key silently replace the first, and reports syntax errors
without a file or line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..keys import dotted
from .errors import ConfigError


@dataclass
class ConfigFile:
    """One config file as read: its data, and the line of every key and list item in it."""

    path: str
    data: dict
    lines: dict[tuple, int] = field(default_factory=dict)


def read_file(path: str | Path) -> ConfigFile:
    """Read one YAML (or JSON) config file strictly: a syntax error, a key given twice in one
    mapping, an empty file or a top level that is not a mapping is a ConfigError naming the file
    and the line (and column)."""
    path = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise ConfigError(f"config file {path}: cannot read it ({err.strerror})") from None
    loader = None
    try:
        loader = yaml.SafeLoader(raw)  # reads the first bytes already: a ReaderError may come from here
        node = loader.get_single_node()
        if node is None:
            raise ConfigError(f"config file {path} is empty; it must be a mapping of keys (experiment, datasets, ...)")
        if not isinstance(node, yaml.MappingNode):
            raise ConfigError(f"config file {path}, line {node.start_mark.line + 1}: the top level must be a mapping "
                              f"of keys (experiment, datasets, ...), not a {_node_kind(node)}")
        lines: dict[tuple, int] = {}
        _check_keys(path, node, (), lines)
        data = loader.construct_document(node)
    except yaml.YAMLError as err:
        raise ConfigError(_yaml_message(path, err, raw)) from None
    finally:
        if loader is not None:
            loader.dispose()
    return ConfigFile(path, data, lines)


def _node_kind(node) -> str:
    if isinstance(node, yaml.SequenceNode):
        return "list"
    return f"plain value ({node.value!r})" if isinstance(node, yaml.ScalarNode) else type(node).__name__


def _check_keys(path: str, node, where: tuple, lines: dict) -> None:
    """Refuse a key given twice in one mapping (naming both lines); record every key's line."""
    if isinstance(node, yaml.MappingNode):
        seen: dict = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` may be overridden, by design
                _check_keys(path, value_node, where, lines)
                continue
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(f"config file {path}, line {line}: {dotted(where + (key,))}: "
                                  f"the key {key!r} is given "
                                  f"twice (lines {seen[key]} and {line}); YAML keeps only the last, so say it once")
            seen[key] = line
            lines.setdefault(where + (key,), line)
            _check_keys(path, value_node, where + (key,), lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines.setdefault(where + (index,), item.start_mark.line + 1)
            _check_keys(path, item, where + (index,), lines)


def _yaml_message(path: str, err: yaml.YAMLError, raw: bytes) -> str:
    mark = getattr(err, "problem_mark", None)
    if mark is not None:
        what = err.problem or "not valid YAML"
        if err.context:
            context_mark = err.context_mark
            started = (f" started at line {context_mark.line + 1}, column {context_mark.column + 1}"
                       if context_mark is not None and context_mark.line != mark.line else "")
            what = f"{what} ({err.context}{started})"
        return f"config file {path}, line {mark.line + 1}, column {mark.column + 1}: {what}"
    position = getattr(err, "position", None)  # a ReaderError: bytes that are not text
    if position is not None:
        line = raw.count(b"\n", 0, position) + 1
        column = position - (raw.rfind(b"\n", 0, position) + 1) + 1
        return (f"config file {path}, line {line}, column {column}: "
                f"not UTF-8 text ({err.reason} at byte {position}); save it as UTF-8")
    return f"config file {path}: not valid YAML ({err})"


def read_files(paths) -> list[ConfigFile]:
    """`read_file` on each path, in the order Snakemake merges them."""
    return [read_file(path) for path in paths]


def read_workflow_files(paths) -> list[ConfigFile]:
    """`read_files` for the Snakefile: Snakemake gives absolute paths; errors show them relative to the
    working directory where they lie under it."""
    shown = []
    for path in map(str, paths):
        relative = os.path.relpath(path)
        shown.append(relative if os.path.isabs(path) and not relative.startswith("..") else path)
    return read_files(shown)


def locate(err: ConfigError, config: dict, files: list[ConfigFile], overrides: dict | None = None) -> ConfigError:
    """The same error, prefixed with the config file and line that set its key (the last file that sets
    it, as in Snakemake's merge), or with `--config` when it was set on the command line."""
    message, key = str(err), _present(config, err.key)
    if overrides and key and _has(overrides, key):
        return ConfigError(f"config set with --config: {message}", err.key)
    for depth in range(len(key), 0, -1):
        for found in reversed(files):
            if key[:depth] in found.lines:
                return ConfigError(f"config file {found.path}, line {found.lines[key[:depth]]}: {message}", err.key)
    return ConfigError(f"config file {files[-1].path}: {message}", err.key) if files else err


def _present(tree, key: tuple) -> tuple:
    """The part of `key` that `tree` holds: a key set nowhere yet is placed at the part that is."""
    for depth, part in enumerate(key):
        if isinstance(tree, dict) and part in tree:
            tree = tree[part]
        elif isinstance(tree, list) and isinstance(part, int) and 0 <= part < len(tree):
            tree = tree[part]
        else:
            return key[:depth]
    return key


def _has(tree, key: tuple) -> bool:
    for part in key:
        if not isinstance(tree, dict) or part not in tree:
            return False
        tree = tree[part]
    return True
