"""Experiment configuration: schema validation (with defaults) and the checks a schema cannot express.

Everything here runs when the Snakefile is parsed, so a bad config fails before any job runs, with an
error naming the key. The same `load` serves notebooks and scripts run outside Snakemake.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from . import study

SCHEMA = Path(__file__).resolve().parent.parent / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A config that cannot describe an experiment; the message names the key."""


def load(path: str | Path) -> dict:
    """Read, validate and complete (with the schema's defaults) the config at `path`."""
    with open(path, encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return validate(config)


def validate(config: dict) -> dict:
    """Validate `config` in place against the schema and the cross-references; returns it."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate as schema_validate

    try:
        schema_validate(config, str(SCHEMA), set_default=True)
    except WorkflowError as err:
        raise ConfigError(_schema_message(err)) from None
    check(config)
    return config


def _schema_message(err: Exception) -> str:
    """jsonschema's first lines say what and where (as a dotted key); drop the schema dump that follows."""
    text = str(err)
    what = re.search(r"ValidationError: (.*)", text)
    where = re.search(r"On instance((?:\[[^\]]*\])*):", text)
    if not (what and where):
        return f"invalid config: {text}"
    key = ".".join(re.findall(r"\[['\"]?([^\]'\"]*)['\"]?\]", where[1])) or "(top level)"
    key = re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", key)
    return f"invalid config: {key}: {what[1]}"


def check(config: dict) -> None:
    """Cross-reference checks: formatters, generator schemas, mixture components and exclusions."""
    from .data import formats, generators

    datasets = config["datasets"]
    for name, spec in datasets.items():
        key = f"datasets.{name}"
        if spec["format"] not in formats.FORMATTERS:
            raise ConfigError(f"{key}.format: unknown formatter {spec['format']!r}; known: {', '.join(sorted(formats.FORMATTERS))}")
        source = spec["source"]
        if source["kind"] == "generator" and source["schema"] not in generators.SCHEMAS:
            raise ConfigError(f"{key}.source.schema: unknown generator schema {source['schema']!r}; known: {', '.join(sorted(generators.SCHEMAS))}")

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
                raise ConfigError(f"{where}: {dataset!r} is formatted as {task!r} records, the mixture is {spec['task']!r}")
        for other in spec["exclude"]:
            if other not in mixtures:
                raise ConfigError(f"{key}.exclude: {other!r} is not a key of mixtures")
        _check_acyclic(mixtures, name, [name])
    _check_variants(config)


def _check_variants(config: dict) -> None:
    """Variants name known models, parents, mixtures of the right task, and hyperparameter sets whose
    keys are fields of TRL's config (from the pinned list, without importing TRL)."""
    from .model import training

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
            training.check_hyperparameters(f"hyperparameters.{name}", hyper)
            training.split_accumulation(f"hyperparameters.{name}", hyper, config["compute"]["gpus"])
        except training.TrainingError as err:
            raise ConfigError(str(err)) from None
    for variant in config["exports"]["variants"]:
        if variant != "M0" and variant not in variants:
            raise ConfigError(f"exports.variants: {variant!r} is neither M0 nor a key of variants")
    _check_evaluation(config)


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
            available = _known_rows(config["datasets"][component["dataset"]])
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
        if variant != "M0" and (variant not in config["variants"] or row["model"] not in config["variants"][variant]["models"]):
            raise ConfigError(f"{key}.variant: {variant!r} is not built for model {row['model']!r}")


def _known_rows(dataset: dict) -> int | None:
    """Rows a source is known to hold before it is fetched: recorded, or a generator's size."""
    if dataset["rows"] is not None:
        return dataset["rows"]
    source = dataset["source"]
    return source["size"] if source["kind"] == "generator" else None


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
