"""Experiment configuration: strict reading, schema validation (with defaults) and the checks a schema
cannot express.

Everything here runs when the Snakefile is parsed, so a bad config fails before any job runs, with a
one-line error naming the config file, the line and the key. The same `load` serves notebooks and
scripts run outside Snakemake.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import precision, study
from .data import mixtures as zmixtures
from .model import lora

SCHEMA = Path(__file__).resolve().parent.parent / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A config that cannot describe an experiment; the message names the key (and, once located,
    the file and line)."""


# ---- reading config files --------------------------------------------------------------------


@dataclass
class ConfigFile:
    """One config file as read: its data, and the line of every key and list item in it."""

    path: str
    data: dict
    lines: dict[tuple, int] = field(default_factory=dict)


def read_file(path: str | Path) -> ConfigFile:
    """Read one YAML (or JSON) config file strictly: a syntax error, a key given twice in one
    mapping, an empty file or a top level that is not a mapping is a ConfigError naming the file
    and the line (and column).

    Snakemake's own reader lets a repeated key silently replace the first, and reports syntax
    errors without a file or line.
    """
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
                raise ConfigError(f"config file {path}, line {line}: {_dotted(where + (key,))}: "
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


def _dotted(key: tuple) -> str:
    text = ""
    for part in key:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


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
    """The same error, prefixed with the config file and line that set the key it names (the last file
    that sets it, as in Snakemake's merge), or with `--config` when it was set on the command line."""
    message = str(err)
    key = _key_of(message.removeprefix("invalid config: "), config)
    if overrides and key and _has(overrides, key):
        return ConfigError(f"config set with --config: {message}")
    unexpected = re.search(r"\('([^']*)'(?:, '[^']*')* (?:was|were) unexpected\)", message)
    if unexpected:  # a key the schema does not know: place the error at that key
        key = key + (unexpected[1],)
    for depth in range(len(key), 0, -1):
        for found in reversed(files):
            if key[:depth] in found.lines:
                return ConfigError(f"config file {found.path}, line {found.lines[key[:depth]]}: {message}")
    return ConfigError(f"config file {files[-1].path}: {message}") if files else err


def _key_of(message: str, config) -> tuple:
    """The key path a message starts with (`mixtures.D_S.components[2].dataset: ...`), matched against
    the config itself, so that names holding dots or spaces are read whole."""
    key: list = []
    rest, node = message, config
    while True:
        if isinstance(node, list):
            match = re.match(r"\[(\d+)\]", rest)
            if not match or int(match[1]) >= len(node):
                break
            key.append(int(match[1]))
            rest, node = rest[match.end():], node[int(match[1])]
        elif isinstance(node, dict):
            names = sorted((k for k in node if isinstance(k, str) and rest.startswith(k) and rest[len(k):len(k) + 1]
                            in (".", "[", ":")), key=len, reverse=True)
            if not names:
                break
            key.append(names[0])
            rest, node = rest[len(names[0]):], node[names[0]]
        else:
            break
        if rest.startswith("."):
            rest = rest[1:]
        elif not rest.startswith("["):
            break
    return tuple(key)  # a key only partly found (set nowhere yet) is placed at the part that is


def _has(tree, key: tuple) -> bool:
    for part in key:
        if not isinstance(tree, dict) or part not in tree:
            return False
        tree = tree[part]
    return True


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


def load(path: str | Path) -> dict:
    """Read (strictly), validate and complete (with the schema's defaults) the config at `path`; its
    warnings (`config_warnings`) go to standard error, each naming the file and line."""
    found = read_file(path)
    try:
        validate(found.data)
    except ConfigError as err:
        raise locate(err, found.data, [found]) from None
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
    _check_finite(config)
    schema = _schema()
    if any(True for _ in _validator(defaults=True)(schema).iter_errors(config)):
        raise ConfigError(_schema_message(config))
    lora.complete(config["hyperparameters"])
    check(config)
    return config


def config_warnings(config: dict) -> list[str]:
    """What a valid config asks that is allowed but likely not meant, one message per finding, each
    starting with the key it is about (as a ConfigError's does): a run whose warmup (TrainingArguments'
    warmup_steps, a fraction of the run's steps below 1) lasts as long as the run or longer, so that its
    learning rate never reaches the set's peak. The steps are `zephyr.plan`'s, where the config gives
    them (max_steps, or the planned records of the run's mixture)."""
    from . import plan

    found = []
    for spec, run in zip(config["variants"].values(), plan.runs(config)):
        steps, warmup = run["steps"], run["warmup"]
        if isinstance(steps, int) and isinstance(warmup, (int, float)) and warmup >= steps:
            hyper = spec["hyperparameters"]
            given = config["hyperparameters"][hyper]["warmup_steps"]
            written = f"{given:g} of its steps ({warmup} steps)" if given < 1 else f"{warmup:g} steps"
            found.append(f"hyperparameters.{hyper}.warmup_steps: run {run['variant']} warms up for {written} but "
                         f"trains {steps} optimizer steps in all, so its learning rate never reaches its peak; "
                         f"set warmup_steps below {steps}")
    return found


def warn(config: dict, files: list[ConfigFile], overrides: dict | None = None) -> list[str]:
    """Print each of `config_warnings` to standard error as one `WARNING:` line naming the config
    file and line that set its key (as an error does); returns the lines."""
    lines = [f"WARNING: {locate(ConfigError(found), config, files, overrides)}" for found in config_warnings(config)]
    for line in lines:
        print(line, file=sys.stderr)
    return lines


def _check_finite(tree, where: tuple = ()) -> None:
    """Every number of the config is finite: jsonschema lets YAML's .nan pass every range (each comparison
    with it is false) and .inf pass any minimum. One check over the whole tree, before the schema's."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            _check_finite(value, where + (key,))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            _check_finite(value, where + (index,))
    elif isinstance(tree, float) and not math.isfinite(tree):
        written = ".nan" if math.isnan(tree) else (".inf" if tree > 0 else "-.inf")
        raise ConfigError(f"invalid config: {_dotted(where) or '(top level)'}: {written} is not a finite number; "
                          "every number of a config must be finite")


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


def _schema_message(config: dict) -> str:
    """The first schema violation as `invalid config: KEY: what`, with the allowed range or choices
    where the failing keyword sets one (`RANGE_WORDS`) and the key's own description where it has one,
    so that a value out of range names what is allowed and why."""
    import jsonschema

    schema = _schema()
    error = jsonschema.exceptions.best_match(_validator(defaults=False)(schema).iter_errors(config))
    if error is None:
        return "invalid config: it does not match schemas/config.schema.yaml"
    path = list(error.absolute_path)
    key = _dotted(tuple(path)) or "(top level)"
    detail = error.message
    missing = re.fullmatch(r"'([^']*)' is a required property", detail)
    instance = _get(config, path)
    if missing and isinstance(instance, dict) and isinstance(instance.get("kind"), str):
        detail = f"a {instance['kind']} source needs {missing[1]!r}"
    if error.validator == "not":
        detail = f"{error.instance!r} is not allowed"
    described = error.schema.get("description") if isinstance(error.schema, dict) else None
    if error.validator in RANGE_WORDS and described:
        detail += f" (allowed: {' '.join(str(described).split())})"
    return f"invalid config: {key}: {detail}"


#: Schema keywords that bound a value: their error message gets the key's description, which states the range.
RANGE_WORDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "not", "anyOf", "oneOf", "enum", "type")


def _get(tree, path):
    for part in path:
        try:
            tree = tree[part]
        except (KeyError, IndexError, TypeError):
            return None
    return tree


def check(config: dict) -> None:
    """Cross-reference checks: formatters, generator schemas, mixture components and exclusions."""
    from .data import formats, generators

    datasets = config["datasets"]
    for name, spec in datasets.items():
        key = f"datasets.{name}"
        if spec["format"] not in formats.FORMATTERS:
            raise ConfigError(f"{key}.format: unknown formatter {spec['format']!r}; "
                              f"known: {', '.join(sorted(formats.FORMATTERS))}")
        source = spec["source"]
        if source["kind"] == "generator" and source["schema"] not in generators.SCHEMAS:
            raise ConfigError(f"{key}.source.schema: unknown generator schema {source['schema']!r}; "
                              f"known: {', '.join(sorted(generators.SCHEMAS))}")

    mixtures = config["mixtures"]
    for name, spec in mixtures.items():
        key = f"mixtures.{name}"
        seen = set()
        for i, component in enumerate(spec["components"]):
            dataset = component["dataset"]
            where = f"{key}.components[{i}].dataset"
            if dataset not in datasets:
                raise ConfigError(f"{where}: {dataset!r} is not a key of datasets")
            if dataset in seen:
                raise ConfigError(f"{where}: {dataset!r} is listed twice")
            seen.add(dataset)
            task = formats.FORMATTERS[datasets[dataset]["format"]].task
            if task != spec["task"]:
                raise ConfigError(f"{where}: {dataset!r} is formatted as {task!r} records, "
                                  f"the mixture is {spec['task']!r}")
        for other in spec["exclude"]:
            if other not in mixtures:
                raise ConfigError(f"{key}.exclude: {other!r} is not a key of mixtures")
        _check_acyclic(mixtures, name, [name])
    try:
        precision.check("precision", config["precision"])
    except precision.PrecisionError as err:
        raise ConfigError(str(err)) from None
    _check_models(config)
    _check_variants(config)


def _check_models(config: dict) -> None:
    """Each model source says what its kind needs (a hub id, a scratch model's sizes...), checked here
    rather than when its job runs; a scratch model's sizes as its fetch job checks them
    (`build.check_scratch_sizes`)."""
    from .model import build, fetch

    for name, spec in config["models"].items():
        source, key = spec["source"], f"models.{name}.source"
        try:
            fetch.check_source(name, source, key=key)
            if source["kind"] == "scratch":
                build.check_scratch_sizes(f"{key}.config", source["architecture"], source["config"])
        except build.ModelSourceError as err:
            raise ConfigError(str(err)) from None


def _check_variants(config: dict) -> None:
    """Variants name known models, parents, mixtures of the right task, and hyperparameter sets whose
    keys are fields of TRL's config (from the pinned list, without importing TRL)."""
    from .model import hyperparameters

    models, variants, hypers = config["models"], config["variants"], config["hyperparameters"]
    for name, spec in variants.items():
        key = f"variants.{name}"
        for model in spec["models"]:
            if model not in models:
                raise ConfigError(f"{key}.models: {model!r} is not a key of models")
        parent = spec["parent"]
        if parent != "M0":
            if parent not in variants:
                raise ConfigError(f"{key}.parent: {parent!r} is neither M0 nor a key of variants")
            missing = set(spec["models"]) - set(variants[parent]["models"])
            if missing:
                raise ConfigError(f"{key}.parent: {parent!r} is not trained for {sorted(missing)}")
        if spec["hyperparameters"] not in hypers:
            raise ConfigError(f"{key}.hyperparameters: {spec['hyperparameters']!r} is not a key of hyperparameters")
        trainer = hypers[spec["hyperparameters"]]["trainer"]
        data = spec["data"]
        if data not in config["mixtures"]:
            raise ConfigError(f"{key}.data: {data!r} is not a key of mixtures")
        if config["mixtures"][data]["task"] != study.TRAINERS[trainer]:
            raise ConfigError(f"{key}.data: {data!r} holds {config['mixtures'][data]['task']!r} records; "
                              f"a {trainer} run needs {study.TRAINERS[trainer]!r}")
    _check_variant_cycles(variants)
    for name, hyper in hypers.items():
        try:
            hyperparameters.check_hyperparameters(f"hyperparameters.{name}", hyper)
            hyperparameters.check_step(f"hyperparameters.{name}", hyper, config["compute"]["gpus"])
        except hyperparameters.TrainingError as err:
            raise ConfigError(str(err)) from None
    _check_validation_splits(config)
    for variant in config["exports"]["variants"]:
        if variant != "M0" and variant not in variants:
            raise ConfigError(f"exports.variants: {variant!r} is neither M0 nor a key of variants")
    _check_evaluation(config)


def _check_validation_splits(config: dict) -> None:
    """A run whose hyperparameter set evaluates during training needs a validation split: without one
    it would fail deep in its training job, or train without the validation curve the figures and the
    effects read."""
    from .model import hyperparameters

    for name, spec in config["variants"].items():
        hyper, data = spec["hyperparameters"], spec["data"]
        asks = hyperparameters.evaluation_keys(config["hyperparameters"][hyper])
        share = config["mixtures"][data]["validation"]
        if asks and not share > 0:
            keys = ", ".join(f"{key}: {json.dumps(value)}" for key, value in asks.items())
            raise ConfigError(
                f"mixtures.{data}.validation: {share} holds out no validation records, but variant {name} trains "
                f"on {data} with hyperparameters.{hyper}, which evaluates during training ({keys}): set "
                f"mixtures.{data}.validation above 0 (the study holds out 0.05), or remove {' and '.join(asks)} "
                f"from hyperparameters.{hyper} to train {name} without a validation curve")


def _check_evaluation(config: dict) -> None:
    """Evaluation sets exist, hold the right records, and are big enough; Table 1 names built models."""
    evaluation, mixtures = config["evaluation"], config["mixtures"]
    for task, spec in evaluation.items():
        if task not in study.TASKS:
            continue
        key = f"evaluation.{task}.data"
        data = spec["data"]
        if data not in mixtures:
            raise ConfigError(f"{key}: {data!r} is not a key of mixtures")
        reads = study.TASKS[task].reads
        if mixtures[data]["task"] != reads:
            raise ConfigError(f"{key}: {data!r} holds {mixtures[data]['task']!r} records, {task} needs {reads!r}")
        for i, component in enumerate(mixtures[data]["components"]):
            available = zmixtures.available_records(config["datasets"][component["dataset"]])
            if component["cap"] is not None and available is not None and component["cap"] > available:
                raise ConfigError(f"mixtures.{data}.components[{i}].cap: {task} asks for {component['cap']} items "
                                  f"but {component['dataset']} has {available}")
    needed = [t for t in study.table1_tasks() if t not in evaluation]
    for i, row in enumerate(config["table1"]):
        key = f"table1[{i}]"
        if needed:
            raise ConfigError(f"{key}: Table 1 needs evaluation settings for {', '.join(needed)}")
        if row["model"] not in config["models"]:
            raise ConfigError(f"{key}.model: {row['model']!r} is not a key of models")
        variant = row["variant"]
        if variant != "M0" and (variant not in config["variants"]
                                or row["model"] not in config["variants"][variant]["models"]):
            raise ConfigError(f"{key}.variant: {variant!r} is not built for model {row['model']!r}")


def _check_variant_cycles(variants: dict) -> None:
    for name in variants:
        seen = [name]
        while (parent := variants[seen[-1]]["parent"]) != "M0":
            if parent in seen:
                raise ConfigError(f"variants.{name}.parent: parents form a cycle: {' -> '.join(seen + [parent])}")
            seen.append(parent)


def _check_acyclic(mixtures: dict, name: str, path: list[str]) -> None:
    for other in mixtures[name]["exclude"]:
        if other in path:
            raise ConfigError(f"mixtures.{path[0]}.exclude: exclusions form a cycle: {' -> '.join(path + [other])}")
        _check_acyclic(mixtures, other, path + [other])


def main(argv: list[str] | None = None) -> int:
    """`python -m zephyr.config [FILE...]`: check config files as the workflow reads them (each read
    strictly, merged in order, validated), naming the file, line and key of an error. Snakemake
    itself reports a YAML syntax error or an empty file given with --configfile before the workflow
    is read, without the file or line: this names them."""
    import copy

    from snakemake.utils import update_config

    paths = list(argv if argv is not None else sys.argv[1:]) or ["config.yaml"]
    try:
        found = read_files(paths)
        config: dict = {}
        for one in found:
            update_config(config, copy.deepcopy(one.data))
        validate_workflow(config, found)
    except ConfigError as err:
        print(f"Config error: {err}", file=sys.stderr)
        return 1
    print(f"{' + '.join(paths)}: valid ({len(config['datasets'])} datasets, {len(config['mixtures'])} mixtures, "
          f"{len(config['models'])} models, {len(config['variants'])} variants)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
