"""Sampling arithmetic: caps, seeds, exclusion by group, validation by group, ordered text."""

import csv
import json

import pytest

from zephyr.data import mixtures


def sft_records(dataset, n, groups=None):
    return [
        {"id": f"{dataset}:{i}", "source": dataset, "instruction": f"q{i}", "input": "", "output": f"a{i}",
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
    other_seed = mixtures.draw("m", spec([{"dataset": "a", "cap": 10}, {"dataset": "b", "cap": 10}], seed=8), records)[0]
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
    mixtures.draw_files("m", spec([{"dataset": "a", "cap": 30}], validation=0.1), [path], [], out)
    train = json.loads(out["train"].read_text())
    assert len(train) == 27 and set(train[0]) >= {"instruction", "input", "output"}
    assert len(json.loads(out["validation"].read_text())) == 3
    rows = list(csv.DictReader(out["stats"].open()))
    assert rows[0]["dataset"] == "a" and rows[0]["drawn"] == "30" and rows[0]["train"] == "27"


def test_dataset_info_registers_trainable_mixtures_for_llamafactory():
    info = mixtures.dataset_info({"D_S": "sft", "DPO": "preference", "gsm8k_eval": "gsm8k"})
    assert set(info) == {"D_S", "D_S_validation", "DPO", "DPO_validation"}
    assert info["DPO"]["ranking"] is True and info["DPO"]["columns"]["chosen"] == "chosen"
    assert info["D_S"] == {"file_name": "D_S.json", "formatting": "alpaca", "columns": mixtures.LLAMAFACTORY_COLUMNS["sft"]}
