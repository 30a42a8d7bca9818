"""Where the workflow's files live: one helper per kind of output, and the files each table reads.

The rules, the scripts and the readers of results all build a path here, from the names that tell
outputs of its kind apart (model, variant, form, task), and none parses one back. Given wildcards
(`"{model}"`) a helper gives the rule's pattern. Nothing here imports torch: the Snakefile reads it at
every parse.
"""

from __future__ import annotations

from .study import (
    QUANTIZATION,
    TASKS,
    form_name,
    paper_runs,
    qlora_exported,
    qlora_rows,
    qlora_tasks,
    quantized_forms,
    row_tasks,
    trainer_of,
)

#: A metric file's key: (model, variant, form, task).
MetricKey = tuple[str, str, str, str]


def _file(folder: str, file: str | None) -> str:
    return folder if file is None else f"{folder}/{file}"


def dataset(dataset: str, file: str) -> str:
    """A fetched dataset's `data.parquet` or `manifest.json`."""
    return f"resources/datasets/{dataset}/{file}"


def records(dataset: str) -> str:
    return f"results/records/{dataset}.jsonl"


def mixture(mixture: str, part: str = "json") -> str:
    """A drawn mixture (`json`), its held-out `validation.json`, its `stats.csv` or its `warnings.csv`."""
    return f"results/mixtures/{mixture}.{part}"


def dataset_info() -> str:
    return "results/mixtures/dataset_info.json"


def base_model(model: str, file: str | None = "manifest.json") -> str:
    """A fetched base model (M0); `file` None: its folder."""
    return _file(f"resources/models/{model}", file)


def merged_model(model: str, variant: str, file: str | None = "manifest.json") -> str:
    return _file(f"results/models/{model}/{variant}", file)


def export(model: str, variant: str, precision: str, file: str | None = "manifest.json") -> str:
    """A variant's quantized export."""
    return _file(f"results/models/{model}/{form_name(variant, precision)}", file)


def variant_model(model: str, variant: str, form: str = "dense", file: str | None = "manifest.json") -> str:
    """A variant's model in one form: M0's dense weights are the fetched model, another's its merge."""
    if form != "dense":
        return export(model, variant, form, file)
    return base_model(model, file) if variant == "M0" else merged_model(model, variant, file)


def adapter(model: str, variant: str, file: str) -> str:
    """A trained adapter's `adapter_config.json`, its `log_history.csv` or its `summary.json`."""
    return f"results/adapters/{model}/{variant}/{file}"


def checkpoints(model: str, variant: str) -> str:
    return f"results/checkpoints/{model}/{variant}"


def llamafactory(model: str, variant: str) -> str:
    return f"results/llamafactory/{model}/{variant}.yaml"


def pair_scores(model: str, variant: str) -> str:
    return f"results/metrics/{model}/{variant}/pair_scores.json"


def evaluation(task: str, form: str | None = None) -> str:
    """The name of an evaluation's files: a task run per form names the form (`perplexity-nf4`)."""
    return task if form is None else f"{task}-{form}"


def metrics(model: str, variant: str, task: str, form: str | None = None, ext: str = "csv") -> str:
    """An evaluation's metric file (`ext` "jsonl": its rows per item); `form` as `evaluation`'s."""
    return f"results/metrics/{model}/{variant}/{evaluation(task, form)}.{ext}"


def task_metrics(model: str, variant: str, task: str, form: str = "dense", ext: str = "csv") -> str:
    """A registered task's metric file of one form: only a task run per form is measured on another."""
    if TASKS[task].per_form:
        return metrics(model, variant, task, form, ext)
    if form != "dense":
        raise ValueError(f"{task} is measured on the dense weights only, not {form}")
    return metrics(model, variant, task, ext=ext)


def table(name: str) -> str:
    return f"results/{name}.csv"


def figure(name: str) -> str:
    return f"results/figures/{name}.png"


def table1_metrics(rows: list[dict]) -> dict[MetricKey, str]:
    """The metric files of Table 1 and the MCQA table: each configured row's tasks."""
    return {(r["model"], r["variant"], "dense", t): task_metrics(r["model"], r["variant"], t)
            for r in rows for t in row_tasks(r)}


def qlora_metrics(config: dict) -> dict[MetricKey, str]:
    """The QLoRA table's metric files: every row's tasks, and the perplexity of each quantized form it
    is exported in."""
    task = QUANTIZATION[0]
    dense = {(r["model"], r["variant"], "dense", t): task_metrics(r["model"], r["variant"], t)
             for r in qlora_rows(config) for t in qlora_tasks()}
    return dense | {(m, v, f, task): task_metrics(m, v, task, f)
                    for m, v in qlora_exported(config) for f in config["exports"]["precisions"]}


def quantization_metrics(config: dict) -> dict[MetricKey, str]:
    """The quantization table's metric files: every exported variant's, dense and quantized."""
    task = QUANTIZATION[0]
    return {(m, v, f, task): task_metrics(m, v, task, f) for m, v, f in quantized_forms(config)}


def histories(variants: dict) -> dict[tuple[str, str], str]:
    """The log history of every trained variant of the paper's figures, by (model, variant)."""
    return {(m, v): adapter(m, v, "log_history.csv") for v, spec in paper_runs(variants).items()
            for m in spec["models"]}


def figure_outputs(variants: dict, hyperparameters: dict) -> dict[str, str]:
    """The appendix figures a config draws: name → PNG path (Figure 1, SFT losses per model, Figure 4)."""
    variants = paper_runs(variants)
    sft_models = sorted({m for spec in variants.values() if trainer_of(spec, hyperparameters) == "sft"
                         for m in spec["models"]})
    outputs = {"learning_rates": figure("figure1_learning_rates")}
    for name in sft_models:
        outputs[f"sft_{name}"] = figure(f"figure_sft_losses_{name}")
    if any(trainer_of(spec, hyperparameters) == "dpo" for spec in variants.values()):
        outputs["dpo"] = figure("figure4_dpo")
    return outputs
