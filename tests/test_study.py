"""The study's vocabulary (zephyr.study) agrees with the code that implements it."""

from pathlib import Path

import yaml

from zephyr import paths, study
from zephyr.evaluation import tasks


def test_every_task_has_a_runner_and_every_runner_a_task():
    assert tasks.RUNNERS.keys() == study.TASKS.keys()


def test_every_table_reads_metrics_its_tasks_write():
    for table in (study.TABLE1, study.MCQA, study.QLORA):
        for column, (task, metric, _) in study.table_columns(table).items():
            assert metric in study.TASKS[task].metrics, column


def test_the_tables_columns_come_from_the_registry_in_its_order():
    assert list(study.table_columns(study.TABLE1)) == ["HellaSwag", "BLEU-4", "ROUGE-1", "ROUGE-2", "ROUGE-L",
                                                       "Reward Accuracy"]
    assert study.table_columns(study.MCQA) == {"MCQA": ("mcqa", "acc_norm", 100)}
    assert list(study.table_columns(study.QLORA)) == ["HellaSwag", "BLEU-4", "ROUGE-1", "ROUGE-2", "ROUGE-L", "MCQA",
                                                      "Perplexity"]


def test_the_paper_s_cells_are_table1_columns():
    shown = set(study.table_columns(study.TABLE1))
    assert all(set(row) <= shown for row in study.PAPER_TABLE1.values())
    assert study.PAPER_TABLE1["Qwen M1 (D_S)"]["Reward Accuracy"] == 0.57
    assert "Reward Accuracy" not in study.PAPER_TABLE1["Qwen M0"]


def test_formats_and_the_paths_built_from_them():
    assert study.QUANTIZED == ("nf4", "nf4-dq", "int8") and study.STORED == ("dense", *study.QUANTIZED)
    assert [f for f in study.FORMATS if study.FORMATS[f].bits == 4] == ["nf4", "nf4-dq"]
    assert study.AS_TRAINED in study.FORMATS and study.AS_TRAINED not in study.STORED  # no folder of its own
    layout = paths.Layout({"experiment": "x", "outputs": "out"})
    assert layout.variant_model("q", "M2-DS") == "out/models/q/M2-DS/manifest.json"
    assert [layout.variant_model("q", "M0", f, None) for f in study.QUANTIZED] == [
        "out/models/q/M0-nf4", "out/models/q/M0-nf4-dq", "out/models/q/M0-int8"]
    assert layout.metrics("q", "M0", "perplexity", "int8") == "out/metrics/q/M0/perplexity-int8.csv"
    assert layout.task_metrics("q", "M0", "gsm8k") == "out/metrics/q/M0/gsm8k.csv"
    assert "reward" in study.table1_tasks() and "reward" not in study.table1_tasks("M0")


def test_the_schema_offers_the_quantized_formats():
    schema = yaml.safe_load((Path(__file__).parents[1] / "schemas" / "config.schema.yaml").read_text())
    assert schema["properties"]["exports"]["properties"]["formats"]["items"]["enum"] == list(study.QUANTIZED)
    qlora = schema["$defs"]["variant"]["properties"]["qlora"]["enum"]
    assert [f for f in qlora if f] == [f for f in study.QUANTIZED if study.FORMATS[f].bits == 4]


def test_reward_accuracy_is_evaluated_only_for_rows_that_show_it():
    assert "reward" in study.row_tasks({"variant": "M2-DS", "reward": True})
    assert "reward" not in study.row_tasks({"variant": "M1-DL-cosine"})
    assert "hellaswag" in study.row_tasks({"variant": "M1-DL-cosine"})
    assert "reward" not in study.row_tasks({"variant": "M0", "reward": True})  # no parent to compare with


def test_qlora_runs_stay_out_of_the_paper_s_figures():
    variants = {"M1": {"models": ["q"], "hyperparameters": "sft", "qlora": None},
                "M1-qlora": {"models": ["q", "b"], "hyperparameters": "sft", "qlora": "nf4"}}
    config = {"experiment": "x", "variants": variants, "hyperparameters": {"sft": {"trainer": "sft"}}}
    outputs = paths.Layout(config).figure_outputs()
    assert set(outputs) == {"learning_rates", "sft_q"}  # no figure for b, whose only SFT run is QLoRA
    assert list(study.paper_runs(variants)) == ["M1"]
    assert study.qlora_tasks() == ["hellaswag", "gsm8k", "mcqa", "perplexity"]


def test_task_settings_give_every_task_the_study_precision():
    evaluation = {"batch_size": 6, "gsm8k": {"data": "g", "max_new_tokens": 9},
                  "perplexity": {"data": "w", "window": 32}}
    bf16 = {"weights": "bfloat16", "compute": "plain"}
    assert study.task_settings(evaluation, "gsm8k", bf16) == {"batch_size": 6, "precision": bf16, "data": "g",
                                                              "max_new_tokens": 9}
    assert study.task_settings(evaluation, "perplexity", bf16) == {"batch_size": 6, "precision": bf16, "data": "w",
                                                                   "window": 32}
