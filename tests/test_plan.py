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
