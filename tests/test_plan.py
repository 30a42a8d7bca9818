"""`python -m zephyr.plan`: each run's records, global batch, optimizer steps and warmup, from the config."""

import math
from pathlib import Path

from conftest import ROOT
from zephyr import config as zconfig
from zephyr import paths, plan


def test_the_paper_s_runs_in_numbers():
    config = zconfig.load(ROOT / "config" / "paper.yaml")
    lines = {line["variant"].split(" ")[0]: line for line in plan.runs(config)}
    sft = config["hyperparameters"]["sft_cosine"]
    d_s = config["mixtures"]["D_S"]
    planned = sum(min(x for x in (config["datasets"][c["dataset"]]["rows"], c["cap"]) if x is not None)
                  for c in d_s["components"])
    records = planned - round(d_s["validation"] * planned)
    m1 = lines["M1-DS-cosine"]
    # Table 2's "Batch Size 16 / Gradient Accumulation 8" read as 16 a step (2 x 8; config/paper.yaml says why)
    batch = sft["per_device_train_batch_size"] * sft["gradient_accumulation_steps"]
    assert m1["global batch"] == batch == 2 * 8
    assert m1["records"] == records and m1["steps/epoch"] == math.ceil(records / batch)
    assert m1["steps"] == math.ceil(sft["num_train_epochs"] * math.ceil(records / batch))
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


def test_d_l_is_planned_from_what_formatting_keeps(tmp_path, monkeypatch):
    """D_L plans WikiQA from its rows (LlamaFactory's registration keeps all 20,360), and from the
    formatted records' own count once they exist."""
    config = zconfig.load(ROOT / "config" / "paper.yaml")
    d_l = config["mixtures"]["D_L"]

    def records_of(lines):
        return next(line["records"] for line in lines if line["variant"].startswith("M1-DL-cosine"))

    def expected(wiki_qa):
        held = {**{c["dataset"]: min(config["datasets"][c["dataset"]]["rows"], c["cap"]) for c in d_l["components"]},
                "wiki_qa": min(wiki_qa, 12000)}
        total = sum(held.values())
        return total - round(d_l["validation"] * total)

    assert config["datasets"]["wiki_qa"]["options"] == {"only_correct": False}
    assert records_of(plan.runs(config)) == expected(config["datasets"]["wiki_qa"]["rows"])
    layout = paths.Layout(config, ROOT / "config" / "paper.lock.yaml")
    monkeypatch.chdir(tmp_path)
    mine = Path(layout.records("wiki_qa"))
    mine.parent.mkdir(parents=True)
    mine.write_text("".join(f'{{"id": {i}}}\n' for i in range(987)))
    # another config's wiki_qa records (another fingerprint) are not counted
    (mine.parent / "0123456789ab.jsonl").write_text('{"id": 0}\n')
    counted = plan.formatted_counts(config, layout)
    assert counted == {"wiki_qa": 987}
    assert records_of(plan.runs(config, counted)) == expected(987)


def test_the_paper_plan_counts_no_record_of_the_default(tmp_path, monkeypatch):
    """The default and the paper config share dataset names (metamathqa, goat, ...): the default's
    formatted records must not stand in for the paper's."""
    default = zconfig.load(ROOT / "config.yaml")
    paper = zconfig.load(ROOT / "config" / "paper.yaml")
    monkeypatch.chdir(tmp_path)
    for name in set(default["datasets"]) & set(paper["datasets"]):
        path = Path(paths.Layout(default).records(name))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text('{"id": 0}\n')
    assert set(default["datasets"]) & set(paper["datasets"])
    assert plan.formatted_counts(paper, paths.Layout(paper, ROOT / "config" / "paper.lock.yaml")) == {}
