"""`python -m zephyr.plan`: each run's records, global batch, optimizer steps and warmup, from the config."""

import math

from conftest import ROOT
from zephyr import config as zconfig
from zephyr import plan


def test_the_paper_s_runs_in_numbers():
    config = zconfig.load(ROOT / "config" / "paper.yaml")
    lines = {line["variant"].split(" ")[0]: line for line in plan.runs(config)}
    sft = config["hyperparameters"]["sft_cosine"]
    d_s = config["mixtures"]["D_S"]
    planned = sum(min(x for x in (config["datasets"][c["dataset"]]["rows"], c["cap"]) if x is not None)
                  for c in d_s["components"])
    records = planned - round(d_s["validation"] * planned)
    m1 = lines["M1-DS-cosine"]
    assert m1["global batch"] == 16 * 8 == 128
    assert m1["records"] == records and m1["steps/epoch"] == math.ceil(records / 128)
    assert m1["steps"] == math.ceil(sft["num_train_epochs"] * math.ceil(records / 128))
    assert m1["warmup"] == sft["warmup_steps"]


def test_max_steps_and_a_warmup_fraction(tiny_config):
    tiny_config["hyperparameters"]["sft"] = {**tiny_config["hyperparameters"]["sft"], "max_steps": 40,
                                             "warmup_steps": 0.1}
    zconfig.validate(tiny_config)
    line = next(line for line in plan.runs(tiny_config) if tiny_config["hyperparameters"][
        tiny_config["variants"][line["variant"].split(" ")[0]]["hyperparameters"]]["trainer"] == "sft")
    assert line["steps"] == 40 and line["warmup"] == 4 and line["epochs"] == "-"
    text = plan.render(plan.runs(tiny_config))
    assert text.splitlines()[0].split()[:3] == ["variant", "trainer", "data"]


def test_d_l_is_planned_from_what_formatting_keeps(tmp_path):
    """WikiQA's only_correct keeps 1,040 of 20,360 rows: D_L plans from the recorded `records`, and from
    the formatted records' own count once they exist."""
    config = zconfig.load(ROOT / "config" / "paper.yaml")
    d_l = config["mixtures"]["D_L"]

    def records_of(lines):
        return next(line["records"] for line in lines if line["variant"].startswith("M1-DL-cosine"))

    def expected(wiki_qa):
        held = {**{c["dataset"]: min(config["datasets"][c["dataset"]]["rows"], c["cap"]) for c in d_l["components"]},
                "wiki_qa": min(wiki_qa, 12000)}
        total = sum(held.values())
        return total - round(d_l["validation"] * total)

    assert config["datasets"]["wiki_qa"]["records"] == 1040
    assert records_of(plan.runs(config)) == expected(1040)
    (tmp_path / "wiki_qa.jsonl").write_text("".join(f'{{"id": {i}}}\n' for i in range(987)))
    counted = plan.formatted_counts(config, tmp_path)
    assert counted == {"wiki_qa": 987}
    assert records_of(plan.runs(config, counted)) == expected(987)
