"""Where a study's files live: one helper per kind of output, and the files each table reads.

Each config is a study with its own output tree (PyPSA-Eur's run name): `Layout(config)` puts every
output of the study under its `outputs` folder (`results/{experiment}` unless the config says
otherwise; the default config keeps the plain `results/`, `logs/` and `benchmarks/`). What several
studies may share lives under `resources/`, in a folder named by the fingerprint of everything its job
reads (the source, its content or pinned revision, the job's parameters): raw datasets, base models and
formatted records. A shared file is shared only when that fingerprint says it is the same thing; a
file of another config sits at another path, so no study reads, reruns or overwrites another's.

The rules, the scripts and the readers of results all build a path here, from the names that tell
outputs of its kind apart (model, variant, format, task), and none parses one back. Given wildcards
(`"{model}"`) a helper gives the rule's pattern. Nothing here imports torch: the Snakefile reads it at
every parse.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from . import files
from .study import (
    AS_TRAINED,
    DENSE,
    QUANTIZATION,
    TASKS,
    exported_formats,
    paper_runs,
    qlora_exported,
    qlora_rows,
    qlora_tasks,
    row_tasks,
    trained,
    trainer_of,
)

#: A metric file's key: (model, variant, format, task).
MetricKey = tuple[str, str, str, str]
#: The folder of what studies share (by fingerprint), and the plain layout's folders (the default's).
SHARED = "resources"
PLAIN = "results"
#: The shared jobs, by rule: the kind of shared file each makes.
SHARED_JOBS = {"fetch_dataset": "datasets", "format_records": "records", "fetch_model": "models"}
#: The plain layout's folders under results/ (other studies' trees sit beside them).
PLAIN_FOLDERS = ("mixtures", "models", "adapters", "checkpoints", "metrics", "figures", "llamafactory")
#: The study's own record of itself: its config's fingerprint, written when every final output is.
STUDY_FILE = "study.json"
#: Each validation record's final loss (SFT), beside its adapter: two runs on the same mixture are
#: compared record by record (a paired standard error), which the mean `eval_loss` alone cannot give.
VALIDATION_ITEMS = "validation_items.csv"
#: The wildcard of a shared file's fingerprint, and what it matches.
FINGERPRINT = "{fingerprint}"
FINGERPRINT_PATTERN = "[0-9a-f]{12}"


def fingerprint(value) -> str:
    """12 hex digits of the sha256 of `value` as canonical JSON: what a shared folder is named by."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def content_key(source: dict) -> dict:
    """What a source's rows depend on beyond its config entry, for the workflow to rerun on: a local
    file's sha256 (None while the file is missing), a hub source's pinned revision.

    A rule param, because Snakemake otherwise decides on modification times (a file replaced by
    `cp -p`, `rsync -t` or an archive keeps an older one) and records a param only when its job
    succeeds: a source that changed stays out of date until a run succeeds on the new content.
    Not the lock file's commit: Snakemake records a param as it was before the job ran, so the commit
    the first fetch writes into the lock would rerun every hub dataset, and all after it, once more.
    """
    if source["kind"] == "local":
        path = Path(source["path"])
        return {"sha256": _sha256_once(path) if path.is_file() else None}
    if source["kind"] == "hub":
        return {"revision": source.get("revision")}
    return {}


_SHA256: dict[tuple, str] = {}


def _sha256_once(path: Path) -> str:
    """sha256 of a file, hashed once per process while the file is unchanged (several rules ask)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    if key not in _SHA256:
        _SHA256[key] = files.sha256(path)
    return _SHA256[key]


def study_record(config: dict, config_files: list[str], outputs: list[str]) -> dict:
    """What `STUDY_FILE` holds: the study's name, folder and config files, the fingerprint of its
    validated config (any change to any key changes it), and its final outputs."""
    return {"experiment": config["experiment"], "outputs": outputs_dir(config),
            "config_files": [str(f) for f in config_files], "config_fingerprint": fingerprint(config),
            "final_outputs": list(outputs)}


def outputs_dir(config: dict) -> str:
    """The study's output folder: its `outputs` key, `{experiment}` filled in."""
    return config.get("outputs", f"{PLAIN}/{{experiment}}").format(experiment=config["experiment"])


def _file(folder: str, file: str | None) -> str:
    return folder if file is None else f"{folder}/{file}"


class Layout:
    """The paths of one study (a validated config). `lock_file`: the lock of the config file in use,
    needed only for the shared paths of hub sources (their commit is pinned there)."""

    def __init__(self, config: dict, lock_file: str | os.PathLike | None = None):
        self.config = config
        self.lock_file = None if lock_file is None else os.path.relpath(Path(lock_file).resolve())
        self.results = outputs_dir(config).rstrip("/")
        plain = self.results == PLAIN
        self.logs = "logs" if plain else f"{self.results}/logs"
        self.benchmarks = "benchmarks" if plain else f"{self.results}/benchmarks"

    # ---- what studies share, by fingerprint ---------------------------------------------------

    def _lock(self, source: dict) -> str | None:
        if source["kind"] != "hub":
            return None
        if self.lock_file is None:
            raise ValueError(f"the path of hub source {source.get('id')!r} needs its config's lock file")
        return self.lock_file

    def dataset_params(self, dataset: str) -> dict:
        """Everything a dataset's fetch reads from the config: its job's params and its fingerprint."""
        spec = self.config["datasets"][dataset]
        source = spec["source"]
        return {"source": source, "rows": spec["rows"], "allow_row_change": spec["allow_row_change"],
                "content": content_key(source), "lock": self._lock(source)}

    def model_params(self, model: str) -> dict:
        """Everything a base model's fetch reads from the config."""
        spec = self.config["models"][model]
        return {"source": spec["source"], "chat_template": spec["chat_template"],
                "trust_remote_code": spec["trust_remote_code"], "lock": self._lock(spec["source"])}

    def records_params(self, dataset: str) -> dict:
        """Everything a dataset's formatting reads: its raw data's fingerprint and its formatter."""
        spec = self.config["datasets"][dataset]
        return {"data": fingerprint(self.dataset_params(dataset)), "formatter": spec["format"],
                "options": spec["options"]}

    def _shared(self, kind: str, name: str, params) -> str:
        return f"{SHARED}/{kind}/{name}/{FINGERPRINT if name.startswith('{') else fingerprint(params(name))}"

    def dataset(self, dataset: str, file: str) -> str:
        """A fetched dataset's `data.parquet` or `manifest.json`."""
        return f"{self._shared('datasets', dataset, self.dataset_params)}/{file}"

    def records(self, dataset: str) -> str:
        return f"{self._shared('records', dataset, self.records_params)}.jsonl"

    def base_model(self, model: str, file: str | None = "manifest.json") -> str:
        """A fetched base model (M0); `file` None: its folder."""
        return _file(self._shared("models", model, self.model_params), file)

    def shared_log(self, job: str, name: str, ext: str = "log", key: str = FINGERPRINT) -> str:
        """The log (`ext` "tsv": the benchmark) of a shared job, beside the others of its fingerprint (`key`:
        the wildcard, or one fingerprint)."""
        folder = "logs" if ext == "log" else "benchmarks"
        return f"{SHARED}/{folder}/{job}/{name}/{key}.{ext}"

    def shared_params(self, kind: str, name: str, found: str | None = None) -> dict:
        """What the shared job of `kind` (datasets, records, models) and `name` reads, its fingerprint's
        parts; with `found` (a fingerprint asked for), refused when it is not this config's."""
        params = {"datasets": self.dataset_params, "records": self.records_params, "models": self.model_params}[
            kind](name)
        if found is not None and found != (expected := fingerprint(params)):
            raise ValueError(f"{SHARED}/{kind}/{name}/{found} belongs to another config: this config's {name} is "
                             f"{SHARED}/{kind}/{name}/{expected}")
        return params

    def shared(self) -> list[str]:
        """Every shared folder or file this study reads."""
        config = self.config
        return [*(str(Path(self.dataset(d, "manifest.json")).parent) for d in config["datasets"]),
                *(self.records(d) for d in config["datasets"]),
                *(self.base_model(m, None) for m in config["models"])]

    def shared_benchmarks(self) -> list[tuple[str, str, Path]]:
        """(rule, name, file) of the benchmark files of the shared jobs whose fingerprint is this config's."""
        found = [(job, name, Path(self.shared_log(job, name, "tsv", fingerprint(self.shared_params(kind, name)))))
                 for job, kind in SHARED_JOBS.items()
                 for name in self.config["models" if kind == "models" else "datasets"]]
        return [(job, name, path) for job, name, path in found if path.is_file()]

    def owns(self, path: str) -> bool:
        """Whether `path` (relative to the working directory) is one of this study's own outputs."""
        parts = Path(path).parts
        if self.results != PLAIN:
            return Path(path).is_relative_to(self.results)
        return bool(parts) and (parts[0] in (self.logs, self.benchmarks) or parts[0] == PLAIN and (
            len(parts) == 2 or parts[1] in PLAIN_FOLDERS))

    # ---- the study's own files ------------------------------------------------------------------

    def log(self, name: str) -> str:
        return f"{self.logs}/{name}.log"

    def benchmark(self, name: str) -> str:
        return f"{self.benchmarks}/{name}.tsv"

    def study_file(self) -> str:
        return f"{self.results}/{STUDY_FILE}"

    def mixture(self, mixture: str, part: str = "json") -> str:
        """A drawn mixture's file (`mixture_file`)."""
        return f"{self.results}/mixtures/{mixture_file(mixture, part)}"

    def dataset_info(self) -> str:
        return f"{self.results}/mixtures/dataset_info.json"

    def leakage(self) -> str:
        """The leakage check's table: every held-out set against the training mixtures it must not share an
        item with (zephyr.data.mixtures.check_leakage); training waits for it."""
        return f"{self.results}/mixtures/leakage.csv"

    def merged_model(self, model: str, variant: str, file: str | None = "manifest.json") -> str:
        return _file(f"{self.results}/models/{model}/{variant}", file)

    def export(self, model: str, variant: str, format: str, file: str | None = "manifest.json") -> str:
        """A variant's quantized export: the folder `{variant}-{format}` beside its merge."""
        return _file(f"{self.results}/models/{model}/{variant}-{format}", file)

    def variant_model(self, model: str, variant: str, format: str = DENSE, file: str | None = "manifest.json") -> str:
        """A variant's model in one stored format: M0's dense weights are the fetched model, another's its merge."""
        if format != DENSE:
            return self.export(model, variant, format, file)
        return self.base_model(model, file) if variant == "M0" else self.merged_model(model, variant, file)

    def adapter(self, model: str, variant: str, file: str) -> str:
        """A trained adapter's `adapter_config.json`, its `log_history.csv` or its `summary.json`."""
        return f"{self.results}/adapters/{model}/{variant}/{file}"

    def checkpoints(self, model: str, variant: str) -> str:
        return f"{self.results}/checkpoints/{model}/{variant}"

    def llamafactory(self, model: str, variant: str) -> str:
        return f"{self.results}/llamafactory/{model}/{variant}.yaml"

    def pair_scores(self, model: str, variant: str) -> str:
        return f"{self.results}/metrics/{model}/{variant}/pair_scores.json"

    def metrics(self, model: str, variant: str, task: str, format: str | None = None, ext: str = "csv") -> str:
        """An evaluation's metric file (`ext` "jsonl": its rows per item); `format` as `evaluation`'s."""
        return f"{self.results}/metrics/{model}/{variant}/{evaluation(task, format)}.{ext}"

    def task_metrics(self, model: str, variant: str, task: str, format: str = DENSE, ext: str = "csv") -> str:
        """A registered task's metric file in one format: only a task run per format is measured on a quantized
        one; a QLoRA variant as trained on every task of its table."""
        if TASKS[task].per_format or format == AS_TRAINED:
            return self.metrics(model, variant, task, format, ext)
        if format != DENSE:
            raise ValueError(f"{task} is measured on the dense weights only, not {format}")
        return self.metrics(model, variant, task, ext=ext)

    def table(self, name: str) -> str:
        return f"{self.results}/{name}.csv"

    def figure(self, name: str) -> str:
        return f"{self.results}/figures/{name}.png"

    def table1_metrics(self, rows: list[dict]) -> dict[MetricKey, str]:
        """The metric files of Table 1 and the MCQA table: each configured row's tasks."""
        return {(r["model"], r["variant"], DENSE, t): self.task_metrics(r["model"], r["variant"], t)
                for r in rows for t in row_tasks(r)}

    def qlora_metrics(self) -> dict[MetricKey, str]:
        """The QLoRA table's metric files: every row's tasks as trained (the 4-bit base with its adapter)
        and merged (dense), and the perplexity of each quantized format the merge is exported in."""
        config, task = self.config, QUANTIZATION[0]
        dense = {(r["model"], r["variant"], DENSE, t): self.task_metrics(r["model"], r["variant"], t)
                 for r in qlora_rows(config) for t in qlora_tasks()}
        as_trained = {(r["model"], r["variant"], AS_TRAINED, t):
                      self.task_metrics(r["model"], r["variant"], t, AS_TRAINED)
                      for r in qlora_rows(config) for t in qlora_tasks()}
        return dense | as_trained | {(m, v, f, task): self.task_metrics(m, v, task, f)
                                     for m, v in qlora_exported(config) for f in config["exports"]["formats"]}

    def quantization_metrics(self) -> dict[MetricKey, str]:
        """The quantization table's metric files: every exported variant's, dense and quantized."""
        task = QUANTIZATION[0]
        return {(m, v, f, task): self.task_metrics(m, v, task, f) for m, v, f in exported_formats(self.config)}

    def all_metrics(self) -> dict[MetricKey, str]:
        """Every metric file a table reads: Table 1's and MCQA's, the QLoRA table's, the quantization table's."""
        return {**self.table1_metrics(self.config["table1"]), **self.qlora_metrics(), **self.quantization_metrics()}

    def findings_inputs(self) -> list[str]:
        """What the findings and pipeline checks read: every table's metric files with their item rows, and
        every trained run's history, summary and validation items."""
        metrics = self.all_metrics()
        items = [self.task_metrics(m, v, t, f, "jsonl") for m, v, f, t in metrics]
        runs = [self.adapter(m, v, f) for m, v in trained(self.config)
                for f in ("log_history.csv", "summary.json", VALIDATION_ITEMS)]
        return [*metrics.values(), *items, *runs]

    def histories(self) -> dict[tuple[str, str], str]:
        """The log history of every trained variant of the paper's figures, by (model, variant)."""
        return {(m, v): self.adapter(m, v, "log_history.csv") for v, spec in paper_runs(self.config["variants"]).items()
                for m in spec["models"]}

    def figure_outputs(self) -> dict[str, str]:
        """The appendix figures a config draws: name → PNG path (Figure 1, SFT losses per model, Figure 4)."""
        variants, hyperparameters = paper_runs(self.config["variants"]), self.config["hyperparameters"]
        sft_models = sorted({m for spec in variants.values() if trainer_of(spec, hyperparameters) == "sft"
                             for m in spec["models"]})
        outputs = {"learning_rates": self.figure("figure1_learning_rates")}
        for name in sft_models:
            outputs[f"sft_{name}"] = self.figure(f"figure_sft_losses_{name}")
        if any(trainer_of(spec, hyperparameters) == "dpo" for spec in variants.values()):
            outputs["dpo"] = self.figure("figure4_dpo")
        return outputs


def evaluation(task: str, format: str | None = None) -> str:
    """The name of an evaluation's files: a task run per format names the format (`perplexity-nf4`)."""
    return task if format is None else f"{task}-{format}"


def mixture_file(mixture: str, part: str = "json") -> str:
    """The name of a drawn mixture's file: the mixture (`json`), its held-out `validation.json`, its
    `stats.csv`, its `warnings.csv` or its `manifest.json`."""
    return f"{mixture}.{part}"


def validation_split(mixture: str) -> str:
    """The name of a mixture's validation split, wherever one is named apart from its mixture: the dataset
    LlamaFactory evaluates on (`dataset_info.json`, a run's `eval_dataset`) and the leakage check's messages."""
    return f"{mixture}_validation"
