"""Sampling arithmetic: caps, seeds, exclusion by group, validation by group, ordered text."""

import csv
import json

import pytest

from conftest import ROOT
from zephyr import config as zconfig
from zephyr.data import mixtures


def sft_records(dataset, n, groups=None):
    return [
        {"id": f"{dataset}:{i}", "source": dataset, "instruction": f"{dataset} q{i}", "input": "", "output": f"a{i}",
         **({"group": f"g{i // groups}"} if groups else {})}
        for i in range(n)
    ]


def spec(components, **kw):
    return {"task": "sft", "seed": 7, "validation": 0.0, "exclude": [], "components": components, **kw}


def test_caps_take_min_of_cap_and_size_and_report_capped():
    records = {"a": sft_records("a", 50), "b": sft_records("b", 8)}
    train, val, stats = mixtures.draw("m", spec([{"dataset": "a", "cap": 20}, {"dataset": "b", "cap": 12}]), records)
    assert len(train) == 28 and val == []
    by = {s.dataset: s for s in stats}
    assert (by["a"].drawn, by["a"].capped) == (20, False)
    assert (by["b"].drawn, by["b"].capped, by["b"].available) == (8, True, 8)
    assert len({r["id"] for r in train}) == 28  # without replacement


def test_draw_is_seeded_shuffled_and_independent_per_component():
    records = {"a": sft_records("a", 100), "b": sft_records("b", 100)}
    one = mixtures.draw("m", spec([{"dataset": "a", "cap": 10}, {"dataset": "b", "cap": 10}]), records)[0]
    again = mixtures.draw("m", spec([{"dataset": "a", "cap": 10}, {"dataset": "b", "cap": 10}]), records)[0]
    assert one == again
    components = [{"dataset": "a", "cap": 10}, {"dataset": "b", "cap": 10}]
    other_seed = mixtures.draw("m", spec(components, seed=8), records)[0]
    assert {r["id"] for r in one} != {r["id"] for r in other_seed}
    # changing b's cap leaves a's draw as it was
    changed = mixtures.draw("m", spec([{"dataset": "a", "cap": 10}, {"dataset": "b", "cap": 30}]), records)[0]
    assert {r["id"] for r in one if r["source"] == "a"} == {r["id"] for r in changed if r["source"] == "a"}
    # concatenated then shuffled: sources interleave
    assert [r["source"] for r in one] != sorted(r["source"] for r in one)


def test_validation_split_is_by_group_and_near_fraction():
    records = {"a": sft_records("a", 200, groups=4)}
    train, val, stats = mixtures.draw("m", spec([{"dataset": "a"}], validation=0.05), records)
    assert 10 <= len(val) <= 13
    assert not {r["group"] for r in train} & {r["group"] for r in val}
    assert stats[0].train + stats[0].validation == 200


@pytest.mark.parametrize("n, share", [(9, 0.05), (19, 0.02), (3, 0.1)])
def test_a_validation_share_that_holds_out_nothing_is_an_error_naming_mixture_share_and_count(n, share):
    """round(share x n) is 0: the runs on the mixture would silently have no validation loss."""
    assert round(share * n) == 0
    with pytest.raises(mixtures.MixtureError, match=rf"mixture 'D_S': a validation share of {share} of its {n} "
                                                   r"records holds out none.*mixtures\.D_S\.validation"):
        mixtures.draw("D_S", spec([{"dataset": "a"}], validation=share), {"a": sft_records("a", n)})
    assert mixtures.draw("D_S", spec([{"dataset": "a"}]), {"a": sft_records("a", n)})[1] == []  # 0: none asked


def test_a_validation_share_that_leaves_no_training_record_names_mixture_share_and_count():
    """One group of 3: a share of 0.5 asks round(1.5) = 2 records, and the group holds out all 3."""
    records = {"a": sft_records("a", 3, groups=3)}
    with pytest.raises(mixtures.MixtureError, match=r"mixture 'D_L': a validation share of 0\.5 of 3 records in 1 "
                                                   r"groups leaves no training records: lower "
                                                   r"mixtures\.D_L\.validation"):
        mixtures.draw("D_L", spec([{"dataset": "a"}], validation=0.5), records)


def eval_spec(cap, task="hellaswag"):
    return {"task": task, "seed": 3, "validation": 0.0, "exclude": [], "exact": True,
            "components": [{"dataset": "h", "cap": cap}]}


@pytest.mark.parametrize("least, cap", [(50, 49), (50, 1), (20, 19), (7, 3)])
def test_an_evaluation_set_below_its_tasks_least_items_is_a_warning_naming_mixture_count_and_least(least, cap):
    records = {"h": sft_records("h", 100)}
    train, _, stats = mixtures.draw("hs", eval_spec(cap), records)
    found = mixtures.shortfalls("hs", train, stats, {"hellaswag": least})
    assert [(w["mixture"], w["part"], w["count"]) for w in found] == [("hs", "evaluation", cap)]
    assert f"{cap} items, fewer than the {least} hellaswag needs" in found[0]["warning"]
    assert "mixtures.hs.components" in found[0]["warning"]


@pytest.mark.parametrize("least, cap", [(50, 50), (50, 51), (20, 100)])
def test_an_evaluation_set_of_at_least_its_tasks_least_items_does_not_warn(least, cap):
    train, _, stats = mixtures.draw("hs", eval_spec(cap), {"h": sft_records("h", 100)})
    assert mixtures.shortfalls("hs", train, stats, {"hellaswag": least}) == []


def test_each_task_that_reads_a_set_holds_it_to_its_own_least_items():
    """The evaluated part is what the task reads (the mixture's `train` file), after any validation split."""
    records = {"h": sft_records("h", 40)}
    train, _, stats = mixtures.draw("e", {**eval_spec(40), "validation": 0.25}, records)
    assert len(train) == 40 - round(0.25 * 40)
    found = mixtures.shortfalls("e", train, stats, {"mcqa": 31, "gsm8k": 30, "hellaswag": 29})
    assert [(w["count"], w["warning"].split(" needs")[0]) for w in found] == [(30, "30 items, fewer than the 31 mcqa")]


def test_the_least_items_of_a_mixture_are_those_of_the_tasks_that_read_it():
    from zephyr import study

    evaluation = {"batch_size": 4, "hellaswag": {"data": "x"}, "mcqa": {"data": "x"}, "gsm8k": {"data": "y"},
                  "perplexity": {"data": "x", "window": 8}}
    assert study.least_items(evaluation, "x") == {"hellaswag": study.TASKS["hellaswag"].min_items,
                                                  "mcqa": study.TASKS["mcqa"].min_items}
    assert study.least_items(evaluation, "D_S") == {}


def test_a_cap_above_its_source_is_a_warning_naming_mixture_dataset_cap_and_count():
    records = {"a": sft_records("a", 50), "b": sft_records("b", 8, groups=2)}
    excluded = sft_records("b", 2, groups=2)  # group g0: b:0 and b:1
    train, _, stats = mixtures.draw("D_S", spec([{"dataset": "a", "cap": 50}, {"dataset": "b", "cap": 12}]), records,
                                    excluded)
    found = mixtures.shortfalls("D_S", train, stats)
    assert [(w["mixture"], w["part"], w["count"]) for w in found] == [("D_S", "b", 8 - 2)]
    assert found[0]["warning"] == "cap 12 on b exceeds its 6 records left after 2 excluded: all 6 taken"


def test_exclusion_removes_whole_groups():
    records = {"a": sft_records("a", 40, groups=2)}
    held = [records["a"][0]]  # group g0 holds records 0 and 1
    train, _, stats = mixtures.draw("m", spec([{"dataset": "a"}]), records, excluded=held)
    assert {r["id"] for r in train}.isdisjoint({"a:0", "a:1"})
    assert stats[0].excluded == 2 and stats[0].drawn == 38


def test_nothing_left_to_draw_is_an_error():
    records = {"a": sft_records("a", 2)}
    with pytest.raises(mixtures.MixtureError, match="'a' has no records left"):
        mixtures.draw("m", spec([{"dataset": "a"}]), records, excluded=records["a"])


def test_text_keeps_order_and_takes_a_prefix():
    records = {"w": [{"id": f"w:{i}", "source": "w", "text": f"line {i}"} for i in range(10)]}
    train, _, _ = mixtures.draw("t", {"task": "text", "seed": 1, "components": [{"dataset": "w", "cap": 4}]}, records)
    assert [r["text"] for r in train] == ["line 0", "line 1", "line 2", "line 3"]


def test_draw_files_writes_alpaca_json_stats_and_validation(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in sft_records("a", 40)))
    out = {k: tmp_path / f"m.{k}" for k in ("train", "validation", "stats")}
    mixtures.draw_files("m", spec([{"dataset": "a", "cap": 30}], validation=0.1), {"a": path}, [], out)
    train = json.loads(out["train"].read_text())
    assert len(train) == 27 and set(train[0]) >= {"instruction", "input", "output"}
    assert len(json.loads(out["validation"].read_text())) == 3
    rows = list(csv.DictReader(out["stats"].open()))
    assert rows[0]["dataset"] == "a" and rows[0]["drawn"] == "30" and rows[0]["train"] == "27"


def test_draw_files_writes_its_warnings_and_the_report_table_gathers_every_mixtures(tmp_path):
    for name, n in (("a", 40), ("h", 30)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sft_records(name, n)))
    outs = {}
    for mixture, components, least in (("D_S", [{"dataset": "a", "cap": 45}], None),
                                       ("hs", [{"dataset": "h", "cap": 30}], {"hellaswag": 50}),
                                       ("fine", [{"dataset": "a", "cap": 10}], {"hellaswag": 10})):
        outs[mixture] = {k: tmp_path / f"{mixture}.{k}" for k in ("train", "validation", "stats", "warnings")}
        mixtures.draw_files(mixture, spec(components), {c["dataset"]: tmp_path / f"{c['dataset']}.jsonl"
                                                        for c in components}, [], outs[mixture], least=least)
    assert outs["fine"]["warnings"].read_text() == "mixture,part,count,warning\n"  # a header when nothing warns
    mixtures.gather_warnings([outs[m]["warnings"] for m in outs], tmp_path / "warnings.csv")
    rows = list(csv.DictReader((tmp_path / "warnings.csv").open()))
    assert [(r["mixture"], r["part"], r["count"]) for r in rows] == [("D_S", "a", "40"), ("hs", "evaluation", "30")]
    assert rows[0]["warning"] == "cap 45 on a exceeds its 40 records: all 40 taken"
    assert rows[1]["warning"].startswith("30 items, fewer than the 50 hellaswag needs")


@pytest.fixture
def default():
    return zconfig.load(ROOT / "config.yaml")


def test_the_config_s_warnings_reach_the_report_table(tmp_path, default):
    """A warmup at or past a run's steps (zephyr.config.config_warnings) is a row of warnings.csv."""
    default["hyperparameters"]["sft_cosine"]["warmup_steps"] = 24  # every sft_cosine run trains 24 steps
    found = zconfig.config_warnings(default)
    assert found and all(w.startswith("hyperparameters.sft_cosine.warmup_steps: run M1-") for w in found)
    assert mixtures.gather_warnings([], tmp_path / "warnings.csv", found) == len(found)
    rows = list(csv.DictReader((tmp_path / "warnings.csv").open()))
    assert [(r["part"], r["warning"]) for r in rows] == [("config", w) for w in found]


def test_the_report_table_of_no_warnings_is_its_header(tmp_path):
    path = tmp_path / "m.warnings.csv"
    path.write_text("mixture,part,count,warning\n")
    assert mixtures.gather_warnings([path], tmp_path / "warnings.csv") == 0
    assert (tmp_path / "warnings.csv").read_text() == "mixture,part,count,warning\n"
    assert mixtures.gather_warnings([], tmp_path / "none.csv") == 0
    assert (tmp_path / "none.csv").read_text() == "mixture,part,count,warning\n"


def test_records_of_a_mixture_share_one_set_of_keys():
    records = {"a": [
        {"id": "a:0", "source": "a", "instruction": "q0", "input": "", "output": "r0", "system": "be brief"},
        {"id": "a:1", "source": "a", "instruction": "q1", "input": "", "output": "r1", "history": [["h", "i"]]},
        {"id": "a:2", "source": "a", "instruction": "q2", "input": "", "output": "r2", "group": "g"},
    ]}
    train, _, _ = mixtures.draw("m", spec([{"dataset": "a"}]), records)
    by_id = {r["id"]: r for r in train}
    keys = {"id", "source", "instruction", "input", "output", "system", "history", "group"}
    assert all(set(r) == keys for r in train)
    assert by_id["a:0"]["system"] == "be brief" and by_id["a:0"]["history"] == [] and by_id["a:0"]["group"] == ""
    assert by_id["a:1"]["system"] == "" and by_id["a:1"]["history"] == [["h", "i"]]
    assert by_id["a:2"]["group"] == "g"
    # an empty group still means "a group of one": the validation split and exclusion are unchanged
    assert mixtures.group_key(by_id["a:0"]) == "a:0"


def write_mixture(directory, name, train, validation):
    (directory / f"{name}.json").write_text(json.dumps(train))
    (directory / f"{name}.validation.json").write_text(json.dumps(validation))


def test_dataset_info_maps_the_columns_the_records_carry(tmp_path):
    plain = sft_records("a", 3)
    write_mixture(tmp_path, "D_S", plain, plain[:1])
    pair = {"id": "p", "source": "p", "instruction": "q", "input": "", "chosen": "c", "rejected": "r", "system": "s"}
    write_mixture(tmp_path, "DPO", [pair, {**pair, "id": "p2"}], [])
    write_mixture(tmp_path, "gsm8k_eval",
                  [{"id": "g", "source": "g", "question": "q", "answer": "a", "final": "1"}], [])
    info = mixtures.dataset_info({"D_S": "sft", "DPO": "preference", "gsm8k_eval": "gsm8k"}, tmp_path)
    # the empty DPO validation split and the evaluation set are not registered
    assert set(info) == {"D_S", "D_S_validation", "DPO"}
    # no record of D_S carries system or history: mapping them is LlamaFactory's KeyError: 'history'
    assert info["D_S"] == {"file_name": "D_S.json", "formatting": "alpaca",
                           "columns": {"prompt": "instruction", "query": "input", "response": "output"}}
    assert info["D_S_validation"]["file_name"] == "D_S.validation.json"
    assert info["DPO"] == {"file_name": "DPO.json", "formatting": "alpaca", "ranking": True,
                           "columns": {"prompt": "instruction", "query": "input", "chosen": "chosen",
                                       "rejected": "rejected", "system": "system"}}


def test_dataset_info_refuses_a_key_only_some_records_carry(tmp_path):
    records = sft_records("a", 3)
    records[1]["system"] = "s"
    write_mixture(tmp_path, "D_S", records, [])
    with pytest.raises(mixtures.MixtureError, match="D_S.json: 1 of 3 records carry 'system'"):
        mixtures.dataset_info({"D_S": "sft"}, tmp_path)


#: LlamaFactory's alpaca column names for the record keys that a mixture's records may or may not carry.
OPTIONAL_COLUMNS = {"system": "system", "history": "history"}


def build_mixtures(config_path, workdir):
    """The data stage of a config, in process: raw data, records, every mixture, dataset_info.json."""
    from zephyr import config as zconfig
    from zephyr import study
    from zephyr.data import records, sources

    cfg = zconfig.load(config_path)
    for name, ds in cfg["datasets"].items():
        sources.fetch_dataset(name, ds["source"], workdir / "raw" / name)
        records.format_dataset(name, workdir / "raw" / name, workdir / "records" / f"{name}.jsonl",
                               ds["format"], ds.get("options"))
    out = workdir / "mixtures"
    done = set()
    while len(done) < len(cfg["mixtures"]):  # a mixture after the ones it excludes
        for name, mix in cfg["mixtures"].items():
            if name not in done and set(mix["exclude"]) <= done:
                mixtures.draw_files(
                    name, mix, {c["dataset"]: workdir / "records" / f"{c['dataset']}.jsonl" for c in mix["components"]},
                    [out / f"{m}{s}.json" for m in mix["exclude"] for s in ("", ".validation")],
                    {"train": out / f"{name}.json", "validation": out / f"{name}.validation.json",
                     "stats": out / f"{name}.stats.csv", "warnings": out / f"{name}.warnings.csv"},
                    least=study.least_items(cfg["evaluation"], name))
                done.add(name)
    tasks = {name: mix["task"] for name, mix in cfg["mixtures"].items()}
    return cfg, out, tasks, mixtures.dataset_info(tasks, out)


@pytest.mark.parametrize("config_path", ["config.yaml", "tests/fixtures/tiny.yaml"])
def test_dataset_info_contract_for_every_mixture_of_the_configs(tmp_path, monkeypatch, config_path):
    from conftest import FIXTURES, ROOT

    monkeypatch.chdir(tmp_path)  # the tiny config's local source is a relative path
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "truthy_dpo.jsonl").write_bytes((FIXTURES / "datasets" / "truthy_dpo.jsonl").read_bytes())
    cfg, out, tasks, info = build_mixtures(ROOT / config_path, tmp_path)

    expected = {}  # every non-empty file of an SFT or ranking mixture, and nothing else
    for name, task in tasks.items():
        for suffix, file_name in (("", f"{name}.json"), ("_validation", f"{name}.validation.json")):
            records = json.loads((out / file_name).read_text())
            # one set of keys per mixture file, whatever the task
            assert len({tuple(sorted(r)) for r in records}) <= 1, file_name
            if task in ("sft", "preference") and records:
                expected[name + suffix] = (file_name, task, set(records[0]))
    assert set(info) == set(expected)
    assert {"D_S", "DPO", "reward_pairs"} <= set(info) and "reward_pairs_validation" not in info

    # an evaluation set warns exactly where it holds fewer items than a task that reads it needs
    least = {"hellaswag": 50, "mcqa": 50, "reward": 50, "gsm8k": 20}  # the registry's min_items (zephyr/study.py)
    for name in tasks:
        held = len(json.loads((out / f"{name}.json").read_text()))
        short = [task for task, spec in cfg["evaluation"].items()
                 if isinstance(spec, dict) and spec.get("data") == name and held < least.get(task, 0)]
        rows = list(csv.DictReader((out / f"{name}.warnings.csv").open()))
        assert [r["warning"].split(" needs")[0] for r in rows if r["part"] == "evaluation"] == [
            f"{held} items, fewer than the {least[task]} {task}" for task in short], name
    if config_path == "config.yaml":  # sized so that every score rests on enough items
        assert not any(list(csv.DictReader(p.open())) for p in out.glob("*.warnings.csv"))

    for entry_name, entry in info.items():
        file_name, task, keys = expected[entry_name]
        assert entry["file_name"] == file_name and entry["formatting"] == "alpaca"
        columns = entry["columns"]
        assert set(columns.values()) <= keys, f"{entry_name} maps a column its records lack"
        for column, key in OPTIONAL_COLUMNS.items():
            assert (columns.get(column) == key) == (key in keys), f"{entry_name}: {column}"
        assert columns["prompt"] == "instruction" and columns["query"] == "input"
        if task == "preference":
            assert entry["ranking"] is True
            assert (columns["chosen"], columns["rejected"]) == ("chosen", "rejected") and "response" not in columns
        else:
            assert "ranking" not in entry and columns["response"] == "output"

    if config_path == "config.yaml":
        # the default's DPO mixes Orca pairs (with a system prompt) and EPFL pairs (without): every
        # record now carries `system`, empty where the source had none, and the map names it
        dpo = json.loads((out / "DPO.json").read_text())
        assert 0 < sum(r["system"] == "" for r in dpo) < len(dpo)
        assert info["DPO"]["columns"]["system"] == "system"
        assert "history" not in info["D_S"]["columns"] and "system" not in info["D_S"]["columns"]
