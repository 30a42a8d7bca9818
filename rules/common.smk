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
from zephyr import precision as zprecision
from zephyr import resources as zresources
from zephyr import study
from zephyr.data import sources as zsources
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
EVALUATION = config["evaluation"]
# What every model is loaded and computes in: a param of the jobs it changes (training, merge, export,
# evaluation), so that a changed precision reruns those and nothing upstream.
PRECISION = config["precision"]
TABLE1 = config["table1"]
# The commits of the hub sources, beside the config in use (the last --configfile: it has the last word).
LOCK_FILE = str(zlock.lock_path(CONFIG_FILES[-1].path))


def lock_file(source):
    """The lock file for a hub source, None for the others: as a param it would otherwise rerun every
    local and generated source when the same config is given under another file name."""
    return LOCK_FILE if source["kind"] == "hub" else None


def _alternatives(names):
    return "|".join(re.escape(n) for n in sorted(names))


wildcard_constraints:
    dataset=_alternatives(DATASETS),
    mixture=_alternatives(MIXTURES),
    model=_alternatives(MODELS) or "^$",
    variant=_alternatives(["M0", *VARIANTS]),
    precision=_alternatives(study.PRECISIONS),
    form=_alternatives(study.FORMS),
    task=_alternatives(t for t, spec in study.TASKS.items() if not spec.per_form),


def local_source_input(wildcards):
    """A local source file is an input when present, so a changed file reruns its dataset;
    when absent the job still plans, and fails with an error naming the file."""
    source = DATASETS[wildcards.dataset]["source"]
    if source["kind"] == "local" and os.path.exists(source["path"]):
        return [source["path"]]
    return []


def source_content(wildcards):
    """A local source's sha256 (a hub source's revision) as a param of its dataset's jobs: new content
    reruns them even under an older mtime, and until a run succeeds on it."""
    return zsources.content_key(DATASETS[wildcards.dataset]["source"])


def mixture_inputs(wildcards):
    spec = MIXTURES[wildcards.mixture]
    return {
        "records": [
            f"results/records/{c['dataset']}.jsonl" for c in spec["components"]
        ],
        "exclude": [f"results/mixtures/{m}.json" for m in spec["exclude"]]
        + [f"results/mixtures/{m}.validation.json" for m in spec["exclude"]],
    }


def model_dir(model, variant):
    """M0 is the fetched base model; every other variant is a merged model."""
    if variant == "M0":
        return f"resources/models/{model}"
    return f"results/models/{model}/{variant}"


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
        "base": f"{model_dir(wildcards.model, spec['parent'])}/manifest.json",
        "train": f"results/mixtures/{spec['data']}.json",
        "validation": f"results/mixtures/{spec['data']}.validation.json",
    }


def merge_inputs(wildcards):
    spec = _variant(wildcards)
    return {
        "base": f"{model_dir(wildcards.model, spec['parent'])}/manifest.json",
        "adapter": f"results/adapters/{wildcards.model}/{wildcards.variant}/adapter_config.json",
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
    merged = [
        f"results/models/{m}/{v}/manifest.json"
        for v, spec in VARIANTS.items()
        for m in spec["models"]
    ]
    quantized = [
        f"{form_dir(m, v, p)}/manifest.json"
        for m, v in exported()
        for p in EXPORTS["precisions"]
    ]
    return merged + quantized


def eval_settings(task):
    return study.task_settings(EVALUATION, task, PRECISION)


def evaluate_inputs(wildcards):
    """The model, its task's data, and (for reward accuracy) its parent as the reference; a task computed
    from pair scores reads the model's and its parent's (`score_pairs`) instead of the models.
    """
    spec = study.TASKS[wildcards.task]
    inputs = {"data": f"results/mixtures/{EVALUATION[wildcards.task]['data']}.json"}
    if not spec.from_pair_scores:
        inputs["model"] = (
            f"{model_dir(wildcards.model, wildcards.variant)}/manifest.json"
        )
    if spec.needs_parent:
        if wildcards.variant == "M0":
            raise ValueError(f"{wildcards.task} needs a parent: M0 has none")
        parent = _variant(wildcards)["parent"]
        if spec.from_pair_scores:
            inputs["policy_scores"] = pair_scores(wildcards.model, wildcards.variant)
            inputs["reference_scores"] = pair_scores(wildcards.model, parent)
        else:
            inputs["parent"] = f"{model_dir(wildcards.model, parent)}/manifest.json"
    return inputs


def pair_scores(model, variant):
    """A model's log-probabilities of the reward pairs (rule score_pairs)."""
    return f"results/metrics/{model}/{variant}/pair_scores.json"


def form_dir(model, variant, form):
    """A variant's dense folder, or its quantized export."""
    if form == "dense":
        return model_dir(model, variant)
    return f"results/models/{model}/{study.form_name(variant, form)}"


def perplexity_model(wildcards):
    return (
        f"{form_dir(wildcards.model, wildcards.variant, wildcards.form)}/manifest.json"
    )


def table1_inputs():
    return [
        f"results/metrics/{row['model']}/{row['variant']}/{task}.csv"
        for row in TABLE1
        for task in study.row_tasks(row)
    ]


def exported():
    """(model, variant) pairs with quantized exports."""
    return [
        (m, v)
        for v in EXPORTS["variants"]
        for m in (MODELS if v == "M0" else VARIANTS[v]["models"])
    ]


def quantization_inputs():
    forms = ["dense", *EXPORTS["precisions"]]
    return {
        "perplexity": [
            f"results/metrics/{m}/{v}/perplexity-{f}.csv"
            for m, v in exported()
            for f in forms
        ],
        "models": [
            f"{form_dir(m, v, f)}/manifest.json" for m, v in exported() for f in forms
        ],
    }


def histories():
    """The log history of every trained variant of the paper's figures, keyed by "model/variant"."""
    return {
        f"{m}/{v}": f"results/adapters/{m}/{v}/log_history.csv"
        for v, spec in study.paper_runs(VARIANTS).items()
        for m in spec["models"]
    }


def qlora_rows():
    """The QLoRA table's rows: every QLoRA variant, for each model it trains."""
    return [
        {"label": f"{MODELS[m]['label']} {v}", "model": m, "variant": v}
        for v, spec in VARIANTS.items()
        if spec["qlora"]
        for m in spec["models"]
    ]


def qlora_inputs():
    """Every QLoRA row's tasks, and the perplexity of each quantized form it is exported in."""
    return [
        f"results/metrics/{row['model']}/{row['variant']}/"
        + (f"{task}-dense.csv" if study.TASKS[task].per_form else f"{task}.csv")
        for row in qlora_rows()
        for task in study.qlora_tasks()
    ] + [
        f"results/metrics/{m}/{v}/perplexity-{form}.csv"
        for m, v in qlora_exported()
        for form in EXPORTS["precisions"]
    ]


def qlora_exported():
    """(model, variant) pairs of QLoRA rows that are exported (their 4-bit form, as it is served)."""
    rows = {(row["model"], row["variant"]) for row in qlora_rows()}
    return [pair for pair in exported() if pair in rows]


def figure_outputs():
    return study.figure_outputs(VARIANTS, HYPERPARAMETERS)


def final_outputs():
    outputs = ["results/warnings.csv"]
    if TABLE1:
        outputs.append("results/table1.csv")
    if EXPORTS["variants"] and EXPORTS["precisions"] and "perplexity" in EVALUATION:
        outputs.append("results/quantization.csv")
    if VARIANTS:
        outputs += list(figure_outputs().values())
    if qlora_rows() and TABLE1 and "perplexity" in EVALUATION:
        outputs.append("results/qlora.csv")
    return outputs


def all_mixtures():
    return [f"results/mixtures/{m}.json" for m in MIXTURES] + [
        "results/mixtures/dataset_info.json"
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
        "base": f"resources/models/{wildcards.model}/manifest.json",
        "dataset_info": "results/mixtures/dataset_info.json",
    }
    if spec["parent"] != "M0":
        inputs["parent"] = (
            f"results/llamafactory/{wildcards.model}/{spec['parent']}.yaml"
        )
    return inputs
