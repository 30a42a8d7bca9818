"""The config's JSON schema: its validator, its defaults, and its first violation as one message that
names the key, what is allowed there and why."""

from __future__ import annotations

import copy
import functools
import math
import re
from pathlib import Path

import yaml

from ..keys import dotted
from .errors import ConfigError

SCHEMA = Path(__file__).resolve().parent.parent.parent / "schemas" / "config.schema.yaml"
#: Schema keywords that bound a value: their error message gets the key's description, which states the range.
RANGE_WORDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "not", "anyOf", "oneOf", "enum", "type")


def validate_schema(config: dict) -> None:
    """Check `config` against the schema, filling in each missing key's default, in place."""
    check_finite(config)
    if any(True for _ in _validator(defaults=True)(_schema()).iter_errors(config)):
        raise _first_violation(config)


def check_finite(tree, where: tuple = ()) -> None:
    """Every number of the config is finite: jsonschema lets YAML's .nan pass every range (each comparison
    with it is false) and .inf pass any minimum. One check over the whole tree, before the schema's."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            check_finite(value, where + (key,))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            check_finite(value, where + (index,))
    elif isinstance(tree, float) and not math.isfinite(tree):
        written = ".nan" if math.isnan(tree) else (".inf" if tree > 0 else "-.inf")
        raise _invalid(where, f"{written} is not a finite number; every number of a config must be finite")


def _invalid(where: tuple, detail: str, key: tuple | None = None) -> ConfigError:
    """`invalid config: WHERE: detail`, about `key` (a key within the mapping at `where`), else `where`."""
    return ConfigError(f"invalid config: {dotted(where) or '(top level)'}: {detail}", where if key is None else key)


@functools.cache
def _schema() -> dict:
    return yaml.safe_load(SCHEMA.read_text())


@functools.cache
def _validator(defaults: bool):
    """The schema's validator (JSON Schema 2020-12), the one place its types are decided: an `integer` is
    an int, never a whole float (jsonschema's default takes 2.0 for `max_steps`), nor a bool. With
    `defaults`, it fills in each missing key's schema default as it goes, as Snakemake's `validate` does."""
    from jsonschema import Draft202012Validator, validators

    types = Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda checker, value: isinstance(value, int) and not isinstance(value, bool))
    strict = validators.extend(Draft202012Validator, type_checker=types)
    if not defaults:
        return strict
    properties = strict.VALIDATORS["properties"]

    def set_defaults(validator, subschemas, instance, schema):
        if isinstance(instance, dict):
            for key, subschema in subschemas.items():
                if "default" in subschema:
                    instance.setdefault(key, copy.deepcopy(subschema["default"]))
        yield from properties(validator, subschemas, instance, schema)

    return validators.extend(strict, {"properties": set_defaults})


def _first_violation(config: dict) -> ConfigError:
    """The first schema violation as `invalid config: KEY: what`, with the allowed range or choices
    where the failing keyword sets one (`RANGE_WORDS`) and the key's own description where it has one,
    so that a value out of range names what is allowed and why. A key the schema does not know is the
    error's key, so that it is placed at that key's line."""
    import jsonschema

    error = jsonschema.exceptions.best_match(_validator(defaults=False)(_schema()).iter_errors(config))
    if error is None:
        return ConfigError("invalid config: it does not match schemas/config.schema.yaml")
    path = tuple(error.absolute_path)
    detail = error.message
    if error.validator == "required" and isinstance(error.instance.get("kind"), str):
        missing = next(name for name in error.validator_value if name not in error.instance)
        detail = f"a {error.instance['kind']} source needs {missing!r}"
    if error.validator == "not":
        detail = f"{error.instance!r} is not allowed"
    described = error.schema.get("description") if isinstance(error.schema, dict) else None
    if error.validator in RANGE_WORDS and described:
        detail += f" (allowed: {' '.join(str(described).split())})"
    unknown = error.validator == "additionalProperties" and error.validator_value is False
    return _invalid(path, detail, path + (min(_unknown_keys(error.instance, error.schema), key=str),) if unknown
                    else None)


def _unknown_keys(instance: dict, schema: dict) -> list:
    """The keys of `instance` that `schema` neither names nor matches by pattern."""
    patterns = schema.get("patternProperties", {})
    return [key for key in instance
            if key not in schema.get("properties", {}) and not any(re.search(p, key) for p in patterns)]
