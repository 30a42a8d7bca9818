"""A task is its registry entry and its runner: one added by a module the config includes, without
editing the package, is planned for Table 1's rows and shown in the table."""

import json
import os
import sys

import pandas as pd
import pytest

from conftest import snakemake, study_path, tiny_workdir, write_config
from zephyr import config as zconfig
from zephyr import study
from zephyr.evaluation import tasks
from zephyr.report import table

#: A toy task: the mean length in characters of the GSM8K reference answers (its runner reads no model).
TOY = '''
from zephyr.evaluation import tasks
from zephyr.study import Column, Task


def answer_length(model, tokenizer, records, settings, reference):
    rows = [{"id": r.get("id"), "chars": len(r["answer"])} for r in records]
    return rows, {"chars": sum(r["chars"] for r in rows) / len(rows), "n": len(rows)}


tasks.register(Task("answer_length", "gsm8k", ("chars",), columns=(Column("Answer length", "chars"),)),
               answer_length)
'''


def _toy(marked: bool = False) -> study.Task:
    return study.Task("toy", "gsm8k", ("chars",), only_marked_rows=marked,
                      columns=(study.Column("Toy", "chars", 10, (study.TABLE1, study.QLORA)),))


@pytest.fixture
def registry():
    """The registry restored after the test: registering adds to it (the dicts every module shares)."""
    kept = dict(study.TASKS), dict(tasks.RUNNERS)
    yield
    for live, entries in zip((study.TASKS, tasks.RUNNERS), kept):
        live.clear()
        live.update(entries)


def test_a_registered_task_has_its_columns_rows_and_runner(registry):
    runner = object()
    tasks.register(_toy(), runner)
    assert tasks.RUNNERS["toy"] is runner
    assert list(study.table_columns(study.TABLE1))[-1] == "Toy"
    assert study.table_columns(study.QLORA)["Toy"] == ("toy", "chars", 10)
    assert "toy" in study.row_tasks({"variant": "M0"}) and "toy" in study.qlora_tasks()
    metrics = pd.DataFrame([{"model": "q", "variant": "M0", "format": "dense", "task": "toy", "metric": "chars",
                             "value": 1.234, "stderr": None, "n": 3}])
    shown = table.table1([{"label": "Q M0", "model": "q", "variant": "M0"}], metrics)
    assert shown.loc[0, "Toy"] == 12.34 and shown.loc[0, "HellaSwag"] == table.MISSING
    with pytest.raises(ValueError, match="'toy' is registered already"):
        tasks.register(_toy(), runner)


def test_a_task_shown_only_in_marked_rows_is_asked_for_by_its_name(registry):
    tasks.register(_toy(marked=True), object())
    assert "toy" in study.row_tasks({"variant": "M1", "toy": True})
    assert "toy" not in study.row_tasks({"variant": "M1", "reward": True})
    assert "reward" in study.row_tasks({"variant": "M1", "reward": True})


def test_an_unimportable_include_names_the_module():
    with pytest.raises(zconfig.ConfigError, match=r"cannot import 'no_such_task_module'") as caught:
        zconfig.validate({"evaluation": {"include": ["no_such_task_module"]}})
    assert caught.value.key == ("evaluation", "include")


def test_a_toy_task_module_reaches_the_dag_and_table1(tmp_path, registry, monkeypatch):
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "toy_tasks.py").write_text(TOY)
    # this process loads the config too (the study's paths), so it imports the module as the workflow does
    monkeypatch.syspath_prepend(str(modules))
    monkeypatch.delitem(sys.modules, "toy_tasks", raising=False)
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(modules), os.environ.get("PYTHONPATH")) if p)}
    workdir = tmp_path / "work"
    workdir.mkdir()
    config, _ = tiny_workdir(workdir)
    config["evaluation"] = {**config["evaluation"], "include": ["toy_tasks"], "answer_length": {"data": "gsm8k_eval"}}
    full = write_config(workdir, config, "toy.yaml")

    planned = snakemake(workdir, "-n", "--configfile", str(full), env=env).stdout
    for row in config["table1"]:
        assert study_path(workdir, full, "metrics", row["model"], row["variant"], "answer_length") in planned, row
    assert "answer_length-" not in planned  # measured on the dense weights only, and in no QLoRA column

    # Table 1 of its first row alone: what it needs is cheap to make (no training)
    small = write_config(workdir, {**config, "table1": config["table1"][:1]}, "toy-m0.yaml")
    target = study_path(workdir, small, "table", "table1")
    snakemake(workdir, target, "--cores", "2", "--configfile", str(small), env=env)
    answers = [len(r["answer"]) for r in json.loads((workdir / study_path(workdir, small, "mixture", "gsm8k_eval"))
                                                    .read_text())]
    shown = pd.read_csv(workdir / target)
    assert list(shown["Model"]) == [config["table1"][0]["label"]]
    assert shown.loc[0, "Answer length"] == round(sum(answers) / len(answers), 2)
    assert list(shown.columns)[-1] == "Answer length"
