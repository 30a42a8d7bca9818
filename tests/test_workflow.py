"""The workflow as a user meets it: dry runs of both configs, a tiny end-to-end run, precise reruns."""

import contextlib
import hashlib
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT, load_yaml, run, shared_file, snakemake, study_path, write_config
from zephyr import paths, studies, study

pytestmark = pytest.mark.workflow


def job_counts(output: str) -> dict[str, int]:
    """Parse the job table of `snakemake -n --quiet rules`."""
    counts = {}
    for line in output.splitlines():
        match = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
        if match and match[1] != "total":
            counts[match[1]] = int(match[2])
    return counts


def digests(directory):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.glob("*")) if p.is_file()}


def expected_jobs(config: dict) -> dict[str, int]:
    """The jobs a config's whole study needs, counted from the config itself."""
    trained = sum(len(spec["models"]) for spec in config["variants"].values())
    exports = config["exports"]
    exported = sum(len(config["models"]) if v == "M0" else len(config["variants"][v]["models"])
                   for v in exports["variants"])
    rows = config["table1"]
    qlora = [(m, v) for v, spec in config["variants"].items() if spec.get("qlora") for m in spec["models"]]
    exported_pairs = {(m, v) for v in exports["variants"]
                      for m in (config["models"] if v == "M0" else config["variants"][v]["models"])}
    reward_rows = {(r["model"], r["variant"]) for r in rows if r.get("reward") and r["variant"] != "M0"}
    scored = reward_rows | {(m, config["variants"][v]["parent"]) for m, v in reward_rows}
    return {
        "fetch_dataset": len(config["datasets"]),
        "format_records": len(config["datasets"]),
        "draw_mixture": len(config["mixtures"]),
        "check_leakage": 1,
        "fetch_model": len(config["models"]),
        "train_adapter": trained,
        "merge_adapter": trained,
        "export_quantized": exported * len(exports["formats"]),
        # Table 1's rows on its three tasks that need no parent, reward accuracy for the rows that show
        # it (never M0), the QLoRA variants on the three
        "evaluate": len({(r["model"], r["variant"]) for r in rows}) * 3 + len(reward_rows) + 3 * len(qlora),
        # each model's pair log-probabilities once: as a reward row's policy, or as its reference
        **({"score_pairs": len(scored)} if scored else {}),
        "evaluate_perplexity": exported * (1 + len(exports["formats"])) + len(set(qlora) - exported_pairs),
        "table1": 1, "findings": 1, "claims": 1, "quantization": 1, "figures": 1, "dataset_info": 1,
        "study_warnings": 1,
        "study_record": 1, "all": 1,
        **({"qlora_table": 1, "evaluate_as_trained": len(study.qlora_tasks()) * len(qlora)} if qlora else {}),
    }


@pytest.mark.parametrize("path", ["config.yaml", "config/paper.yaml"])
def test_dry_run_plans_the_whole_study(tmp_path, path):
    config = load_yaml(ROOT / path)
    out = snakemake(tmp_path, "-n", "--quiet", "rules", "--configfile", str(ROOT / path)).stdout
    assert job_counts(out) == expected_jobs(config)


def test_paper_dry_run_names_every_dataset_model_and_output(tmp_path):
    paper = load_yaml(ROOT / "config" / "paper.yaml")
    out = snakemake(tmp_path, "-n", "--configfile", str(ROOT / "config" / "paper.yaml")).stdout
    for dataset in paper["datasets"]:
        assert re.search(rf"resources/datasets/{dataset}/[0-9a-f]{{12}}/manifest\.json", out)
    assert len(paper["datasets"]) == 33
    for variant, spec in paper["variants"].items():
        if any(row["variant"] == variant for row in paper["table1"]):
            for model in spec["models"]:
                assert f"results/zephyr-paper/models/{model}/{variant}/manifest.json" in out
    assert "results/zephyr-paper/table1.csv" in out
    table1 = snakemake(tmp_path, "results/zephyr-paper/table1.csv", "-n", "--configfile",
                       str(ROOT / "config" / "paper.yaml")).stdout
    for row in paper["table1"]:
        assert f"results/zephyr-paper/metrics/{row['model']}/{row['variant']}/hellaswag.csv" in table1


def test_a_configfile_replaces_the_default_instead_of_merging(tmp_path, tiny_config):
    """Snakemake merges --configfile into `configfile:` key by key; Zephyr must not."""
    assert set(load_yaml(ROOT / "config.yaml")["datasets"]) - set(tiny_config["datasets"])
    config = write_config(tmp_path, tiny_config)
    out = snakemake(tmp_path, "-n", "--configfile", str(config)).stdout
    planned = set(re.findall(r"resources/datasets/(\w+)/[0-9a-f]{12}/manifest\.json", out))
    assert planned == set(tiny_config["datasets"])


def test_tiny_data_stage_reruns_nothing_and_reproduces_bytes(tmp_path, tiny_config):
    config = write_config(tmp_path, tiny_config)
    target = "results/mixtures/dataset_info.json"
    snakemake(tmp_path, target, "--cores", "2", "--configfile", str(config))
    mixtures = tmp_path / "results" / "mixtures"
    for name in tiny_config["mixtures"]:
        assert (mixtures / f"{name}.json").exists() and (mixtures / f"{name}.stats.csv").exists()
    assert shared_file(tmp_path, "logs", "fetch_dataset/epfl", "*.log").exists()
    first = digests(mixtures)

    again = snakemake(tmp_path, target, "-n", "--configfile", str(config)).stdout
    assert "Nothing to be done" in again

    shutil.rmtree(tmp_path / "results")
    shutil.rmtree(tmp_path / "resources")
    snakemake(tmp_path, target, "--cores", "2", "--configfile", str(config))
    assert digests(mixtures) == first

    # a changed cap reruns that mixture (and the index over mixtures), nothing upstream
    tiny_config["mixtures"]["D_S"]["components"][0]["cap"] = 5
    write_config(tmp_path, tiny_config)
    counts = job_counts(snakemake(tmp_path, "-n", "--quiet", "rules", "--configfile", str(config)).stdout)
    assert counts.get("draw_mixture") == 1 and "fetch_dataset" not in counts and "format_records" not in counts


def test_tiny_study_end_to_end_to_table1_and_report(tiny_study):
    tmp_path, tiny_config = tiny_study, load_yaml(tiny_study / "config.test.yaml")  # run once, shared
    table1 = pd.read_csv(tmp_path / "results" / "table1.csv")
    assert table1["Model"].tolist() == [row["label"] for row in tiny_config["table1"]]
    assert table1.loc[0, "Reward Accuracy"] == "–"
    assert list(table1.columns) == ["Model", "HellaSwag", "BLEU-4", "ROUGE-1", "ROUGE-2", "ROUGE-L", "Reward Accuracy"]
    assert table1.loc[1, "Reward Accuracy"] == "–"  # a trained row the config does not mark
    numeric = pd.to_numeric(table1.loc[2, ["HellaSwag", "BLEU-4", "ROUGE-L", "Reward Accuracy"]])
    assert numeric.notna().all() and 0 <= numeric["Reward Accuracy"] <= 1
    stderr = pd.read_csv(tmp_path / "results" / "table1_stderr.csv")
    assert list(stderr.columns) == list(table1.columns) and float(stderr.loc[2, "HellaSwag"]) >= 0
    mcqa = pd.read_csv(tmp_path / "results" / "mcqa.csv")
    assert list(mcqa.columns) == ["Model", "MCQA", "MCQA ±"] and 0 <= float(mcqa.loc[2, "MCQA"]) <= 100
    quantization = pd.read_csv(tmp_path / "results" / "quantization.csv")
    assert set(quantization["format"]) == {"dense", "nf4"}
    nf4 = quantization.set_index(["model", "format"]).loc[("qwen", "nf4")]
    assert nf4["size_mb"] < quantization.set_index(["model", "format"]).loc[("qwen", "dense"), "size_mb"]
    for name in ("figure1_learning_rates", "figure_sft_losses_qwen", "figure_sft_losses_bloom", "figure4_dpo",
                 "quantization"):
        assert (tmp_path / "results" / "figures" / f"{name}.png").stat().st_size > 5000
    summary = json.loads((tmp_path / "results" / "adapters" / "qwen" / "M2-DS" / "summary.json").read_text())
    assert summary["trainer"] == "dpo" and summary["base"].endswith("results/models/qwen/M1-DS-cosine")
    card = (tmp_path / "results" / "models" / "qwen" / "M2-DS" / "README.md").read_text()
    assert "M1-DS-cosine" in card and "DPO" in card

    # the QLoRA variant scored as it was trained (its 4-bit base with the adapter) and as merged
    qlora = pd.read_csv(tmp_path / "results" / "qlora.csv")
    assert [m.split(" (")[1] for m in qlora["Model"]] == ["as trained: 4-bit base + adapter)", "merged, dense)"]
    assert pd.to_numeric(qlora.loc[0, ["HellaSwag", "BLEU-4", "ROUGE-L", "MCQA", "Perplexity"]]).notna().all()
    trained = pd.read_csv(tmp_path / "results" / "metrics" / "qwen" / "M1-DS-qlora" / "perplexity-as-trained.csv")
    # the bare variant, its format in a column of its own
    assert trained[["variant", "format"]].drop_duplicates().values.tolist() == [["M1-DS-qlora", "as-trained"]]

    # the report's findings from this finished study, and each DPO run's validation accuracy with its stderr
    found = pd.read_csv(tmp_path / "results" / "findings.csv")
    assert list(found.columns) == ["claim", "place", "compared", "measured", "difference", "stderr", "low", "high",
                                   "df", "margin", "n", "verdict", "seed_variance"]
    assert len(found) and set(found["verdict"]) <= {"reproduced", "contradicted", "not resolved"}
    dpo = pd.read_csv(tmp_path / "results" / "dpo_validation.csv").set_index("variant").loc["M2-DS"]
    validation = json.loads((tmp_path / "results" / "mixtures" / "DPO.validation.json").read_text())
    assert dpo["n"] == len(validation) and dpo["paper"] == 0.79
    assert dpo["k"] == round(dpo["accuracy"] * dpo["n"])
    z = 1.959964  # the Wilson interval's half-width over z, from its formula
    center, half = (dpo["k"] + z * z / 2) / (dpo["n"] + z * z), z * (dpo["k"] * (dpo["n"] - dpo["k"]) / dpo["n"]
                                                                       + z * z / 4) ** 0.5 / (dpo["n"] + z * z)
    assert center - half >= 0 and dpo["stderr"] == pytest.approx(half / z, abs=1e-5)

    # the tiny HellaSwag set is below the items its task needs: a warning in the report's table, not a stop
    warnings = pd.read_csv(tmp_path / "results" / "warnings.csv")
    assert list(warnings.columns) == ["mixture", "part", "count", "warning"]
    name = tiny_config["evaluation"]["hellaswag"]["data"]
    drawn = sum(c["cap"] for c in tiny_config["mixtures"][name]["components"])  # exact: every cap is met
    assert tiny_config["mixtures"][name]["exact"] and drawn < 50
    shown = warnings[(warnings["mixture"] == name) & (warnings["part"] == "evaluation")]
    assert shown["count"].tolist() == [drawn] and "fewer than the 50 hellaswag needs" in shown["warning"].iloc[0]
    # and a row for each run whose max_length cut more than 5 % of its records, by the counts its summary records
    summaries = [json.loads(p.read_text()) for p in (tmp_path / "results" / "adapters").glob("*/*/summary.json")]
    cut = {f"run {s['run']}": s["truncation"]["cut"] for s in summaries
           if s["truncation"]["cut"] > 0.05 * s["truncation"]["measured"]}
    runs = warnings[warnings["part"].str.startswith("run ")]
    assert cut and dict(zip(runs["part"], runs["count"])) == cut  # the tiny tokenizer's SFT records run long

    config = tmp_path / "config.test.yaml"
    snakemake(tmp_path, "--report", "results/report.html", "--configfile", str(config))
    html = (tmp_path / "results" / "report.html").read_text(errors="replace")
    assert "table1.csv" in html and "warnings.csv" in html

    # A changed DPO beta reruns that training and what depends on it, nothing else.
    tiny_config["hyperparameters"]["dpo"]["beta"] = 0.2
    config = write_config(tmp_path, tiny_config, "config.beta.yaml")  # the shared run's own config unchanged
    counts = job_counts(snakemake(tmp_path, "-n", "--quiet", "rules", "--configfile", str(config)).stdout)
    assert counts == {"train_adapter": 1, "merge_adapter": 1, "score_pairs": 1, "evaluate": 4, "table1": 1,
                      "figures": 1, "findings": 1, "claims": 1, "study_warnings": 1, "study_record": 1, "all": 1}


UPSTREAM = ("fetch_dataset", "format_records", "draw_mixture", "check_leakage", "fetch_model", "dataset_info")


def test_the_precision_is_recorded_and_a_changed_one_reruns_what_it_changes_and_nothing_upstream(tiny_study):
    tmp_path, tiny_config = tiny_study, load_yaml(tiny_study / "config.test.yaml")
    metrics = pd.concat([pd.read_csv(p) for p in (tmp_path / "results" / "metrics").rglob("*.csv")])
    assert set(metrics["dtype"]) == {"float32"} and set(metrics["compute"]) == {"plain"}
    assert set(metrics["device"]) == {"cpu"}
    for adapter in (tmp_path / "results" / "adapters").glob("*/*/summary.json"):
        summary = json.loads(adapter.read_text())
        assert summary["precision"] == {"weights": "float32", "compute": "plain"}
        assert {"gradient_checkpointing", "micro_batch", "lm_head", "padding_free"} <= set(summary["speed"])
    card = (tmp_path / "results" / "models" / "qwen" / "M2-DS" / "README.md").read_text()
    assert "## Precision and speed" in card and "| weights dtype | float32 |" in card
    assert "| speed: lm_head | plain |" in card

    tiny_config["precision"] = {"weights": "float32", "compute": "bf16-autocast"}
    config = write_config(tmp_path, tiny_config, "config.autocast.yaml")  # the shared run's own config unchanged
    counts = job_counts(snakemake(tmp_path, "-n", "--quiet", "rules", "--configfile", str(config)).stdout)
    expected = {rule: n for rule, n in expected_jobs(tiny_config).items() if rule not in UPSTREAM}
    assert counts == expected


def test_speed_settings_forced_the_other_way_give_the_same_table1_and_verdicts(tiny_study, tmp_path):
    """Speed is how fast, never what: every `auto` knob forced against what it chose (checkpointing on,
    half the micro-batch with twice the accumulation, TRL's fused head for the plain one, padded batches
    where auto joined them) retrains everything, and Table 1 at its printed precision and the effect
    verdicts stay the same."""
    from zephyr.report import compare, effects

    shutil.copytree(tiny_study, tmp_path / "run", symlinks=True)
    workdir = tmp_path / "run"
    tiny_config = load_yaml(workdir / "config.test.yaml")
    summaries = sorted((workdir / "results" / "adapters").glob("*/*/summary.json"))
    chosen = {p.parent.name: json.loads(p.read_text())["speed"] for p in summaries}  # variant → a run's plan
    for name, hyper in tiny_config["hyperparameters"].items():
        runs = [plan for variant, plan in chosen.items() if tiny_config["variants"][variant]["hyperparameters"] == name]
        assert runs and all(not plan["gradient_checkpointing"] and plan["lm_head"] == "plain" for plan in runs)
        hyper["speed"] = {"gradient_checkpointing": True, "lm_head": "fused", "padding_free": False,
                          "micro_batch": hyper["per_device_train_batch_size"] // 2}
    config = write_config(workdir, tiny_config, "config.forced.yaml")
    before = {name: (workdir / "results" / name).read_text() for name in ("table1.csv", "mcqa.csv")}

    def verdicts():
        with contextlib.chdir(workdir):
            return [c.holds for c in effects.check(tiny_config, compare.read(tiny_config, paths.Layout(tiny_config)))]

    verdicts_before = verdicts()
    findings_before = pd.read_csv(workdir / "results" / "findings.csv")["verdict"].tolist()
    snakemake(workdir, "--cores", "2", "--configfile", str(config))
    assert {json.loads(p.read_text())["speed"]["micro_batch"] for p in summaries} == {2, 1}  # retrained, forced
    assert {name: (workdir / "results" / name).read_text() for name in before} == before
    assert pd.read_csv(workdir / "results" / "findings.csv")["verdict"].tolist() == findings_before
    assert verdicts() == verdicts_before


def test_a_malformed_local_file_fails_its_job_naming_file_and_line(tmp_path, tiny_config):
    (tmp_path / "data" / "truthy_dpo.jsonl").write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n{oops\n')
    config = write_config(tmp_path, tiny_config)
    target = study_path(tmp_path, config, "dataset", "truthy_dpo", "manifest.json")
    result = snakemake(tmp_path, target, "--cores", "1", "--configfile", str(config), check=False)
    assert result.returncode != 0
    log = shared_file(tmp_path, "logs", "fetch_dataset/truthy_dpo", "*.log").read_text()
    assert "data/truthy_dpo.jsonl: line 2: not valid JSON" in log
    assert not (tmp_path / target).exists()


def test_a_config_error_stops_before_any_job(tmp_path, tiny_config):
    tiny_config["mixtures"]["D_S"]["components"].append({"dataset": "nowhere"})
    config = write_config(tmp_path, tiny_config)
    result = snakemake(tmp_path, "--cores", "1", "--configfile", str(config), check=False)
    assert result.returncode != 0
    assert "mixtures.D_S.components[2].dataset: 'nowhere' is not a key of datasets" in result.stdout + result.stderr
    assert not (tmp_path / "resources").exists()


def test_lint_and_format():
    lint = snakemake(ROOT, "--lint", "--configfile", str(ROOT / "config.yaml"), check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    import sys
    from pathlib import Path

    snakefmt = Path(sys.executable).with_name("snakefmt")
    files = [str(ROOT / "Snakefile"), *map(str, sorted((ROOT / "rules").glob("*.smk")))]
    result = run([str(snakefmt), "--check", *files], timeout=300)
    assert result.returncode == 0, result.stderr


def test_two_studies_in_one_directory_share_inputs_and_leave_each_other_alone(tiny_study, tmp_path):
    """A second study (another experiment name, so its own tree) beside the finished tiny study: it
    reuses the shared raw data, models and records (same fingerprints), writes nothing of the first's,
    and the first reruns nothing after it."""
    shutil.copytree(tiny_study, tmp_path / "run", symlinks=True)
    workdir = tmp_path / "run"
    first_config = workdir / "config.test.yaml"
    first = {p: digests_of(workdir / p) for p in ("results", "resources", "logs", "benchmarks")}
    other = {k: v for k, v in load_yaml(first_config).items() if k != "outputs"}
    other["experiment"] = "tiny-b"
    second_config = write_config(workdir, other, "config.b.yaml")
    counts = job_counts(snakemake(workdir, "-n", "--quiet", "rules", "--configfile", str(second_config)).stdout)
    assert not set(counts) & {"fetch_dataset", "format_records", "fetch_model"}  # shared: already made
    snakemake(workdir, "--cores", "2", "--configfile", str(second_config))

    second = workdir / "results" / "tiny-b"
    assert (second / "table1.csv").is_file() and (second / "logs").is_dir() and (second / "benchmarks").is_dir()
    after = {p: digests_of(workdir / p) for p in first}
    after["results"] = {k: v for k, v in after["results"].items() if not k.startswith("tiny-b/")}
    assert after == first  # the first study's files, byte for byte; the shared ones too
    assert "Nothing to be done" in snakemake(workdir, "-n", "--configfile", str(first_config)).stdout

    with contextlib.chdir(workdir):
        listed = {s["folder"]: s for s in studies.find()}
        assert set(listed) == {"results", "results/tiny-b"} and all(s["complete"] for s in listed.values())
        config, layout = studies.load(second_config)
        assert studies.check_current(config, layout)["experiment"] == "tiny-b"
        # the first study's tree read with the second's config: refused, both fingerprints named
        with pytest.raises(studies.StudyError, match="holds study 'zephyr-tiny'"):
            studies.check_current(config, paths.Layout({**config, "outputs": "results"}))


def digests_of(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_draw_moves_every_seed_into_its_own_study(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    drawn = studies.draw(ROOT / "config.yaml", 2)
    assert drawn == Path("results/zephyr-default-seeds2/config.yaml")
    original, moved = load_yaml(ROOT / "config.yaml"), load_yaml(drawn)

    def seeds(node, where=""):
        if isinstance(node, dict):
            return {k: v for key, value in node.items() for k, v in seeds(value, f"{where}.{key}").items()} | (
                {where: node["seed"]} if "seed" in node else {})
        return {k: v for i, value in enumerate(node) for k, v in seeds(value, f"{where}[{i}]").items()} if isinstance(
            node, list) else {}

    # every seed written moves by 1000, and so does every seed the schema defaults (each variant's 0)
    assert seeds(original) and {k: v + 1000 for k, v in seeds(original).items()}.items() <= seeds(moved).items()
    assert {k: v for k, v in seeds(moved).items() if k not in seeds(original)} == {
        f".variants.{v}": 1000 for v in original["variants"] if "seed" not in original["variants"][v]}
    config, layout = studies.load(drawn)
    assert config["experiment"] == "zephyr-default-seeds2" and layout.results == "results/zephyr-default-seeds2"
    assert studies.draw(ROOT / "config.yaml", 2).stat().st_mtime_ns == drawn.stat().st_mtime_ns  # unchanged

