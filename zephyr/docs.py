"""The configuration reference, `docs/configuration.md`, generated from the config schema, so that the
page cannot say other than what the workflow checks (PyPSA-Eur generates its configuration tables the
same way).

`python -m zephyr.docs` (`make docs`) writes the page; `--check` exits 1 when the file on disk is not
what the schema gives now. Every key gets a row: its dotted path (`<name>` for a key of a mapping by
name, `[]` for the items of a list), type, range, default and description, in the schema's own order.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

from .config import SCHEMA

PAGE = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"

HEADER = """\
# Configuration reference

<!-- Generated from schemas/config.schema.yaml by `python -m zephyr.docs` (`make docs`): do not edit by hand.
tests/test_docs.py fails when this page differs from what the schema gives. -->

Every key of `config.yaml` (the default experiment) and `config/paper.yaml` (the study), as
[`schemas/config.schema.yaml`](../schemas/config.schema.yaml) defines it. `<name>` stands for a key you
choose (a dataset's, a mixture's...), `[]` for each item of a list. A key that is not listed is an error,
except where a type says that other keys pass through. `make check-config CONFIG=my.yaml` checks a file
against this schema and the cross-checks it cannot express (references between sections, sizes, ranges
of TRL fields), naming the file, line and key of a mistake.

"""

#: JSON Schema keywords shown in the range column, with how they read.
BOUNDS = (("minimum", "≥ {}"), ("exclusiveMinimum", "> {}"), ("maximum", "≤ {}"), ("exclusiveMaximum", "< {}"),
          ("minItems", "at least {} item(s)"), ("minProperties", "at least {} key(s)"), ("pattern", "matches `{}`"))


def reference(schema: dict | None = None) -> str:
    """The page, from `schema` (the config schema when None)."""
    schema = schema if schema is not None else yaml.safe_load(SCHEMA.read_text())
    resolve = _resolver(schema)
    root = resolve(schema)
    parts = [HEADER.rstrip("\n") + "\n"]
    if root.get("description"):
        parts.append(_text(root["description"]) + "\n")
    required = set(root.get("required", ()))
    for key, sub in root.get("properties", {}).items():
        sub = resolve(sub)
        parts.append(f"## {key}\n")
        rows = list(_rows(key, sub, resolve, key in required))
        parts.append("| key | type | range | default | description |\n|---|---|---|---|---|\n"
                     + "".join(f"| {' | '.join(_cell(c) for c in row)} |\n" for row in rows))
    return "\n".join(parts)


def _resolver(schema: dict):
    """A function that inlines a subschema's local `$ref` (`#/$defs/...` or `#/definitions/...`); keys
    beside the `$ref` win over the referenced schema's, as a description beside it does."""

    def resolve(sub: dict) -> dict:
        while "$ref" in sub:
            target: object = schema
            for part in sub["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            sub = {**target, **{k: v for k, v in sub.items() if k != "$ref"}}
        return sub

    return resolve


def _rows(path: str, sub: dict, resolve, required: bool, when: str = ""):
    """(key, type, range, default, description) of `path` and of every key below it."""
    description = _text(sub.get("description", ""))
    if when:
        description = f"When {when}: {description}" if description else f"When {when}."
    yield (f"`{path}`", _type(sub, resolve) + (" (required)" if required else ""), _range(sub, resolve),
           f"`{_value(sub['default'])}`" if "default" in sub else "", description)
    needed = set(sub.get("required", ()))
    for key, child in sub.get("properties", {}).items():
        yield from _rows(f"{path}.{key}", resolve(child), resolve, key in needed, when)
    for branch in sub.get("allOf", ()):  # a source chosen by its `kind`: each kind's keys, named by it
        if "if" in branch and "then" in branch:
            then = resolve(branch["then"])
            condition = ", ".join(f"`{key}: {_value(spec['const'])}`"
                                  for key, spec in branch["if"].get("properties", {}).items() if "const" in spec)
            needed = set(then.get("required", ()))
            for key, child in then.get("properties", {}).items():
                if key not in sub.get("properties", {}):
                    yield from _rows(f"{path}.{key}", resolve(child), resolve, key in needed, condition)
    if isinstance(sub.get("additionalProperties"), dict):  # a mapping by name
        yield from _rows(f"{path}.<name>", resolve(sub["additionalProperties"]), resolve, False, when)
    items = resolve(sub["items"]) if isinstance(sub.get("items"), dict) else None
    if items is not None and ("properties" in items or "additionalProperties" in items):
        yield from _rows(f"{path}[]", items, resolve, False, when)


def _type(sub: dict, resolve) -> str:
    if "const" in sub:
        return f"`{_value(sub['const'])}`"
    if "oneOf" in sub:
        return " or ".join(_type(resolve(choice), resolve) for choice in sub["oneOf"])
    kinds = sub.get("type")
    kinds = [kinds] if isinstance(kinds, str) else list(kinds or [])
    if not kinds and "enum" in sub:
        kinds = sorted({_json_type(v) for v in sub["enum"]}, key=["string", "number", "boolean", "null"].index)
    items = resolve(sub["items"]) if isinstance(sub.get("items"), dict) else None
    if "array" in kinds and items is not None and "type" in items and "properties" not in items:
        kinds[kinds.index("array")] = f"array of {items['type']}"
    if "object" in kinds and "properties" in sub and "allOf" not in sub and "additionalProperties" not in sub:
        kinds[kinds.index("object")] = "object (other keys pass through)"
    if isinstance(sub.get("additionalProperties"), dict):
        kinds = ["mapping by name" if k == "object" else k for k in kinds]
    return " or ".join(kinds) if kinds else "any"


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return "number" if isinstance(value, (int, float)) else "string"


def _range(sub: dict, resolve) -> str:
    """Enums, bounds and name patterns, as one cell."""
    out = []
    if "enum" in sub:
        out.append("one of " + ", ".join(f"`{_value(v)}`" for v in sub["enum"]))
    for choice in sub.get("oneOf", ()):
        out.append(_range(resolve(choice), resolve))
    out += [template.format(sub[key]) for key, template in BOUNDS if key in sub]
    if "const" in sub.get("not", {}):
        out.append(f"not `{_value(sub['not']['const'])}`")
    items = resolve(sub["items"]) if isinstance(sub.get("items"), dict) else None
    if items is not None and "properties" not in items and _range(items, resolve):
        out.append("each item " + _range(items, resolve))
    names = sub.get("propertyNames")
    if names:
        out.append("each name " + _range(names, resolve))
    return "; ".join(part for part in out if part)


def _value(value) -> str:
    """A value as a config file writes it: strings bare, YAML's null, true and false."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _text(text: str) -> str:
    """Schema prose on one line, with `<` outside code spans escaped (GitHub would drop `<question>` as HTML)."""
    spans = re.sub(r"\s+", " ", text).strip().split("`")
    return "`".join(span if i % 2 else span.replace("<", "&lt;") for i, span in enumerate(spans))


def _cell(text: str) -> str:
    """Table cell text: `|` would end the cell."""
    return text.replace("|", "\\|")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the page is stale, write nothing")
    parser.add_argument("--out", type=Path, default=PAGE, help=f"the page (default {PAGE})")
    args = parser.parse_args(argv)
    page = reference()
    if args.check:
        if not args.out.exists() or args.out.read_text() != page:
            print(f"{args.out} is stale: run `make docs` (python -m zephyr.docs)", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
