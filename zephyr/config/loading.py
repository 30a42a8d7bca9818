"""A config read, validated and completed, as the Snakefile, the tools and notebooks take it: an error
names the config file, the line and the key; so does each warning, on standard error."""

from __future__ import annotations

import sys
from pathlib import Path

from ..includes import include_tasks
from ..keys import KeyedError
from ..model import lora
from .checks import check, warnings_at
from .errors import ConfigError
from .reading import ConfigFile, locate, read_file
from .schema import validate_schema


def load(path: str | Path, quiet: bool = False) -> dict:
    """Read (strictly), validate and complete (with the schema's defaults) the config at `path`; its
    warnings (`config_warnings`) go to standard error, each naming the file and line (`quiet`: not, for a
    tool that only reads it for a run that will print them)."""
    found = read_file(path)
    try:
        validate(found.data)
    except ConfigError as err:
        raise locate(err, found.data, [found]) from None
    if not quiet:
        warn(found.data, [found])
    return found.data


def validate_workflow(config: dict, files: list[ConfigFile], overrides: dict | None = None) -> dict:
    """`validate` for the Snakefile: an error names the config file and line that set the key; so does
    each warning, on standard error."""
    try:
        validate(config)
    except ConfigError as err:
        raise locate(err, config, files, overrides) from None
    warn(config, files, overrides)
    return config


def validate(config: dict) -> dict:
    """Validate `config` in place against the schema and the cross-references; returns it."""
    try:
        include_tasks(config)
    except KeyedError as err:
        raise ConfigError.below(("evaluation",), err) from None
    validate_schema(config)
    lora.complete(config["hyperparameters"])
    check(config)
    return config


def warn(config: dict, files: list[ConfigFile], overrides: dict | None = None) -> list[str]:
    """Print each of `config_warnings` to standard error as one `WARNING:` line naming the config
    file and line that set its key (as an error does); returns the lines."""
    lines = [f"WARNING: {locate(found, config, files, overrides)}" for found in warnings_at(config)]
    for line in lines:
        print(line, file=sys.stderr)
    return lines


def for_workflow(step, *args, **kwargs):
    """Run a parse-time config step for the Snakefile; on a ConfigError print its one-line message
    (file, line, key) and stop, without the Python stack Snakemake would show for an exception."""
    try:
        return step(*args, **kwargs)
    except ConfigError as err:
        try:
            from snakemake.logging import logger

            logger.error(f"Config error: {err}")
        except Exception:  # outside a Snakemake run
            print(f"Config error: {err}", file=sys.stderr)
        sys.exit(1)
