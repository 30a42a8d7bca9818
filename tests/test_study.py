"""The study's vocabulary (zephyr.study) agrees with the code that implements it."""

from zephyr import study
from zephyr.evaluation import tasks


def test_every_task_has_a_runner_and_every_runner_a_task():
    assert tasks.RUNNERS.keys() == study.TASKS.keys()


def test_table1_reads_metrics_its_tasks_write():
    for column, (task, metric, _) in study.TABLE1.items():
        assert metric in study.TASKS[task].metrics, column


def test_form_names():
    assert study.form_name("M1-DS-cosine", "dense") == "M1-DS-cosine"
    assert [study.form_name("M0", p) for p in study.PRECISIONS] == ["M0-nf4", "M0-nf4-dq", "M0-int8"]
    assert "reward" in study.table1_tasks() and "reward" not in study.table1_tasks("M0")
