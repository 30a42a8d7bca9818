"""The checks a schema cannot express: names that refer to other keys (formatters, generator schemas,
mixtures, models, variants, hyperparameter sets, Table 1's rows), what each model source and
hyperparameter set needs, sizes; and the warnings about what is allowed but likely not meant."""

from __future__ import annotations

import json

from .. import precision, study
from ..data import mixtures as zmixtures
from .errors import ConfigError


def check(config: dict) -> None:
    """Cross-reference checks: formatters, generator schemas, mixture components and exclusions."""
    from ..data import formats, generators

    datasets = config["datasets"]
    for name, spec in datasets.items():
        if spec["format"] not in formats.FORMATTERS:
            raise ConfigError.at(("datasets", name, "format"), f"unknown formatter {spec['format']!r}; "
                                 f"known: {', '.join(sorted(formats.FORMATTERS))}")
        source = spec["source"]
        if source["kind"] == "generator" and source["schema"] not in generators.SCHEMAS:
            raise ConfigError.at(("datasets", name, "source", "schema"),
                                 f"unknown generator schema {source['schema']!r}; "
                                 f"known: {', '.join(sorted(generators.SCHEMAS))}")

    mixtures = config["mixtures"]
    for name, spec in mixtures.items():
        seen = set()
        for i, component in enumerate(spec["components"]):
            dataset = component["dataset"]
            where = ("mixtures", name, "components", i, "dataset")
            if dataset not in datasets:
                raise ConfigError.at(where, f"{dataset!r} is not a key of datasets")
            if dataset in seen:
                raise ConfigError.at(where, f"{dataset!r} is listed twice")
            seen.add(dataset)
            task = formats.FORMATTERS[datasets[dataset]["format"]].task
            if task != spec["task"]:
                raise ConfigError.at(where, f"{dataset!r} is formatted as {task!r} records, "
                                     f"the mixture is {spec['task']!r}")
        for other in spec["exclude"]:
            if other not in mixtures:
                raise ConfigError.at(("mixtures", name, "exclude"), f"{other!r} is not a key of mixtures")
        _check_acyclic(mixtures, name, [name])
    try:
        precision.check("precision", config["precision"])
    except precision.PrecisionError as err:
        raise ConfigError.below(("precision",), err) from None
    _check_models(config)
    _check_variants(config)
    if "draw" in config and config["draws"] > 1:
        raise ConfigError.at(("draws",), f"this config is draw {config['draw']['number']} of "
                             f"{config['draw']['of']}: a draw runs alone, the study's draws are its draw 1's")


def _check_models(config: dict) -> None:
    """Each model source says what its kind needs (a hub id, a scratch model's sizes...), checked here
    rather than when its job runs; a scratch model's sizes as its fetch job checks them
    (`build.check_scratch_sizes`)."""
    from ..model import build, fetch

    for name, spec in config["models"].items():
        source, where = spec["source"], ("models", name, "source")
        try:
            fetch.check_source(name, source, key=f"models.{name}.source")
        except build.ModelSourceError as err:
            raise ConfigError.below(where, err) from None
        if source["kind"] == "scratch":
            try:
                build.check_scratch_sizes(f"models.{name}.source.config", source["architecture"], source["config"])
            except build.ModelSourceError as err:
                raise ConfigError.below(where + ("config",), err) from None


def _check_variants(config: dict) -> None:
    """Variants name known models, parents, mixtures of the right task, and hyperparameter sets whose
    keys are fields of TRL's config (from the pinned list, without importing TRL)."""
    from ..model import hyperparameters

    models, variants, hypers = config["models"], config["variants"], config["hyperparameters"]
    for name, spec in variants.items():
        for model in spec["models"]:
            if model not in models:
                raise ConfigError.at(("variants", name, "models"), f"{model!r} is not a key of models")
        parent = spec["parent"]
        if parent != "M0":
            if parent not in variants:
                raise ConfigError.at(("variants", name, "parent"), f"{parent!r} is neither M0 nor a key of variants")
            missing = set(spec["models"]) - set(variants[parent]["models"])
            if missing:
                raise ConfigError.at(("variants", name, "parent"), f"{parent!r} is not trained for {sorted(missing)}")
        if spec["hyperparameters"] not in hypers:
            raise ConfigError.at(("variants", name, "hyperparameters"),
                                 f"{spec['hyperparameters']!r} is not a key of hyperparameters")
        trainer = hypers[spec["hyperparameters"]]["trainer"]
        data = spec["data"]
        if data not in config["mixtures"]:
            raise ConfigError.at(("variants", name, "data"), f"{data!r} is not a key of mixtures")
        if config["mixtures"][data]["task"] != study.TRAINERS[trainer]:
            raise ConfigError.at(("variants", name, "data"),
                                 f"{data!r} holds {config['mixtures'][data]['task']!r} records; "
                                 f"a {trainer} run needs {study.TRAINERS[trainer]!r}")
    _check_variant_cycles(variants)
    for name, hyper in hypers.items():
        try:
            hyperparameters.check_hyperparameters(f"hyperparameters.{name}", hyper)
            hyperparameters.check_step(f"hyperparameters.{name}", hyper, config["compute"]["gpus"])
        except hyperparameters.TrainingError as err:
            raise ConfigError.below(("hyperparameters", name), err) from None
    _check_validation_splits(config)
    for variant in config["exports"]["variants"]:
        if variant != "M0" and variant not in variants:
            raise ConfigError.at(("exports", "variants"), f"{variant!r} is neither M0 nor a key of variants")
    _check_evaluation(config)


def _check_validation_splits(config: dict) -> None:
    """A run whose hyperparameter set evaluates during training needs a validation split: without one
    it would fail deep in its training job, or train without the validation curve the figures and the
    effects read."""
    from ..model import hyperparameters

    for name, spec in config["variants"].items():
        hyper, data = spec["hyperparameters"], spec["data"]
        asks = hyperparameters.evaluation_keys(config["hyperparameters"][hyper])
        share = config["mixtures"][data]["validation"]
        if asks and not share > 0:
            keys = ", ".join(f"{key}: {json.dumps(value)}" for key, value in asks.items())
            raise ConfigError.at(
                ("mixtures", data, "validation"),
                f"{share} holds out no validation records, but variant {name} trains "
                f"on {data} with hyperparameters.{hyper}, which evaluates during training ({keys}): set "
                f"mixtures.{data}.validation above 0 (the study holds out 0.05), or remove {' and '.join(asks)} "
                f"from hyperparameters.{hyper} to train {name} without a validation curve")


def _check_evaluation(config: dict) -> None:
    """Evaluation sets exist, hold the right records, and are big enough; Table 1 names built models."""
    evaluation, mixtures = config["evaluation"], config["mixtures"]
    for task, spec in evaluation.items():
        if task in ("batch_size", "include"):
            continue
        if task not in study.TASKS:
            raise ConfigError.at(("evaluation", task), f"no evaluation task of that name (known: "
                                 f"{', '.join(study.TASKS)}); a task of another module needs that module in "
                                 "evaluation.include")
        where = ("evaluation", task, "data")
        data = spec["data"]
        if data not in mixtures:
            raise ConfigError.at(where, f"{data!r} is not a key of mixtures")
        reads = study.TASKS[task].reads
        if mixtures[data]["task"] != reads:
            raise ConfigError.at(where, f"{data!r} holds {mixtures[data]['task']!r} records, {task} needs {reads!r}")
        for i, component in enumerate(mixtures[data]["components"]):
            available = zmixtures.available_records(config["datasets"][component["dataset"]])
            if component["cap"] is not None and available is not None and component["cap"] > available:
                raise ConfigError.at(("mixtures", data, "components", i, "cap"),
                                     f"{task} asks for {component['cap']} items "
                                     f"but {component['dataset']} has {available}")
    needed = [t for t in study.table1_tasks() if t not in evaluation]
    for i, row in enumerate(config["table1"]):
        if needed:
            raise ConfigError.at(("table1", i), f"Table 1 needs evaluation settings for {', '.join(needed)}")
        for name, value in row.items():
            if isinstance(value, bool) and not (name in study.TASKS and study.TASKS[name].only_marked_rows):
                raise ConfigError.at(("table1", i, name), "not a task shown only in the rows that ask for it")
        if row["model"] not in config["models"]:
            raise ConfigError.at(("table1", i, "model"), f"{row['model']!r} is not a key of models")
        variant = row["variant"]
        if variant != "M0" and (variant not in config["variants"]
                                or row["model"] not in config["variants"][variant]["models"]):
            raise ConfigError.at(("table1", i, "variant"), f"{variant!r} is not built for model {row['model']!r}")


def _check_variant_cycles(variants: dict) -> None:
    for name in variants:
        seen = [name]
        while (parent := variants[seen[-1]]["parent"]) != "M0":
            if parent in seen:
                raise ConfigError.at(("variants", name, "parent"),
                                     f"parents form a cycle: {' -> '.join(seen + [parent])}")
            seen.append(parent)


def _check_acyclic(mixtures: dict, name: str, path: list[str]) -> None:
    for other in mixtures[name]["exclude"]:
        if other in path:
            raise ConfigError.at(("mixtures", path[0], "exclude"),
                                 f"exclusions form a cycle: {' -> '.join(path + [other])}")
        _check_acyclic(mixtures, other, path + [other])


# ---- warnings ----------------------------------------------------------------------------------------


def warnings_at(config: dict) -> list[ConfigError]:
    """What a valid config asks that is allowed but likely not meant, one finding each, with its key: a
    run whose warmup (TrainingArguments' warmup_steps, a fraction of the run's steps below 1) lasts as long
    as the run or longer, so that its learning rate never reaches the set's peak. The steps are
    `zephyr.plan`'s, where the config gives them (max_steps, or the planned records of the run's mixture)."""
    from .. import plan

    found = []
    for spec, run in zip(config["variants"].values(), plan.runs(config)):
        steps, warmup = run["steps"], run["warmup"]
        if isinstance(steps, int) and isinstance(warmup, (int, float)) and warmup >= steps:
            hyper = spec["hyperparameters"]
            given = config["hyperparameters"][hyper]["warmup_steps"]
            written = f"{given:g} of its steps ({warmup} steps)" if given < 1 else f"{warmup:g} steps"
            found.append(ConfigError.at(
                ("hyperparameters", hyper, "warmup_steps"),
                f"run {run['variant']} warms up for {written} but trains {steps} optimizer steps in all, so its "
                f"learning rate never reaches its peak; set warmup_steps below {steps}"))
    return found


def config_warnings(config: dict) -> list[str]:
    """`warnings_at`'s messages, each starting with the key it is about (as a ConfigError's does)."""
    return [str(found) for found in warnings_at(config)]
