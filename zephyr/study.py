"""The study's vocabulary in one place: trainers, evaluation tasks (and the table columns each fills),
the formats a variant is measured in (dense, quantized, as trained), which models a config exports and
which rows its QLoRA table has.

The rules, the config checks, the tables and the figures read these names from here, so adding a
task is its registry entry (`TASKS`) and its runner (`zephyr.evaluation.tasks.RUNNERS`), and adding a
format is one entry of `FORMATS`. Nothing here imports torch: the Snakefile reads it at every parse.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Task", "Column", "TASKS", "TRAINERS", "Format", "FORMATS", "DENSE", "AS_TRAINED", "QUANTIZED", "STORED",
           "TABLE1", "MCQA", "QLORA", "PAPER_TABLE1", "PAPER_MODELS", "PAPER_DPO_VALIDATION", "least_items",
           "slot_model", "is_papers_model", "table_columns", "QUANTIZATION", "table1_tasks", "row_tasks", "row_shows",
           "qlora_tasks", "pair_scores_task", "paper_runs", "trainer_of", "trained", "exported", "exported_formats",
           "qlora_rows", "qlora_exported"]

#: The tables of task columns, by their file's name (`results/{table}.csv`): Table 1 and the MCQA table
#: have the config's `table1` rows, the QLoRA table its QLoRA variants.
TABLE1, MCQA, QLORA = "table1", "mcqa", "qlora"


@dataclass(frozen=True)
class Column:
    """A table column of a task: its header, the metric it shows, that metric's scale there (HellaSwag
    in percent) and the tables it is in."""

    name: str
    metric: str
    scale: float = 1
    tables: tuple[str, ...] = (TABLE1,)


@dataclass(frozen=True)
class Task:
    """An evaluation task: the mixture task of the records it reads, the metric rows it writes, whether
    it scores against the variant's parent, whether it is measured on every form of a variant (dense
    and quantized) or on the dense one only, and whether the workflow computes it from each model's
    pair scores (`score_pairs`: computed once per model, the policy's and its reference's) instead of
    loading the models in its own job, and the least items its score may rest on (`min_items`: fewer
    widen its standard error beyond what the study is sized for; `make check-default` holds a run to it
    and a smaller evaluation set is a warning in the report), and whether its shown metric is a fraction
    whose standard error `make check-default` bounds (`bounded`).

    Its `columns` in the tables; `only_marked_rows`: shown (and evaluated) only in the Table 1 rows that
    ask for it with a key named after it (`reward: true`). `item_score`: one item row's score of its
    shown metric, where the rows do not carry it under the metric's name (the paired comparisons
    read it). Its runner is `zephyr.evaluation.tasks.RUNNERS[name]`."""

    name: str
    reads: str
    metrics: tuple[str, ...]
    needs_parent: bool = False
    per_format: bool = False
    from_pair_scores: bool = False
    min_items: int | None = None
    bounded: bool = False
    columns: tuple[Column, ...] = ()
    only_marked_rows: bool = False
    item_score: Callable[[dict], float] | None = None

    @property
    def shown(self) -> tuple[str, float]:
        """The metric its tables show first, and its scale there (its first metric where it has no column)."""
        return (self.columns[0].metric, self.columns[0].scale) if self.columns else (self.metrics[0], 1)


def _pair_won(row: dict) -> float:
    """A reward pair's own accuracy: 1 where the chosen answer's implicit reward is the larger."""
    return float(row["chosen_reward"] > row["rejected_reward"])


#: The evaluation tasks, by name; a module named in the config's `evaluation.include` adds its own
#: (`zephyr.evaluation.tasks.register`). Table 1's columns are exactly the paper's: HellaSwag in percent,
#: as in the paper; BLEU and ROUGE are already x100; reward accuracy stays a fraction, as in the paper,
#: and only in the rows a config marks (`table1[].reward`: the paper fills three). The MCQA table (not in
#: the paper) shows length-normalized accuracy in percent, as HellaSwag's column and lm-evaluation-harness'
#: ARC (`acc` is in the metric CSVs too). The QLoRA table (the report's section 5) shows each QLoRA variant
#: as Table 1 shows its rows, with MCQA and WikiText-2 perplexity beside.
TASKS: dict[str, Task] = {task.name: task for task in (
    Task("hellaswag", "hellaswag", ("acc", "acc_norm"), min_items=50, bounded=True,
         columns=(Column("HellaSwag", "acc_norm", 100, (TABLE1, QLORA)),)),
    Task("gsm8k", "gsm8k", ("bleu", "rouge1", "rouge2", "rougeL"), min_items=20,
         columns=tuple(Column(name, metric, 1, (TABLE1, QLORA)) for name, metric in (
             ("BLEU-4", "bleu"), ("ROUGE-1", "rouge1"), ("ROUGE-2", "rouge2"), ("ROUGE-L", "rougeL")))),
    Task("mcqa", "mcqa", ("acc", "acc_norm"), min_items=50, bounded=True,
         columns=(Column("MCQA", "acc_norm", 100, (MCQA, QLORA)),)),
    Task("reward", "preference", ("reward_accuracy", "reward_margin", "reward_chosen", "reward_rejected", "beta"),
         needs_parent=True, from_pair_scores=True, min_items=50, bounded=True,
         columns=(Column("Reward Accuracy", "reward_accuracy"),), only_marked_rows=True, item_score=_pair_won),
    Task("perplexity", "text", ("perplexity", "tokens", "windows", "window", "text_tokens", "nll"), per_format=True,
         columns=(Column("Perplexity", "perplexity", 1, (QLORA,)),)),
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

#: The paper's published Table 1 (zephyr-report, Table 1), by row label and column: the reproduction is
#: set beside it (a cell the paper leaves empty is absent).
PAPER_TABLE1 = {
    "Qwen M0": {"HellaSwag": 44.98, "BLEU-4": 28.43, "ROUGE-1": 46.91, "ROUGE-2": 17.02, "ROUGE-L": 25.17},
    "BLOOM M0": {"HellaSwag": 36.84, "BLEU-4": 7.12, "ROUGE-1": 20.55, "ROUGE-2": 4.30, "ROUGE-L": 6.58},
    "Qwen M1 (D_L)": {"HellaSwag": 42.15, "BLEU-4": 30.64, "ROUGE-1": 50.43, "ROUGE-2": 20.20, "ROUGE-L": 29.01},
    "Qwen M1 (D_S)": {"HellaSwag": 45.33, "BLEU-4": 34.50, "ROUGE-1": 52.15, "ROUGE-2": 20.91, "ROUGE-L": 30.21,
                      "Reward Accuracy": 0.57},
    "BLOOM M1 (D_L)": {"HellaSwag": 36.00, "BLEU-4": 5.40, "ROUGE-1": 23.03, "ROUGE-2": 4.88, "ROUGE-L": 7.33},
    "BLOOM M1 (D_S)": {"HellaSwag": 36.13, "BLEU-4": 6.04, "ROUGE-1": 31.04, "ROUGE-2": 7.42, "ROUGE-L": 8.46},
    "Qwen M2 (D_S)": {"HellaSwag": 45.01, "BLEU-4": 19.40, "ROUGE-1": 42.26, "ROUGE-2": 13.06, "ROUGE-L": 19.38,
                      "Reward Accuracy": 0.52},
    "Qwen M0 DPO": {"HellaSwag": 45.40, "BLEU-4": 22.91, "ROUGE-1": 45.14, "ROUGE-2": 15.55, "ROUGE-L": 22.50,
                    "Reward Accuracy": 0.50},
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


#: What the quantization table sets beside each format's size, and the QLoRA table beside each quantized
#: format it is exported in: (task, metric), a task measured per format.
QUANTIZATION = ("perplexity", "perplexity")


def table_columns(table: str) -> dict[str, tuple[str, str, float]]:
    """A table's task columns, in registry order: column → (task, metric, scale)."""
    return {c.name: (task.name, c.metric, c.scale) for task in TASKS.values() for c in task.columns
            if table in c.tables}


def _tasks_of(*tables: str) -> list[str]:
    """The tasks with a column in any of `tables`, in registry order."""
    return [name for name, task in TASKS.items() if any(set(tables) & set(c.tables) for c in task.columns)]


def table1_tasks(variant: str | None = None) -> list[str]:
    """The tasks Table 1 and the MCQA table read (in registry order); for `variant`, only those it can be
    evaluated on (a task scored against the parent does not apply to M0)."""
    return [t for t in _tasks_of(TABLE1, MCQA) if variant != "M0" or not TASKS[t].needs_parent]


def row_tasks(row: dict) -> list[str]:
    """The tasks one Table 1 row is evaluated on: a task shown only in marked rows (reward accuracy) only
    where the row shows it, since it would be computed for nothing."""
    return [t for t in table1_tasks(row["variant"]) if row_shows(row, t)]


def row_shows(row: dict, task: str) -> bool:
    """Whether a Table 1 row shows `task`'s columns: a task shown only in marked rows needs the row's key
    named after it (`reward: true`; the paper prints reward accuracy for the DPO-related rows only)."""
    return not TASKS[task].only_marked_rows or bool(row.get(task, False))


def qlora_tasks() -> list[str]:
    """The tasks the QLoRA table reads (in registry order)."""
    return _tasks_of(QLORA)


def pair_scores_task() -> str | None:
    """The task computed from each model's pair scores (rule score_pairs reads its data and settings), if
    one is registered: a model has one file of pair scores, so there is at most one."""
    found = [name for name, task in TASKS.items() if task.from_pair_scores]
    if len(found) > 1:
        raise ValueError(f"tasks {', '.join(found)} are all computed from pair scores: a model has one file of them")
    return found[0] if found else None


def paper_runs(variants: dict) -> dict:
    """The variants of the paper's figures: every trained one but the QLoRA runs, which have their own table."""
    return {name: spec for name, spec in variants.items() if not spec.get("qlora")}


def trainer_of(variant_spec: dict, hyperparameters: dict) -> str:
    return hyperparameters[variant_spec["hyperparameters"]]["trainer"]


def trained(config: dict) -> list[tuple[str, str]]:
    """(model, variant) of every training run, in the config's order."""
    return [(m, v) for v, spec in config["variants"].items() for m in spec["models"]]


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
