"""zephyr.studies and zephyr.paths.Layout: each study its own tree, shared files by fingerprint only."""

import json

import pytest

from conftest import ROOT
from zephyr import config as zconfig
from zephyr import files, paths, studies


def touch(path, text="x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_a_named_study_writes_under_its_own_folder_and_the_default_keeps_the_plain_layout():
    default = zconfig.load(ROOT / "config.yaml")
    paper = paths.Layout(zconfig.load(ROOT / "config" / "paper.yaml"), ROOT / "config" / "paper.lock.yaml")
    plain = paths.Layout(default)
    assert plain.table("table1") == "results/table1.csv" and plain.log("table1") == "logs/table1.log"
    assert paper.table("table1") == "results/zephyr-paper/table1.csv"
    assert paper.log("table1") == "results/zephyr-paper/logs/table1.log"
    assert paper.benchmark("figures") == "results/zephyr-paper/benchmarks/figures.tsv"
    # the same dataset name from two sources: two shared paths
    assert plain.dataset("metamathqa", "data.parquet") != paper.dataset("metamathqa", "data.parquet")
    assert plain.records("metamathqa").startswith("resources/records/metamathqa/")
    # the same source and settings under another experiment name: the same shared path
    other = paths.Layout({**default, "experiment": "again", "outputs": "results/again"})
    assert other.records("metamathqa") == plain.records("metamathqa") and other.table("x") == "results/again/x.csv"


def test_a_fingerprint_of_another_config_is_refused_by_name():
    layout = paths.Layout(zconfig.load(ROOT / "config.yaml"))
    with pytest.raises(ValueError, match="resources/datasets/goat/0123456789ab belongs to another config"):
        layout.shared_params("datasets", "goat", "0123456789ab")
    mine = layout.dataset("goat", "manifest.json").split("/")[3]  # resources/datasets/goat/{fingerprint}/...
    assert layout.shared_params("datasets", "goat", mine)["source"]["kind"] == "generator"


def test_a_changed_local_file_moves_its_shared_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    touch(tmp_path / "pairs.jsonl", '{"a": 1}\n')
    config = {"experiment": "x", "datasets": {"p": {"source": {"kind": "local", "path": "pairs.jsonl"}, "rows": None,
                                                    "allow_row_change": False, "format": "f", "options": {}}}}
    before = paths.Layout(config).records("p"), paths.Layout(config).dataset("p", "data.parquet")
    touch(tmp_path / "pairs.jsonl", '{"a": 22}\n')
    after = paths.Layout(config).records("p"), paths.Layout(config).dataset("p", "data.parquet")
    assert before[0] != after[0] and before[1] != after[1]


def test_the_plain_study_owns_its_folders_not_the_trees_beside_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("results/table1.csv", "results/mixtures/D_S.json", "logs/table1.log", "benchmarks/t.tsv",
                 "results/zephyr-paper/table1.csv", "resources/records/goat/0123456789ab.jsonl"):
        touch(tmp_path / name)
    plain = paths.Layout({"experiment": "zephyr-default", "outputs": "results"})
    studies.remove(plain)
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == ["resources/records/goat/0123456789ab.jsonl", "results/zephyr-paper/table1.csv"]


def test_studies_are_listed_with_their_fingerprint_and_completeness(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = {"experiment": "a", "outputs": "results/a"}
    touch(tmp_path / "results/a/table1.csv")
    files.write_json("results/a/study.json", paths.study_record(config, ["a.yaml"], ["results/a/table1.csv"]))
    touch(tmp_path / "results/b/mixtures/D_S.json")  # started, never finished
    listed = {s["folder"]: s for s in studies.find()}
    assert listed["results/a"]["complete"] and listed["results/a"]["config_fingerprint"] == paths.fingerprint(config)
    assert not listed["results/b"]["complete"] and listed["results/b"]["experiment"] == "?"
    assert studies.by_name("a")[1].results == "results/a"
    (tmp_path / "results/a/table1.csv").unlink()
    assert not {s["folder"]: s for s in studies.find()}["results/a"]["complete"]


def test_a_tree_of_another_configuration_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = {"experiment": "a", "outputs": "results/a", "seed": 1}
    layout = paths.Layout(config)
    with pytest.raises(studies.StudyError, match="results/a/study.json is missing"):
        studies.check_current(config, layout)
    touch(tmp_path / "results/a/table1.csv")
    files.write_json(layout.study_file(), paths.study_record(config, ["a.yaml"], ["results/a/table1.csv"]))
    assert studies.check_current(config, layout)["experiment"] == "a"
    changed = {**config, "seed": 2}
    with pytest.raises(studies.StudyError, match=f"fingerprint {paths.fingerprint(config)}.*this config's is "
                                                 f"{paths.fingerprint(changed)}"):
        studies.check_current(changed, layout)
    assert json.loads((tmp_path / "results/a/study.json").read_text())["config_files"] == ["a.yaml"]
