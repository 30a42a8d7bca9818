"""No silent wrong result from the data or a stored file (issue 32): a held-out item in a training set, a
duplicate across the split, a tie, a cut answer, a chat template without its generation prompt or EOS,
and an adapter, mixture, records file or pair scores swapped after they were written."""

import csv
import json
import logging
import shutil

import pytest

import tinymodels
from conftest import FIXTURES, ROOT
from zephyr import files, studies
from zephyr import verify as zverify
from zephyr.data import formats, mixtures, records
from zephyr.evaluation import tasks
from zephyr.model import build, cards, merge, modeldir, prompts, training, truncation

# ---- leakage -----------------------------------------------------------------------------------------


def pairs(source, n, offset=0, text="What is {a} plus 1?"):
    return [{"id": f"{source}:{a}", "source": source, "instruction": text.format(a=a), "input": "",
             "chosen": f"It is {a + 1}.", "rejected": f"It is {a + 3}."} for a in range(offset, offset + n)]


def study(evaluation_reward="reward_pairs", exclude=("reward_pairs",)):
    """The default's shape in small: SFT then DPO, reward accuracy on held-out pairs of the same source."""
    return {
        "mixtures": {
            "D_S": {"task": "sft", "validation": 0.1},
            "reward_pairs": {"task": "preference", "validation": 0.0},
            "DPO": {"task": "preference", "validation": 0.25, "exclude": list(exclude)},
            "gsm8k_eval": {"task": "gsm8k", "validation": 0.0},
        },
        "variants": {"M1": {"parent": "M0", "data": "D_S"}, "M2": {"parent": "M1", "data": "DPO"}},
        "evaluation": {"batch_size": 4, "reward": {"data": evaluation_reward}, "gsm8k": {"data": "gsm8k_eval"}},
    }


def parts(train, validation=None):
    return lambda mixture, part: (train if part == "train" else validation or {}).get(mixture, [])


def test_the_plan_checks_each_evaluation_set_and_validation_split_against_what_trained_before_it():
    plan = {(c["held_out"], c["part"], c["trained"]) for c in mixtures.leakage_plan(study())}
    assert plan == {
        ("reward_pairs", "train", "D_S"), ("reward_pairs", "train", "DPO"),
        ("gsm8k_eval", "train", "D_S"), ("gsm8k_eval", "train", "DPO"),
        ("D_S", "validation", "D_S"), ("DPO", "validation", "DPO"),
        ("DPO", "validation", "D_S"),  # M2 validates on DPO's split and was trained from M1, trained on D_S
    }


def test_the_reward_pairs_pointed_at_the_dpo_mixture_are_refused():
    dpo = pairs("epfl", 8)
    plan = mixtures.leakage_plan(study(evaluation_reward="DPO"))
    with pytest.raises(mixtures.LeakageError) as err:
        mixtures.check_leakage(plan, parts({"DPO": dpo, "D_S": [], "gsm8k_eval": []}))
    message = str(err.value)
    assert ("DPO (evaluation set (evaluation.reward.data)) shares 8 of its 8 items with training mixture DPO "
            "(trained by M2): e.g. DPO item epfl:0 and DPO item epfl:0, normalized 'what is 0 plus 1?'") in message
    assert "point evaluation.reward.data at a mixture no variant trains on" in message


def test_dropping_exclude_is_refused_and_the_copy_found_through_case_space_and_unicode_forms():
    held = pairs("epfl", 4)
    # the same questions, as another dump of the source writes them: case, doubled and no-break spaces,
    # a full-width digit (NFKC folds it) and a zero-width space
    trained = pairs("epfl", 2, text="WHAT  is\u00a0{a} plus\u200b １?") + pairs("epfl", 6, offset=10)
    plan = mixtures.leakage_plan(study(exclude=()))
    with pytest.raises(mixtures.LeakageError) as err:
        mixtures.check_leakage(plan, parts({"reward_pairs": held, "DPO": trained, "D_S": [], "gsm8k_eval": []}))
    message = str(err.value)
    assert "reward_pairs (evaluation set (evaluation.reward.data)) shares 2 of its 4 items with training mixture " \
           "DPO (trained by M2): e.g. reward_pairs item epfl:0 and DPO item epfl:0" in message
    assert "list reward_pairs in mixtures.DPO.exclude" in message


def test_a_validation_split_holding_what_the_parent_trained_on_is_refused():
    sft = [{"id": f"s:{i}", "source": "s", "instruction": f"What is {i} plus 1?", "input": "", "output": "x"}
           for i in range(5)]
    plan = mixtures.leakage_plan(study())
    with pytest.raises(mixtures.LeakageError, match=r"DPO_validation \(validation split of M2\) shares 1 of its 2 "
                                                    r"items with training mixture D_S \(trained on by M1, which M2 is "
                                                    r"trained from\).*list D_S in mixtures\.DPO\.exclude"):
        mixtures.check_leakage(plan, parts({"D_S": sft, "DPO": pairs("e", 3, offset=20), "reward_pairs": [],
                                            "gsm8k_eval": []}, {"DPO": pairs("e", 1, offset=4) + pairs("e", 1, 30)}))


def test_a_long_held_out_text_is_shortened_in_the_message():
    long = "Explain " + "very " * 40 + "slowly."
    plan = mixtures.leakage_plan(study())
    held = [{"id": "g:0", "source": "g", "question": long, "answer": "1 #### 1", "final": "1"}]
    with pytest.raises(mixtures.LeakageError) as err:
        mixtures.check_leakage(plan, parts({"gsm8k_eval": held, "D_S": [{"id": "s:0", "source": "s",
                                                                          "instruction": long, "output": "x"}]}))
    assert "normalized 'explain very very" in str(err.value) and "...'" in str(err.value)
    assert long.casefold() not in str(err.value)


@pytest.mark.parametrize("config_path", ["config.yaml", "tests/fixtures/tiny.yaml"])
def test_the_configs_hold_no_leak_and_the_check_writes_its_table(tmp_path, monkeypatch, config_path):
    from test_mixtures import build_mixtures

    monkeypatch.chdir(tmp_path)  # the tiny config's local source is a relative path
    (tmp_path / "data").mkdir()
    shutil.copy(FIXTURES / "datasets" / "truthy_dpo.jsonl", tmp_path / "data" / "truthy_dpo.jsonl")
    cfg, out, _, _ = build_mixtures(ROOT / config_path, tmp_path)
    plan = mixtures.leakage_plan(cfg)
    names = {m for c in plan for m in (c["held_out"], c["trained"])}
    files_of = {m: {"train": out / f"{m}.json", "validation": out / f"{m}.validation.json"} for m in names}
    rows = mixtures.check_leakage_files(plan, files_of, tmp_path / "leakage.csv")
    assert rows and all(r["shared"] == 0 for r in rows)
    table = list(csv.DictReader((tmp_path / "leakage.csv").open()))
    assert {(r["held_out"], r["part"], r["trained"]) for r in table} >= {("reward_pairs", "train", "DPO"),
                                                                           ("gsm8k_eval", "train", "D_S")}
    # with DPO's exclude dropped, its draw takes held-out reward pairs: refused
    cfg["mixtures"]["DPO"]["exclude"] = []
    mixtures.draw_files("DPO", cfg["mixtures"]["DPO"],
                        {c["dataset"]: tmp_path / "records" / f"{c['dataset']}.jsonl"
                         for c in cfg["mixtures"]["DPO"]["components"]}, [],
                        {"train": out / "DPO.json", "validation": out / "DPO.validation.json",
                         "stats": out / "DPO.stats.csv"})
    with pytest.raises(mixtures.LeakageError, match=r"reward_pairs \(evaluation set \(evaluation\.reward\.data\)\) "
                                                    r"shares \d+ of its \d+ items with training mixture DPO"):
        mixtures.check_leakage_files(plan, files_of, tmp_path / "leakage2.csv")


# ---- duplicates and ties at the draw --------------------------------------------------------------


def sft(i, text=None, output=None, **extra):
    return {"id": f"a:{i}", "source": "a", "instruction": text or f"Question {i}?", "input": "",
            "output": output or f"Answer {i}.", **extra}


def test_duplicates_in_a_dataset_are_dropped_before_the_split_counted_and_logged(tmp_path, caplog):
    rows = [sft(i) for i in range(40)]
    rows += [sft(40 + i, text=f"  question {i}?", output=f"ANSWER {i}.") for i in range(5)]  # copies, re-spaced
    rows += [sft(50, text="Question 1?", output="Another answer.")]  # same question, another answer
    path = tmp_path / "a.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = {k: tmp_path / f"m.{k}" for k in ("train", "validation", "stats")}
    out["manifest"] = tmp_path / "m.manifest.json"  # where a reader of m.train looks (`mixtures.manifest_of`)
    spec = {"task": "sft", "seed": 3, "validation": 0.5, "exclude": [], "components": [{"dataset": "a"}]}
    with caplog.at_level(logging.WARNING):
        mixtures.draw_files("m", spec, {"a": path}, [], out)
    assert "mixture m, a: 5 of its 46 records are exact duplicates of an earlier record (same normalized text): " \
           "dropped before drawing and splitting" in caplog.text
    stats = list(csv.DictReader(out["stats"].open()))[0]
    assert (stats["duplicates"], stats["drawn"]) == ("5", "41")
    assert json.loads(out["manifest"].read_text())["duplicates_dropped"] == {"a": 5}
    train, validation = json.loads(out["train"].read_text()), json.loads(out["validation"].read_text())
    sides = [{mixtures.prompt_key(r) for r in side} for side in (train, validation)]
    assert not sides[0] & sides[1]  # question 1, asked twice, on one side only
    assert len(train) + len(validation) == 41


def test_ties_are_found_after_normalization_by_the_formatter_and_at_the_draw(caplog):
    with pytest.raises(formats.Drop, match="chosen equals rejected"):
        formats.pair("What is 2 + 2?", "The answer is 4.", "the  answer\u00a0is 4.")
    tied = pairs("p", 6)
    tied[2]["rejected"] = " it IS 3. "  # a record formatted before ties were normalized
    with caplog.at_level(logging.WARNING):
        train, _, stats = mixtures.draw("DPO", {"task": "preference", "seed": 1, "components": [{"dataset": "p"}]},
                                        {"p": tied})
    assert "p:2" not in {r["id"] for r in train} and len(train) == 5 and stats[0].ties == 1
    assert "mixture DPO, p: 1 of its 6 records are ties (chosen and rejected the same normalized text" in caplog.text


# ---- truncation ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tinymodels.qwen2(tmp_path_factory.mktemp("base") / "M0")


def test_the_share_of_cut_answers_is_recorded_and_warned_above_five_percent(caplog):
    with caplog.at_level(logging.WARNING):
        assert truncation.truncation("q/M1", "SFT records", 5, 100, 100, 256) == {
            "max_length": 256, "cut": 5, "measured": 100, "share": 0.05}
        assert not caplog.text  # 5 %: recorded, no warning
        record = truncation.truncation("q/M1", "SFT records", 120, 2000, 90000, 256)
    assert record["share"] == 0.06
    assert ("run q/M1: 120 of 2000 SFT records, a sample of the 90000, (6.0 %) are longer than max_length=256: "
            "their answers are cut, the end and the EOS never trained; raise max_length") in caplog.text
    card = cards.render_card({"model": "q", "variant": "M1"}, training={"steps": 3, "truncation": record})
    # the warnings table reads it from the run's summary: a row above five percent, none at five
    summary = {"run": "q/M1", "trainer": "sft", "train_records": 90000}
    assert truncation.summary_warnings({**summary, "truncation": record}) == [{
        "part": "run q/M1", "count": 120,
        "warning": "120 of 2000 SFT records, a sample of the 90000, (6.0 %) are longer than max_length=256: "
                   "their answers are cut, the end and the EOS never trained; raise max_length"}]
    assert truncation.summary_warnings({**summary, "truncation": {"max_length": 256, "cut": 5, "measured": 100,
                                                                  "share": 0.05}}) == []
    assert "| records cut at max_length | 120 of 2000 (6.0%) at max_length 256 |" in card


def test_dpo_pairs_cut_at_max_length_are_counted(base):
    tok = modeldir.load_tokenizer(base)
    long = [{"instruction": f"What is {a} plus 1?", "input": "", "chosen": f"Correct: {a + 1}.",
             "rejected": "wrong " * 12 + f"{a}"} for a in range(4)]
    need = max(len(t) for side in prompts.preference_sequences(tok, long) for t, _ in side)
    assert prompts.pairs_cut(tok, long, need) == (0, 0, need)
    assert prompts.pairs_cut(tok, long, need - 1)[0] >= 1
    assert training.check_pair_lengths("q/M2", tok, long, need - 1) == prompts.pairs_cut(tok, long, need - 1)[0]


def test_a_trained_run_records_its_cut_records_in_its_summary_and_its_adapter_manifest(tmp_path, base, caplog):
    tok = modeldir.load_tokenizer(base)
    rows = [{"instruction": f"What is {a} plus {a % 5}?", "input": "",
             "output": f"The answer is {a + a % 5}. " * 4} for a in range(8)]
    prompt = max(len(prompts.prompt_ids(tok, prompts.messages(r))) for r in rows)
    train = tmp_path / "train.json"
    train.write_text(json.dumps(rows))
    hyper = {"trainer": "sft", "per_device_train_batch_size": 4, "max_steps": 1, "max_length": prompt + 2,
             "logging_steps": 1, "lora": {"r": 4, "alpha": 8}}
    with caplog.at_level(logging.WARNING):
        summary = training.train("t/cut", hyper, base, train, None, tmp_path / "adapter", tmp_path / "ckpt")
    assert summary["truncation"] == {"max_length": prompt + 2, "cut": 8, "measured": 8, "share": 1.0}
    assert "run t/cut: 8 of 8 SFT records (100.0 %) are longer than max_length" in caplog.text
    # the same warning, from the finished run's summary, is the study's warnings table's row for the run
    (row,) = truncation.summary_warnings(json.loads((tmp_path / "adapter" / "summary.json").read_text()))
    assert row["part"] == "run t/cut" and row["count"] == 8
    assert f"run t/cut: {row['warning']}" in caplog.text
    manifest = json.loads((tmp_path / "adapter" / "manifest.json").read_text())
    assert {"adapter_model.safetensors", "adapter_config.json"} <= set(manifest["files"])
    assert not {"summary.json", "log_history.csv"} & set(manifest["files"])  # wall times: the report's alone

    # an adapter swapped after it was written (same size, its time kept) is refused before the merge
    weights = tmp_path / "adapter" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    stat = weights.stat()
    weights.write_bytes(bytes(data))
    import os

    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(files.IntegrityError, match=r"adapter_model\.safetensors: sha256 .*rebuild it alone: "
                                                   r"snakemake --cores 1 --force \S*adapter/adapter_config\.json"):
        merge.check_adapter(base, tmp_path / "adapter")


# ---- chat templates --------------------------------------------------------------------------------------

NO_GENERATION_PROMPT = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
NO_EOS = ("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
          "{% if add_generation_prompt %}[assistant] {% endif %}")


def bare_tokenizer(eos="<|endoftext|>"):
    tok = tinymodels.tokenizer()
    tok.chat_template = None
    tok.eos_token = eos
    return tok


def test_a_template_without_a_generation_prompt_is_refused_naming_it():
    with pytest.raises(build.ModelSourceError, match=r"model 'm': the chat template \(config\) has no generation "
                                                     r"prompt: .*assistant turn begins '<\|im_start\|>assistant\\n'"):
        build.ensure_chat_template("m", bare_tokenizer(), NO_GENERATION_PROMPT, add_tokens=False)


def test_a_template_without_the_eos_is_refused_naming_it():
    with pytest.raises(build.ModelSourceError, match=r"model 'm': the chat template \(config\) does not end an "
                                                     r"assistant turn with the EOS: after the answer it renders '\\n', "
                                                     r"without '<\|endoftext\|>'"):
        build.ensure_chat_template("m", bare_tokenizer(), NO_EOS, add_tokens=False)


@pytest.mark.parametrize("name", list(prompts.CHAT_TEMPLATES))
def test_the_built_in_templates_pass(name):
    assert build.ensure_chat_template("m", bare_tokenizer(), name, add_tokens=True) == f"builtin:{name}"


# ---- manifests of mixtures, records and pair scores; make verify -------------------------------------------


def swap_keeping_size_and_time(path, old, new):
    stat = path.stat()
    text = path.read_text()
    assert len(old) == len(new) and old in text
    path.write_text(text.replace(old, new, 1))
    import os

    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_records_and_mixtures_are_checked_against_their_manifests_where_read(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    files.write_parquet(raw / "data.parquet", [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(20)])
    files.write_json(raw / files.MANIFEST_FILE, files.manifest_files(raw, ["data.parquet"]))
    path = tmp_path / "records" / "abc.jsonl"
    records.format_dataset("a", raw, path, "alpaca")
    assert json.loads(files.sidecar(path).read_text())["records"] == 20
    out = {k: tmp_path / f"m.{k}" for k in ("train", "validation", "stats")}
    out["manifest"] = tmp_path / "m.manifest.json"  # where a reader of m.train looks (`mixtures.manifest_of`)
    spec = {"task": "sft", "seed": 1, "validation": 0.2, "exclude": [], "components": [{"dataset": "a"}]}
    mixtures.draw_files("m", spec, {"a": path}, [], out)
    assert len(mixtures.read(out["train"])) == 16

    swap_keeping_size_and_time(out["train"], '"a1"', '"a2"')
    with pytest.raises(files.IntegrityError, match=r"m\.train: sha256 .* records .*--force \S*m\.manifest\.json"):
        mixtures.read(out["train"])
    swap_keeping_size_and_time(path, '"a1"', '"a2"')
    with pytest.raises(files.IntegrityError, match=r"abc\.jsonl: sha256 .*--force \S*records/abc\.jsonl"):
        mixtures.draw_files("m", spec, {"a": path}, [], out)


def test_pair_scores_are_checked_before_reward_accuracy_reads_them(tmp_path):
    data = tmp_path / "pairs.json"
    data.write_text(json.dumps(pairs("p", 2)))
    scores = {"ids": ["p:0", "p:1"], "chosen": [-1.5, -2.5], "rejected": [-3.5, -4.5],
              "computed_in": {"dtype": "float32", "compute": "plain", "device": "cpu"}}
    for name in ("policy", "reference"):
        files.write_json(tmp_path / name / "pair_scores.json", scores)
        files.write_sidecar(tmp_path / name / "pair_scores.json")
    swap_keeping_size_and_time(tmp_path / "policy" / "pair_scores.json", "-1.5", "-1.6")
    with pytest.raises(files.IntegrityError, match=r"policy/pair_scores\.json: sha256 .*, but \S*policy/pair_scores\."
                                                   r"manifest\.json records "):
        tasks.reward_files(tmp_path / "policy" / "pair_scores.json", tmp_path / "reference" / "pair_scores.json",
                           data, tmp_path / "m.csv", tmp_path / "m.jsonl", model="q", variant="M2",
                           settings={"beta": 0.1})


def test_make_verify_checks_every_artifact_and_fails_on_a_mismatch(tmp_path, monkeypatch, capsys):
    config, layout = studies.load(ROOT / "config.yaml")
    monkeypatch.chdir(tmp_path)
    name = "gsm8k_eval"
    out = {"train": layout.mixture(name), "validation": layout.mixture(name, "validation.json"),
           "stats": layout.mixture(name, "stats.csv"), "manifest": layout.mixture(name, "manifest.json")}
    mixtures.write(out, [{"id": "g:0", "question": "q", "answer": "a #### 1", "final": "1"}], [], [])
    counts = zverify.verify_study(config, layout)
    assert counts["ok"] == 1 and counts["MISMATCH"] == 0 and counts["absent"] > 10
    lines = capsys.readouterr().out.splitlines()
    assert f"ok        mixture      {layout.mixture(name)}  3 files" in "\n".join(lines)
    assert any(line.startswith("absent    base model") for line in lines)
    assert len(lines) >= len(config["datasets"]) * 2 + len(config["models"]) + len(config["mixtures"])

    swap_keeping_size_and_time(tmp_path / layout.mixture(name), '"q"', '"Q"')
    assert zverify.main([str(ROOT / "config.yaml")]) == 1
    printed = capsys.readouterr().out
    assert f"MISMATCH  mixture      {layout.mixture(name)}  " in printed
    assert "study 'zephyr-default': 0 artifact(s) match their manifest, 1 do not, 0 have none, " in printed
