"""A study's draws (zephyr.studies.draws, rules/draws.smk): draw k moves the training seeds only, and takes the base
models' outputs from draw 1 instead of computing them again."""

import copy
import os
import re
from pathlib import Path

import pytest

from conftest import ROOT, load_yaml, snakemake, write_config
from zephyr import config as zconfig
from zephyr import files, lock, paths, studies


def test_a_draw_moves_the_training_seeds_and_nothing_else(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    written = studies.draws(ROOT / "config.yaml", 3)
    assert written == [Path("results/draws3.yaml"), Path("results/zephyr-default-draw2/config.yaml"),
                       Path("results/zephyr-default-draw3/config.yaml")]
    original = load_yaml(ROOT / "config.yaml")
    # draw 1: the config itself with `draws: 3`, the same study in the same tree
    assert load_yaml(written[0]) == {**original, "draws": 3}
    assert studies.load(written[0])[1].results == "results"

    expected = copy.deepcopy(original)
    del expected["outputs"]
    expected["experiment"] = "zephyr-default-draw3"
    expected["draw"] = {"number": 3, "of": "results/draws3.yaml", "base": "results"}
    # the training mixtures' seeds, + 2 x 1000
    for mixture, seed in {"D_S": 2001, "D_L": 2002, "DPO": 2004, "MCQA": 2005}.items():
        expected["mixtures"][mixture]["seed"] = seed
    for spec in expected["variants"].values():  # written nowhere: the schema's 0, moved
        spec["seed"] = 2000
    drawn = load_yaml(written[2])
    assert drawn == expected
    # what stays: the evaluation sets (reward_pairs, which DPO excludes, too), the raw data, the scratch model
    assert {m: drawn["mixtures"][m]["seed"] for m in studies.evaluation_sets(zconfig.load(ROOT / "config.yaml"))} == {
        "reward_pairs": 3, "gsm8k_eval": 6, "hellaswag_eval": 7, "mcqa_eval": 8, "wikitext_eval": 9}
    assert [spec["source"]["seed"] for spec in drawn["datasets"].values()] == [
        spec["source"]["seed"] for spec in original["datasets"].values()]
    assert drawn["models"]["bloom"]["source"]["seed"] == 0

    times = [p.stat().st_mtime_ns for p in written]
    assert studies.draws(ROOT / "config.yaml", 3) == written
    assert [p.stat().st_mtime_ns for p in written] == times  # unchanged: nothing newer to rerun on


def test_a_data_seed_moves_and_a_mixture_an_evaluation_set_excludes_stays(tiny_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tiny_config["hyperparameters"]["sft"]["data_seed"] = 5
    tiny_config["mixtures"]["mcqa_eval"]["exclude"] = ["MCQA"]  # the evaluation set's draw reads MCQA's
    config = zconfig.validate(tiny_config)
    assert sorted(studies.training_seeds(config)) == [
        (("hyperparameters", "sft", "data_seed"), 5),
        (("mixtures", "DPO", "seed"), 3), (("mixtures", "D_S", "seed"), 1),
        (("variants", "M1-DS-cosine", "seed"), 0), (("variants", "M1-DS-qlora", "seed"), 0),
        (("variants", "M2-DS", "seed"), 0)]


def test_one_draw_is_the_config_itself(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert studies.draws(ROOT / "config.yaml") == [ROOT / "config.yaml"]  # no `draws` key: 1
    assert studies.draws(ROOT / "config.yaml", 1) == [ROOT / "config.yaml"]
    assert not list(tmp_path.iterdir())
    config = {**load_yaml(ROOT / "config.yaml"), "draws": 2}
    mine = write_config(tmp_path, config, "mine.yaml")
    assert studies.draws(mine) == [mine, Path("results/zephyr-default-draw2/config.yaml")]  # the file's own 2
    assert not Path("results/draws2.yaml").exists()
    assert studies.other_draws(zconfig.load(mine)) == [Path("results/zephyr-default-draw2/config.yaml")]
    assert studies.other_draws(zconfig.load("results/zephyr-default-draw2/config.yaml")) == []

    assert studies.main(["draws", "3", str(mine)]) == 0  # the run order, one per line, draw 1 first
    assert capsys.readouterr().out.splitlines() == ["results/draws3.yaml", "results/zephyr-default-draw2/config.yaml",
                                                    "results/zephyr-default-draw3/config.yaml"]
    assert studies.main(["draws", str(mine)]) == 0
    assert capsys.readouterr().out.splitlines() == [str(mine), "results/zephyr-default-draw2/config.yaml"]


def test_an_edited_draw_is_refused_naming_both_files(tiny_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first_file = write_config(tmp_path, {**tiny_config, "draws": 2}, "tiny.yaml")
    _, second_file = studies.draws(first_file)
    first, second = zconfig.load(first_file), zconfig.load(second_file)
    assert studies.draw_base(second, second_file, paths.Layout(second)).results == "results"
    assert studies.other_draw_configs(first, first_file) == [second]

    edited = load_yaml(second_file)
    edited["evaluation"]["gsm8k"]["max_new_tokens"] = 16
    edited_file = write_config(tmp_path, edited, "edited.yaml")
    edited = zconfig.load(edited_file)
    message = f"{edited_file} is not draw 2 of tiny.yaml: evaluation.gsm8k.max_new_tokens differs"
    with pytest.raises(zconfig.ConfigError, match=re.escape(message)):
        studies.draw_base(edited, edited_file, paths.Layout(edited))
    write_config(tmp_path / "results" / "zephyr-tiny-draw2", load_yaml(edited_file), "config.yaml")
    with pytest.raises(zconfig.ConfigError, match=re.escape(f"results/zephyr-tiny-draw2/config.yaml is not draw 2 "
                                                             f"of {first_file}: evaluation.gsm8k.max_new_tokens")):
        studies.other_draw_configs(first, first_file)
    os.unlink("results/zephyr-tiny-draw2/config.yaml")
    with pytest.raises(zconfig.ConfigError, match="zephyr-tiny-draw2/config.yaml is missing.*draws 2 CONFIG"):
        studies.other_draw_configs(first, first_file)
    with pytest.raises(zconfig.ConfigError, match="a draw runs alone"):
        zconfig.validate({**tiny_config, "draws": 2, "draw": {"number": 2, "of": "tiny.yaml", "base": "results"}})


def test_each_draw_of_a_hub_study_reads_draw_1s_lock(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first_file, second_file = studies.draws(ROOT / "config" / "paper.yaml", 2)
    for written in (first_file, second_file):  # links: the same pinned commits, the same shared folders
        assert lock.lock_path(written).resolve() == (ROOT / "config" / "paper.lock.yaml").resolve()
    first, second = studies.load(first_file), studies.load(second_file)
    assert [second[1].base_model(m) for m in second[0]["models"]] == [first[1].base_model(m)
                                                                      for m in first[0]["models"]]
    assert studies.draw_base(second[0], second_file, second[1]).results == "results/zephyr-paper"


def test_draw_1s_files_are_linked_whole_once_the_evaluation_sets_are_the_same(tmp_path):
    first, mine = tmp_path / "results", tmp_path / "results" / "x-draw2"
    for name, text in {"metrics/q/M0/scores.json": "{}", "metrics/q/M0/scores.manifest.json": "{}",
                       "models/q/M0-nf4/manifest.json": "{}", "models/q/M0-nf4/model.safetensors": "w",
                       "mixtures/eval.json": "[1]"}.items():
        (first / name).parent.mkdir(parents=True, exist_ok=True)
        (first / name).write_text(text)
    (mine / "mixtures").mkdir(parents=True)
    (mine / "mixtures" / "eval.json").write_text("[1]")
    same = [(mine / "mixtures" / "eval.json", first / "mixtures" / "eval.json")]
    files.share([(first / "metrics/q/M0/scores.json", mine / "metrics/q/M0/scores.json")], same)
    assert (mine / "metrics/q/M0/scores.json").samefile(first / "metrics/q/M0/scores.json")
    assert (mine / "metrics/q/M0/scores.manifest.json").samefile(first / "metrics/q/M0/scores.manifest.json")
    (mine / "models/q/M0-nf4").mkdir(parents=True)  # as Snakemake makes an output's folder
    files.share([(first / "models/q/M0-nf4/manifest.json", mine / "models/q/M0-nf4/manifest.json")], folders=True)
    assert sorted(p.name for p in (mine / "models/q/M0-nf4").iterdir()) == ["manifest.json", "model.safetensors"]
    assert (mine / "models/q/M0-nf4/model.safetensors").samefile(first / "models/q/M0-nf4/model.safetensors")
    assert not [p for p in tmp_path.rglob(".*")]  # no temporary file left

    (mine / "mixtures" / "eval.json").write_text("[2]")
    with pytest.raises(files.IntegrityError, match=f"{mine}/mixtures/eval.json differs from {first}/mixtures/eval"):
        files.share([(first / "metrics/q/M0/scores.json", mine / "metrics/q/M1.json")], same)
    assert not (mine / "metrics/q/M1.json").exists()


def m0_jobs(dry_run: str) -> dict[str, int]:
    """The jobs of a `snakemake -n` that make a base model's (M0) outputs, counted by rule."""
    counts = {}
    for rule, body in re.findall(r"^(?:local)?rule (\w+):\n((?:    .*\n)*)", dry_run, re.M):
        if re.search(r"wildcards: .*variant=M0(,|$)", body, re.M):
            counts[rule] = counts.get(rule, 0) + 1
    return counts


@pytest.mark.workflow
def test_draw_2_takes_the_base_models_outputs_from_draw_1(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first_file, second_file = studies.draws(ROOT / "config.yaml", 2)
    config, first = studies.load(first_file)
    # draw 1's files of the base models (M0), as its run leaves them, and its evaluation sets
    made = [p for (m, v, f, t), p in first.all_metrics().items() if v == "M0"]
    made += [first.task_metrics(m, v, t, f, "jsonl") for m, v, f, t in first.all_metrics() if v == "M0"]
    made += [first.pair_scores(m, "M0") for m in config["models"]]
    made += [first.export(m, "M0", f) for m in config["models"] for f in config["exports"]["formats"]]
    made += [first.mixture(m) for m in studies.evaluation_sets(config)]
    for path in made:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text("draw 1")

    out = snakemake(tmp_path, "-n", "--configfile", str(second_file)).stdout
    # 2 models x 3 tasks (hellaswag, gsm8k, mcqa); perplexity dense, nf4, int8; Qwen's pair scores (M0-DPO's
    # reference); 2 models x 2 formats
    assert m0_jobs(out) == {"draw1_evaluation": 6, "draw1_perplexity": 6, "draw1_pair_scores": 1, "draw1_export": 4}
    assert "rule train_adapter:" in out  # the draw's own training runs

    # draw 1 but its claims: what `make run DRAWS=2` runs of it before draw 2
    alone = snakemake(tmp_path, "draw_alone", "-n", "--configfile", str(first_file)).stdout
    assert "rule claims:" not in alone and "rule study_record:" not in alone and "rule table1:" in alone


@pytest.mark.workflow
def test_the_draws_evaluation_sets_are_the_same_files_and_their_training_mixtures_are_not(tiny_config, tmp_path):
    first_file = write_config(tmp_path, {**tiny_config, "draws": 2}, "tiny.yaml")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        _, second_file = studies.draws(first_file.name)
        layouts = [studies.load(f)[1] for f in (first_file.name, second_file)]
    for layout, config_file in zip(layouts, (first_file.name, second_file)):
        snakemake(tmp_path, "--cores", "2", *(layout.mixture(m) for m in tiny_config["mixtures"]),
                  "--configfile", str(config_file))
    first, second = ({m: (tmp_path / layout.mixture(m)).read_bytes() for m in tiny_config["mixtures"]}
                     for layout in layouts)
    assert {m for m in first if first[m] == second[m]} == {"reward_pairs", "gsm8k_eval", "hellaswag_eval",
                                                           "mcqa_eval", "wikitext_eval"}
