# Helpers only: config validation, path functions and wildcard constraints shared by the rule files.

import os
import re
import sys

# Scripts import the `zephyr` package from this checkout, in every execution mode
# (local, SLURM jobs re-parse this file, conda and Apptainer inherit the environment).
sys.path.insert(0, workflow.basedir)
# (Set, not required: so no `envvars:` assertion.)
os.environ.update(
    PYTHONPATH=os.pathsep.join(
        p for p in (workflow.basedir, os.getenv("PYTHONPATH")) if p
    )
)

# Every job hashes strings the same way, run after run: the order of a set written out (PEFT's LoRA
# target_modules in adapter_config.json) would otherwise change an output's bytes between two runs.
os.environ.setdefault("PYTHONHASHSEED", "0")

from zephyr import config as zconfig
from zephyr import lock as zlock
from zephyr import paths as zpaths
from zephyr import precision as zprecision
from zephyr import resources as zresources
from zephyr import studies as zstudies
from zephyr import study
from zephyr.data import mixtures as zmixtures

# Errors name the config file and line that set the key (CONFIG_FILES: read in the Snakefile).
zconfig.for_workflow(
    zconfig.validate_workflow, config, CONFIG_FILES, workflow.config_settings.config
)
zresources.check_settings(workflow.resource_settings)

DATASETS = config["datasets"]
MIXTURES = config["mixtures"]
MODELS = config["models"]
VARIANTS = config["variants"]
HYPERPARAMETERS = config["hyperparameters"]
EXPORTS = config["exports"]
# A training job's GPUs (more than one trains data-parallel); evaluation and export run on one.
GPUS = config["compute"]["gpus"]
INFERENCE_GPUS = min(GPUS, 1)
# What each kind of job declares as mem_mb (`make run` caps their sum at the machine's available memory).
MEMORY = config["compute"]["memory_mb"]
EVALUATION = config["evaluation"]
# What every model is loaded and computes in: a param of the jobs it changes (training, merge, export,
# evaluation), so that a changed precision reruns those and nothing upstream.
PRECISION = config["precision"]
TABLE1 = config["table1"]
# The commits of the hub sources, beside the config in use (the last --configfile: it has the last word).
LOCK_FILE = str(zlock.lock_path(CONFIG_FILES[-1].path))
# Every path of this study: its own output tree, and the shared files its fingerprints name.
paths = zpaths.Layout(config, LOCK_FILE)
# A study's draws (`draws`; rules/draws.smk): draw 1's layout in draw k >= 2, once its config is proven draw 1's
# with the training seeds moved (None in draw 1), and in draw 1 the validated configs of draws 2..N, whose
# finished trees its claims read (none in a draw k >= 2).
DRAW_BASE = zconfig.for_workflow(
    zstudies.draw_base, config, CONFIG_FILES[-1].path, paths
)
OTHER_DRAWS = zconfig.for_workflow(
    zstudies.other_draw_configs, config, CONFIG_FILES[-1].path
)


def base_evaluation_set(task):
    """In draw k >= 2, a task's evaluation set in this draw and in draw 1, both ancient (a hard link keeps
    draw 1's older time): the copy of draw 1's evaluation proves the two files the same (rules/draws.smk).
    """
    mixture = EVALUATION[task]["data"]
    return {
        "data": ancient(paths.mixture(mixture)),
        "base_data": ancient(DRAW_BASE.mixture(mixture)),
    }


def shared_params(kind):
    """A shared job's params (what its fingerprint is made of), once its wildcards are checked to be
    this config's: a fingerprint of another config is refused, not fetched under its name.
    """
    name = "model" if kind == "models" else "dataset"
    return lambda wc: paths.shared_params(kind, wc[name], wc.fingerprint)


def _alternatives(names):
    return "|".join(re.escape(n) for n in sorted(names))


wildcard_constraints:
    dataset=_alternatives(DATASETS),
    mixture=_alternatives(MIXTURES),
    model=_alternatives(MODELS) or "^$",
    variant=_alternatives(["M0", *VARIANTS]),
    format=_alternatives(study.STORED),
    task=_alternatives(t for t, spec in study.TASKS.items() if not spec.per_format),
    fingerprint=zpaths.FINGERPRINT_PATTERN,


#: The tasks measured in every stored format of a variant (rule evaluate_perplexity).
PER_FORMAT_TASKS = _alternatives(
    t for t, spec in study.TASKS.items() if spec.per_format
)
#: The tasks a QLoRA variant is measured on as it was trained (rule evaluate_as_trained).
QLORA_TASKS = _alternatives(study.qlora_tasks())
#: The task computed from each model's pair scores (rule score_pairs).
PAIR_SCORES_TASK = study.pair_scores_task()


def local_source_input(wildcards):
    """A local source file is an input when present, so a changed file reruns its dataset;
    when absent the job still plans, and fails with an error naming the file."""
    source = DATASETS[wildcards.dataset]["source"]
    if source["kind"] == "local" and os.path.exists(source["path"]):
        return [source["path"]]
    return []


def mixture_inputs(wildcards):
    spec = MIXTURES[wildcards.mixture]
    return {
        "records": [paths.records(c["dataset"]) for c in spec["components"]],
        "exclude": [paths.mixture(m) for m in spec["exclude"]]
        + [paths.mixture(m, "validation.json") for m in spec["exclude"]],
    }


def leakage_parts():
    """The mixtures the leakage check reads, each with its training part and validation split."""
    plan = zmixtures.leakage_plan(config)
    names = dict.fromkeys(
        m for check in plan for m in (check["held_out"], check["trained"])
    )
    return {
        m: {
            "train": paths.mixture(m),
            "validation": paths.mixture(m, "validation.json"),
        }
        for m in names
    }


def leakage_inputs():
    return [path for parts in leakage_parts().values() for path in parts.values()]


def _variant(wildcards):
    spec = VARIANTS[wildcards.variant]
    if wildcards.model not in spec["models"]:
        raise ValueError(
            f"variant {wildcards.variant} is not trained for model {wildcards.model}"
        )
    return spec


def train_inputs(wildcards):
    spec = _variant(wildcards)
    return {
        "base": paths.variant_model(wildcards.model, spec["parent"]),
        "train": paths.mixture(spec["data"]),
        "validation": paths.mixture(spec["data"], "validation.json"),
        # passed before training starts; a later rerun of the check (another mixture redrawn) retrains nothing
        "leakage": ancient(paths.leakage()),
    }


def merge_inputs(wildcards):
    spec = _variant(wildcards)
    return {
        "base": paths.variant_model(wildcards.model, spec["parent"]),
        "adapter": paths.adapter(
            wildcards.model, wildcards.variant, "adapter_config.json"
        ),
    }


def chain_priority(wildcards):
    """Scheduling priority of a model's fetch, training and merge: the longer the chain of variants
    trained from it, the sooner (M0 → M1-DS-cosine → M2-DS is the run's critical path; measured, with
    one priority for every training job, M1-DS-cosine started 18 minutes into a 31-minute run).
    """
    return 10 * (1 + _chain_below(wildcards.get("variant", "M0")))


def _chain_below(variant):
    """How many variants deep the longest chain trained from `variant` goes."""
    children = [v for v, spec in VARIANTS.items() if spec["parent"] == variant]
    return max((1 + _chain_below(child) for child in children), default=0)


def model_card(wildcards):
    """What the merged model's README.md records about how it was made."""
    spec = VARIANTS[wildcards.variant]
    return {
        "model": wildcards.model,
        "variant": wildcards.variant,
        "parent": spec["parent"],
        "base_source": MODELS[wildcards.model]["source"],
        "data": spec["data"],
        "qlora": spec["qlora"],
        "hyperparameters": HYPERPARAMETERS[spec["hyperparameters"]],
        "experiment": config["experiment"],
    }


def all_models():
    merged = [paths.merged_model(m, v) for m, v in study.trained(config)]
    quantized = [
        paths.export(m, v, f)
        for m, v in study.exported(config)
        for f in EXPORTS["formats"]
    ]
    return merged + quantized


def eval_settings(task):
    return study.task_settings(EVALUATION, task, PRECISION)


def evaluate_inputs(wildcards):
    """The model, its task's data, and (for a task scored against the parent) its parent as the reference;
    a task computed from pair scores reads the model's and its parent's (`score_pairs`) instead of the models.
    """
    spec = study.TASKS[wildcards.task]
    inputs = {"data": paths.mixture(EVALUATION[wildcards.task]["data"])}
    if not spec.from_pair_scores:
        inputs["model"] = paths.variant_model(wildcards.model, wildcards.variant)
    if spec.needs_parent:
        if wildcards.variant == "M0":
            raise ValueError(f"{wildcards.task} needs a parent: M0 has none")
        parent = _variant(wildcards)["parent"]
        if spec.from_pair_scores:
            inputs["policy_scores"] = paths.pair_scores(
                wildcards.model, wildcards.variant
            )
            inputs["reference_scores"] = paths.pair_scores(wildcards.model, parent)
        else:
            inputs["parent"] = paths.variant_model(wildcards.model, parent)
    return inputs


def table1_inputs():
    return list(paths.table1_metrics(TABLE1).values())


def quantization_inputs():
    return {
        "metrics": list(paths.quantization_metrics().values()),
        "models": [paths.variant_model(*key) for key in study.exported_formats(config)],
    }


def histories():
    """The log history of every trained variant of the paper's figures, keyed by (model, variant)."""
    return paths.histories()


def qlora_inputs():
    return list(paths.qlora_metrics().values())


def figure_outputs():
    return paths.figure_outputs()


def final_outputs():
    outputs = [paths.table("warnings")]
    if TABLE1:
        outputs += [
            paths.table("table1"),
            paths.table("findings"),
            paths.table("claims"),
        ]
    quantization = study.QUANTIZATION[0] in EVALUATION
    if EXPORTS["variants"] and EXPORTS["formats"] and quantization:
        outputs.append(paths.table("quantization"))
    if VARIANTS:
        outputs += list(figure_outputs().values())
    if study.qlora_rows(config) and TABLE1 and quantization:
        outputs.append(paths.table("qlora"))
    return outputs


def all_mixtures():
    return [paths.mixture(m) for m in MIXTURES] + [
        paths.dataset_info(),
        paths.leakage(),
    ]


def llamafactory_mixtures():
    """The mixtures LlamaFactory trains on (SFT and ranking), by name: task."""
    return {
        m: spec["task"]
        for m, spec in MIXTURES.items()
        if spec["task"] in zmixtures.LLAMAFACTORY_COLUMNS
    }


def llamafactory_inputs(wildcards):
    """A LlamaFactory run's base model, the mixtures' index and, for a trained parent, its run's YAML."""
    if wildcards.variant == "M0":
        raise ValueError("M0 is the base model: there is no LlamaFactory run to write")
    spec = _variant(wildcards)
    inputs = {
        "base": paths.base_model(wildcards.model),
        "dataset_info": paths.dataset_info(),
    }
    if spec["parent"] != "M0":
        inputs["parent"] = paths.llamafactory(wildcards.model, spec["parent"])
    return inputs
