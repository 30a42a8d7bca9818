"""The study's vocabulary in one place: trainers, evaluation tasks, the formats a variant is measured in
(dense, quantized, as trained), Table 1's columns, which models a config exports and which rows its QLoRA
table has.

The rules, the config checks, the tables and the figures read these names from here, so adding a
task or a format is one edit. Nothing here imports torch: the Snakefile reads it at every parse.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["Task", "TASKS", "TRAINERS", "Format", "FORMATS", "DENSE", "AS_TRAINED", "QUANTIZED", "STORED",
           "TABLE1", "PAPER_TABLE1", "PAPER_MODELS", "PAPER_DPO_VALIDATION", "least_items", "slot_model",
           "is_papers_model", "MCQA_TABLE", "QLORA_TABLE",
           "QUANTIZATION", "table1_tasks", "row_tasks", "shows_reward", "qlora_tasks", "paper_runs",
           "trainer_of", "exported", "exported_formats", "qlora_rows", "qlora_exported"]


@dataclass(frozen=True)
class Task:
    """An evaluation task: the mixture task of the records it reads, the metric rows it writes, whether
    it scores against the variant's parent, whether it is measured on every form of a variant (dense
    and quantized) or on the dense one only, and whether the workflow computes it from each model's
    pair scores (`score_pairs`: computed once per model, the policy's and its reference's) instead of
    loading the models in its own job, and the least items its score may rest on (`min_items`: fewer
    widen its standard error beyond what the study is sized for; `make check-default` holds a run to it
    and a smaller evaluation set is a warning in the report), and whether its shown metric is a fraction
    whose standard error `make check-default` bounds (`bounded`). Its runner is
    `zephyr.evaluation.tasks.RUNNERS[name]`."""

    name: str
    reads: str
    metrics: tuple[str, ...]
    needs_parent: bool = False
    per_form: bool = False
    from_pair_scores: bool = False
    min_items: int | None = None
    bounded: bool = False


#: The evaluation tasks, by name.
TASKS: dict[str, Task] = {task.name: task for task in (
    Task("hellaswag", "hellaswag", ("acc", "acc_norm"), min_items=50, bounded=True),
    Task("gsm8k", "gsm8k", ("bleu", "rouge1", "rouge2", "rougeL"), min_items=20),
    Task("mcqa", "mcqa", ("acc", "acc_norm"), min_items=50, bounded=True),
    Task("reward", "preference", ("reward_accuracy", "reward_margin", "reward_chosen", "reward_rejected", "beta"),
         needs_parent=True, from_pair_scores=True, min_items=50, bounded=True),
    Task("perplexity", "text", ("perplexity", "tokens", "windows", "window", "text_tokens", "nll"), per_form=True),
)}

def task_settings(evaluation: dict, task: str, precision: dict) -> dict:
    """A task's settings: the batch size of the config's `evaluation`, the study's `precision` (every
    model is loaded and computes in it; quantized forms keep their quantized layers), and the task's
    own keys."""
    return {"batch_size": evaluation["batch_size"], "precision": precision, **evaluation[task]}


def least_items(evaluation: dict, mixture: str) -> dict[str, int]:
    """The least items each task that evaluates on `mixture` (the config's `evaluation`) needs, by task:
    what its draw is held to (empty for a mixture no task with a minimum reads)."""
    return {task: TASKS[task].min_items for task, spec in evaluation.items()
            if task in TASKS and TASKS[task].min_items and spec["data"] == mixture}


#: trainer → the mixture task it learns from.
TRAINERS = {"sft": "sft", "dpo": "preference"}


@dataclass(frozen=True)
class Format:
    """A format a variant is measured in: its dense weights, a bitsandbytes copy of them quantized to `bits`
    (its quantized layers' weights), or a QLoRA variant as it was trained (`AS_TRAINED`: its base quantized as
    the variant's `qlora` says, the adapter on top, unmerged; another model than a quantized copy of the
    merge, so no `bits`). `stored`: a model folder of its own (`zephyr.paths.Layout.variant_model`)."""

    name: str
    description: str
    bits: int | None = None
    stored: bool = True


#: The formats, by name.
FORMATS: dict[str, Format] = {fmt.name: fmt for fmt in (
    Format("dense", "the variant's own weights, unquantized"),
    Format("nf4", "4-bit NormalFloat (bitsandbytes NF4)", bits=4),
    Format("nf4-dq", "4-bit NormalFloat with double quantization of the scales", bits=4),
    Format("int8", "8-bit LLM.int8() (bitsandbytes)", bits=8),
    Format("as-trained", "a QLoRA variant as trained: its quantized base with the adapter on top, unmerged",
           stored=False),
)}
DENSE = "dense"
AS_TRAINED = "as-trained"
#: The formats a dense model is quantized to: the exports (`exports.formats`) and a QLoRA variant's base (`qlora`).
QUANTIZED = tuple(name for name, fmt in FORMATS.items() if fmt.bits)
#: The formats a variant is stored in, each a model folder: dense and every quantized copy.
STORED = tuple(name for name, fmt in FORMATS.items() if fmt.stored)

#: Table 1's columns after "Model", exactly the paper's: (task, metric, scale). HellaSwag in percent, as
#: in the paper; BLEU and ROUGE are already x100; reward accuracy stays a fraction, as in the paper,
#: and only in the rows a config marks (`table1[].reward`: the paper fills three).
TABLE1 = {
    "HellaSwag": ("hellaswag", "acc_norm", 100),
    "BLEU-4": ("gsm8k", "bleu", 1),
    "ROUGE-1": ("gsm8k", "rouge1", 1),
    "ROUGE-2": ("gsm8k", "rouge2", 1),
    "ROUGE-L": ("gsm8k", "rougeL", 1),
    "Reward Accuracy": ("reward", "reward_accuracy", 1),
}
#: The paper's published Table 1 (zephyr-report, Table 1), by row label: the reproduction is set beside it.
PAPER_TABLE1 = {
    "Qwen M0": (44.98, 28.43, 46.91, 17.02, 25.17, None),
    "BLOOM M0": (36.84, 7.12, 20.55, 4.30, 6.58, None),
    "Qwen M1 (D_L)": (42.15, 30.64, 50.43, 20.20, 29.01, None),
    "Qwen M1 (D_S)": (45.33, 34.50, 52.15, 20.91, 30.21, 0.57),
    "BLOOM M1 (D_L)": (36.00, 5.40, 23.03, 4.88, 7.33, None),
    "BLOOM M1 (D_S)": (36.13, 6.04, 31.04, 7.42, 8.46, None),
    "Qwen M2 (D_S)": (45.01, 19.40, 42.26, 13.06, 19.38, 0.52),
    "Qwen M0 DPO": (45.40, 22.91, 45.14, 15.55, 22.50, 0.50),
}
#: The report's final validation reward accuracy of its DPO runs (section 4: "0.80 and 0.79" for DPO
#: from M0 and from M1), by the variant names both configs give those runs: drawn beside Figure 4's curves.
PAPER_DPO_VALIDATION = {"M0-DPO": 0.80, "M2-DS": 0.79}
#: The report's model in each of its slots (the config's model keys): a Table 1 row is set beside the
#: report's like with like only when its slot ran this model; otherwise the comparison is structural.
PAPER_MODELS = {"qwen": "Qwen/Qwen1.5-0.5B-Chat", "bloom": "bigscience/bloom-560m"}


def slot_model(source: dict) -> str:
    """What ran in a model slot, in a few words, from its `source`."""
    kind = source["kind"]
    if kind == "hub":
        return source["id"]
    if kind == "gguf":
        return source.get("file") or Path(source["path"]).name
    if kind == "scratch":
        sizes = ", ".join(f"{k} {v}" for k, v in source.get("config", {}).items())
        return f"random-weight {source['architecture']} ({sizes})"
    return f"local {source.get('path')}"


def is_papers_model(model: str, source: dict) -> bool:
    return source["kind"] == "hub" and PAPER_MODELS.get(model) == source["id"]


#: The MCQA table (not in the paper's Table 1), same rows: length-normalized accuracy in percent, as
#: HellaSwag's column and lm-evaluation-harness' ARC (`acc` is in the metric CSVs too).
MCQA_TABLE = {"MCQA": ("mcqa", "acc_norm", 100)}
#: What the quantization table sets beside each format's size, and the QLoRA table beside each quantized
#: format it is exported in: (task, metric), a task measured per format.
QUANTIZATION = ("perplexity", "perplexity")
#: The QLoRA table (the report's section 5): each QLoRA variant evaluated as Table 1's rows are, with
#: MCQA and WikiText-2 perplexity (its dense weights) beside.
QLORA_TABLE = {**{c: spec for c, spec in TABLE1.items() if not TASKS[spec[0]].needs_parent}, **MCQA_TABLE,
               "Perplexity": (*QUANTIZATION, 1)}


def table1_tasks(variant: str | None = None) -> list[str]:
    """The tasks Table 1 and the MCQA table read (in registry order); for `variant`, only those it can be
    evaluated on (a task scored against the parent does not apply to M0)."""
    read = {task for task, _, _ in (*TABLE1.values(), *MCQA_TABLE.values())}
    tasks = [t for t in TASKS if t in read]
    if variant == "M0":
        tasks = [t for t in tasks if not TASKS[t].needs_parent]
    return tasks


def row_tasks(row: dict) -> list[str]:
    """The tasks one Table 1 row is evaluated on: reward accuracy only where the row shows it (`reward: true`),
    since the rest would be computed for nothing."""
    return [t for t in table1_tasks(row["variant"]) if t != "reward" or shows_reward(row)]


def shows_reward(row: dict) -> bool:
    """Whether a Table 1 row shows reward accuracy: the paper prints it for the DPO-related rows only."""
    return bool(row.get("reward", False))


def qlora_tasks() -> list[str]:
    """The tasks the QLoRA table reads (in registry order)."""
    read = {task for task, _, _ in QLORA_TABLE.values()}
    return [t for t in TASKS if t in read]


def paper_runs(variants: dict) -> dict:
    """The variants of the paper's figures: every trained one but the QLoRA runs, which have their own table."""
    return {name: spec for name, spec in variants.items() if not spec.get("qlora")}


def trainer_of(variant_spec: dict, hyperparameters: dict) -> str:
    return hyperparameters[variant_spec["hyperparameters"]]["trainer"]


def exported(config: dict) -> list[tuple[str, str]]:
    """(model, variant) pairs with quantized exports."""
    return [(m, v) for v in config["exports"]["variants"]
            for m in (config["models"] if v == "M0" else config["variants"][v]["models"])]


def exported_formats(config: dict) -> list[tuple[str, str, str]]:
    """(model, variant, format) of the quantization table: every exported pair, dense and in each exported format."""
    return [(m, v, f) for m, v in exported(config) for f in (DENSE, *config["exports"]["formats"])]


def qlora_rows(config: dict) -> list[dict]:
    """The QLoRA table's rows: every QLoRA variant, for each model it trains."""
    return [{"label": f"{config['models'][m]['label']} {v}", "model": m, "variant": v}
            for v, spec in config["variants"].items() if spec.get("qlora") for m in spec["models"]]


def qlora_exported(config: dict) -> list[tuple[str, str]]:
    """(model, variant) pairs of QLoRA rows that are exported (their 4-bit format, as it is served)."""
    rows = {(row["model"], row["variant"]) for row in qlora_rows(config)}
    return [pair for pair in exported(config) if pair in rows]
