"""Formatters on hand-written fixtures in each source's real columns; expected values worked out by hand."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from zephyr.data.formats import FORMATTERS, FormatError, format_rows
from zephyr.files import iter_jsonl

DIR = Path(__file__).parent / "fixtures" / "datasets"

#: Dataset key of the study -> formatter (checked against config/paper.yaml elsewhere).
FIXTURES = {
    "cosmopedia_khanacademy": "cosmopedia",
    "maths_college": "alpaca",
    "arxiv_math": "question_answer",
    "magicoder": "magicoder_oss",
    "goat": "goat",
    "metamathqa": "metamathqa",
    "glaive_code_assistant": "question_answer",
    "lima": "lima",
    "open_platypus": "alpaca",
    "mathinstruct": "alpaca",
    "wiki_qa": "wiki_qa",
    "code_alpaca": "alpaca",
    "epfl": "epfl_pairs",
    "orca_dpo_pairs": "orca_dpo",
    "truthy_dpo": "prompt_pairs",
    "shp_askengineers": "shp",
    "shp_askphysics": "shp",
    "shp_askscience": "shp",
    "shp_explainlikeimfive": "shp",
    "code_vulnerability_dpo": "orca_dpo",
    "py_dpo": "prompt_pairs",
    "dpo_mix_untoxic": "chat_pairs",
    "h4rmony": "h4rmony",
    "exp_dpo_3": "prompt_pairs",
    "arc_easy": "arc",
    "arc_challenge": "arc",
    "mmlu_auxiliary_train": "mmlu_aux",
    "gsm8k_test": "gsm8k",
    "hellaswag_validation": "hellaswag",
    "wikitext2_test": "wikitext",
    "arc_easy_test": "arc",
    "arc_challenge_test": "arc",
    "mmlu_test": "mmlu",
}

#: Ids of the records each fixture must keep (default options); every other row is dropped.
KEPT = {
    "cosmopedia_khanacademy": [0, 2],  # 1: empty text
    "maths_college": [0, 2],  # 1: blank output
    "arxiv_math": [0, 2],  # 1: empty answer
    "magicoder": [0, 2],  # 1: empty solution
    "goat": [0, 1, 3],  # 2: empty instruction
    "metamathqa": [0, 2],  # 1: blank query
    "glaive_code_assistant": [0, 1],  # 2: empty question
    "lima": [0, 1, 3],  # 2: trailing user turn
    "open_platypus": [0, 1],  # 2: empty output
    "mathinstruct": [0, 1],  # 2: blank instruction
    "wiki_qa": [1, 3],  # label 0 rows
    "code_alpaca": [0, 1],  # 2: empty output
    "epfl": [0, 1, "2.0"],  # 2.1, 2.2, 3: ties; 4: A == B
    "orca_dpo_pairs": [0, 1],  # 2: chosen == rejected
    "truthy_dpo": [0, 1],  # 2: empty rejected
    "shp_askengineers": [0, 1],  # 2: empty human_ref_A (the chosen one)
    "shp_askphysics": [0, 1],  # 2: identical comments
    "shp_askscience": [0, 1],  # 2: empty history
    "shp_explainlikeimfive": [0, 1],  # 2: blank human_ref_B
    "code_vulnerability_dpo": [0, 1],  # 2: blank question
    "py_dpo": [0, 1],  # 2: empty chosen
    "dpo_mix_untoxic": [0, 1, 2],  # 3: prompts differ; 4: empty chosen answer
    "h4rmony": [0, 1],  # 2: empty chosen
    "exp_dpo_3": [0, 1],  # 2: empty prompt
    "arc_easy": [0, 1, 2],  # 3: blank question
    "arc_challenge": [0, 1, 2],  # 3: empty choice
    "mmlu_auxiliary_train": [0, 1],  # 2: empty question
    "gsm8k_test": [0, 1, 2],  # 3: empty answer
    "hellaswag_validation": [0, 1, 2],  # 3: test-split row, no label
    "wikitext2_test": [0, 1, 2, 3, 4, 5],  # every line kept
    "arc_easy_test": [0, 1, 2],  # 3: empty question
    "arc_challenge_test": [0, 1, 2],  # 3: blank question
    "mmlu_test": [0, 1, 2],  # 3: blank question
}


def path(key: str) -> Path:
    return DIR / f"{key}.jsonl"


def load(key: str) -> list[dict]:
    return list(iter_jsonl(path(key)))


def run(key: str, name: str | None = None, rows: list[dict] | None = None, **options) -> dict[str, dict]:
    """The records of fixture `key` (or of `rows` under its name), by id."""
    rows = load(key) if rows is None else rows
    records = format_rows(rows, name or FIXTURES[key], dataset=key, origin=str(path(key)),
                          columns=rows[0].keys(), options=options)
    return {record["id"]: record for record in records}


# --------------------------------------------------------------------------------------------------
# Every fixture.


def test_fixture_files_match_the_map():
    assert sorted(p.stem for p in DIR.glob("*.jsonl")) == sorted(FIXTURES)
    assert set(FIXTURES.values()) <= set(FORMATTERS)
    assert set(KEPT) == set(FIXTURES)


@pytest.mark.parametrize("key", sorted(FIXTURES))
def test_fixture_keeps_and_drops_the_expected_rows(key, caplog):
    caplog.set_level(logging.INFO, logger="zephyr.data.formats")
    rows = load(key)
    assert 3 <= len(rows) <= 6
    if key != "epfl":  # a real dataset has one set of columns; EPFL's layouts are the point of its fixture
        assert all(row.keys() == rows[0].keys() for row in rows)
    records = run(key)
    assert list(records) == [f"{key}:{i}" for i in KEPT[key]]
    assert all(record["source"] == key for record in records.values())
    assert (f"{key}: dropped" in caplog.text) == (key != "wikitext2_test")  # each has a row to drop but WikiText


# --------------------------------------------------------------------------------------------------
# SFT.

SFT_EXPECTED = {
    "cosmopedia_khanacademy:0": {
        "instruction": 'Write a long and very detailed course unit for a textbook on "Algebra 1 - Linear equations" '
        'intended for young children.\nWe are currently writing the first chapter: '
        '"Unit 3: Solving one-step equations".',
        "output": "Welcome back, young mathematicians! Today we will learn how to solve one-step equations.\n\n"
        "Imagine you have a box with some apples in it...",
    },
    "maths_college:2": {
        "instruction": "State the Mean Value Theorem.",
        "output": "If f is continuous on [a, b] and differentiable on (a, b), there is a c in (a, b) with "
        "f'(c) = (f(b) - f(a)) / (b - a).",
    },
    "arxiv_math:2": {
        "instruction": "What does the paper prove about random walks on hyperbolic groups?",
        "output": "It proves a central limit theorem for the drift of random walks "
        "on non-elementary hyperbolic groups.",
    },
    "magicoder:2": {
        "instruction": "Write a TypeScript function that fetches a URL and returns the parsed JSON body.",
        "output": "```typescript\nasync function getJson(url: string): Promise<unknown> {\n"
        "  const res = await fetch(url);\n  return res.json();\n}\n```",
    },
    "goat:0": {
        "instruction": "What is 8914/115?",
        "output": "8914 - 115 * 70 = 8914 - 8050 = 864\n864 - 115 * 7 = 864 - 805 = 59\n"
        "Therefore, 8914 / 115 = 77 R 59",
    },
    "goat:1": {"instruction": "Compute 2394 + 4455.", "output": "2394 + 4455 = 6849"},
    "metamathqa:0": {
        "instruction": "If James buys 5 packs of beef weighing 4 pounds each at $5.50 per pound, how much did he pay?",
        "output": "He bought 5 * 4 = 20 pounds of beef.\nSo he paid 20 * 5.5 = $110.\nThe answer is: 110",
    },
    "glaive_code_assistant:1": {
        "instruction": "Why does my pandas merge produce duplicate rows?",
        "output": "A merge duplicates rows when the key is not unique on one side; check with "
        "`df.key.duplicated().any()`.",
    },
    "open_platypus:1": {
        "instruction": "Which conclusion follows from the passage?\nA. Penguins fly.\nB. Penguins lay eggs.",
        "input": "Passage: All birds lay eggs. Penguins are birds.",
        "output": "B",
    },
    "mathinstruct:1": {
        "instruction": "What is 15 percent of 20? Let's write a Python program.",
        "output": "n0 = 20.0\nn1 = 15.0\nanswer = n0 * n1 / 100.0\nprint(answer)",
    },
    "code_alpaca:0": {
        "instruction": "Create a function to calculate the sum of a sequence of integers.",
        "input": "[1, 2, 3, 4, 5]",
        "output": "def sum_sequence(sequence):\n    return sum(sequence)",
    },
    "code_alpaca:1": {
        "instruction": "Generate a SQL query that counts the rows of the table `users`.",
        "input": "",
        "output": "SELECT COUNT(*) FROM users;",
    },
}


@pytest.mark.parametrize("record_id", sorted(SFT_EXPECTED))
def test_sft_mapping(record_id):
    key = record_id.split(":")[0]
    record = run(key)[record_id]
    expected = {"input": "", **SFT_EXPECTED[record_id]}  # input empty unless the source has one (goat's is ignored)
    assert {k: record[k] for k in expected} == expected
    assert "history" not in record and "system" not in record


def test_lima_history_and_trailing_turn(caplog):
    caplog.set_level(logging.INFO, logger="zephyr.data.formats")
    records = run("lima")
    assert records["lima:1"]["instruction"] == "Now make it about spring."
    assert records["lima:1"]["output"].startswith("Green buds break the frost\n")
    assert records["lima:1"]["history"] == [[
        "Write a haiku about autumn.",
        "Red leaves drift and fall\nthe quiet pond holds the sky\ncold wind combs the grass",
    ]]
    assert "history" not in records["lima:0"]
    assert "last user turn has no answer: 1" in caplog.text
    rows = [{"conversations": ["u1", "a1", "u2", "a2", " u3 ", "a3"], "source": "x"},
            {"conversations": ["only a prompt"], "source": "test"}]
    (record,) = run("lima", rows=rows).values()
    assert (record["instruction"], record["output"]) == ("u3", "a3")
    assert record["history"] == [["u1", "a1"], ["u2", "a2"]]


def test_wiki_qa_label_filter_and_groups():
    records = run("wiki_qa")
    assert [r["group"] for r in records.values()] == ["Q1", "Q2"]
    assert records["wiki_qa:1"]["output"] == "A glacier cave is a cave formed within the ice of a glacier ."
    assert records["wiki_qa:3"]["instruction"] == "how much is 1 tablespoon of water"
    assert len(run("wiki_qa", only_correct=False)) == 5  # LLaMA-Factory's unfiltered wikiqa


# --------------------------------------------------------------------------------------------------
# Preference.


def test_column_pairs_keep_system_only_when_given():
    orca = run("orca_dpo_pairs")
    assert orca["orca_dpo_pairs:0"]["system"].startswith("You are an AI assistant. You will be given a task.")
    assert orca["orca_dpo_pairs:0"]["rejected"] == "Sure! Here's a sentence: Midsummer House is a Chinese restaurant."
    assert orca["orca_dpo_pairs:1"] == {
        "id": "orca_dpo_pairs:1", "source": "orca_dpo_pairs", "instruction": "What is the capital of Australia?",
        "input": "", "chosen": "The capital of Australia is Canberra.",
        "rejected": "Sydney is the capital of Australia.",
    }
    truthy = run("truthy_dpo")["truthy_dpo:1"]
    assert truthy["system"] == "You are Sir Isaac Newton.\nSir Isaac Newton:\nA renowned physicist and mathematician."
    assert truthy["instruction"] == "Can you sense the weight of objects you hold?"
    vuln = run("code_vulnerability_dpo")
    assert vuln["code_vulnerability_dpo:1"]["system"] == "You are a secure-coding assistant."
    assert vuln["code_vulnerability_dpo:1"]["rejected"].endswith("std::strcpy(buf, s); }\n```")
    assert "system" not in vuln["code_vulnerability_dpo:0"]
    assert run("py_dpo")["py_dpo:1"]["chosen"] == "s[::-1]"
    assert run("exp_dpo_3")["exp_dpo_3:1"]["rejected"] == "17 * 3 = 41."


def test_shp_labels_pick_the_preferred_comment():
    eng = run("shp_askengineers")
    assert eng["shp_askengineers:0"]["chosen"].startswith("Steel and concrete expand")  # labels 1: A
    assert eng["shp_askengineers:0"]["rejected"] == "Because engineers like teeth."
    assert eng["shp_askengineers:1"]["chosen"].startswith("Thermal expansion;")  # labels 0: B
    assert eng["shp_askengineers:1"]["rejected"] == "Noise."
    assert {r["group"] for r in eng.values()} == {"himc90"}
    phys = run("shp_askphysics")["shp_askphysics:1"]
    assert phys["chosen"].startswith("There is no rest frame for a photon")
    assert phys["instruction"] == "Does a photon experience time?"
    row = {**load("shp_askphysics")[0], "labels": 2}
    with pytest.raises(FormatError, match="labels should be 0 or 1"):
        run("shp_askphysics", rows=[row])


def test_h4rmony_original_layout():
    rows = [
        {"PromptID": 7, "Prompt": "How do I heat my home?", "BetterCompletion": "A heat pump.",
         "WorseCompletion": "A coal stove.", "ComparedRanks": "R1-R3"},
        {"PromptID": 7, "Prompt": "How do I heat my home?", "BetterCompletion": "A heat pump.",
         "WorseCompletion": "A heat pump.", "ComparedRanks": "R1-R2"},
    ]
    (record,) = run("h4rmony", rows=rows).values()
    assert (record["chosen"], record["rejected"], record["group"]) == ("A heat pump.", "A coal stove.", "7")
    green = "A seasonal vegetable curry with local produce is tasty and low-impact."
    assert run("h4rmony")["h4rmony:1"]["chosen"] == green
    with pytest.raises(FormatError, match="missing"):  # the DPO-ready copy (H4rmony_dpo) is prompt_pairs' job
        run("py_dpo", "h4rmony")


def test_chat_pairs(caplog):
    caplog.set_level(logging.INFO, logger="zephyr.data.formats")
    records = run("dpo_mix_untoxic")
    assert records["dpo_mix_untoxic:1"] == {
        "id": "dpo_mix_untoxic:1", "source": "dpo_mix_untoxic", "instruction": "Something longer, please.",
        "input": "", "chosen": "Sir Whiskerton of Fluffington.", "rejected": "Cat.",
        "history": [["Suggest a name for a cat.", "How about Miso?"]],
    }
    assert records["dpo_mix_untoxic:2"]["system"] == "You answer in one sentence."
    assert records["dpo_mix_untoxic:2"]["instruction"] == "Why is the sea salty?"
    assert "history" not in records["dpo_mix_untoxic:0"] and "system" not in records["dpo_mix_untoxic:0"]
    assert "rejected prompt turns differ from chosen: 1" in caplog.text
    assert "empty chosen: 1" in caplog.text
    two_users = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    rows = [{"chosen": two_users + [{"role": "assistant", "content": "c"}],
             "rejected": two_users + [{"role": "assistant", "content": "d"}]}]
    with pytest.raises(FormatError, match="no records"):
        run("dpo_mix_untoxic", rows=rows)


# --------------------------------------------------------------------------------------------------
# EPFL.

SOFTMAX = "Question: What does the softmax function output?\nOptions:\nA. probabilities\nB. logits"


def test_epfl_layouts_and_ties(caplog):
    caplog.set_level(logging.INFO, logger="zephyr.data.formats")
    records = run("epfl")
    # LaTeX kept as is
    assert records["epfl:0"]["chosen"] == "$(\\mathbb{Z}, +)$ is a group: it has an identity 0 and inverses."
    assert records["epfl:1"]["instruction"] == "What is the time complexity of binary search?"  # question_body
    assert (records["epfl:1"]["chosen"], records["epfl:1"]["rejected"]) == (
        "O(log n), since each step halves the interval.", "O(n)")  # ranking.overall B
    assert records["epfl:2.0"]["instruction"] == SOFTMAX  # question_complete, preference list
    assert records["epfl:2.0"]["chosen"] == "A probability distribution over the classes."
    assert [r["group"] for r in records.values()] == ["1201", "1202", "1203"]
    assert "tie: 3" in caplog.text and "chosen equals rejected: 1" in caplog.text
    assert "tie broken" not in caplog.text


def test_epfl_tie_break_rescues_only_decided_ties(caplog):
    caplog.set_level(logging.INFO, logger="zephyr.data.formats")
    records = run("epfl", tie_break="correctness")
    assert list(records) == ["epfl:0", "epfl:1", "epfl:2.0", "epfl:2.1"]
    assert (records["epfl:2.1"]["chosen"], records["epfl:2.1"]["rejected"]) == (
        "Values in (0, 1) that sum to 1.", "Unnormalised scores.")
    assert "_note" not in records["epfl:2.1"]
    assert "tie broken by correctness: 1" in caplog.text and "tie: 2" in caplog.text
    assert list(run("epfl", tie_break="clarity")) == ["epfl:0", "epfl:1", "epfl:2.0"]  # clarity is AB too


def test_epfl_rows_with_a_unified_schema():
    """Parquet gives every row every column, absent ones as None; the loader must not mind."""
    rows = load("epfl")
    columns = {key: None for row in rows for key in row}
    assert list(run("epfl", rows=[{**columns, **row} for row in rows])) == ["epfl:0", "epfl:1", "epfl:2.0"]


# --------------------------------------------------------------------------------------------------
# MCQA.


def test_arc_label_mapping():
    easy = run("arc_easy")
    assert easy["arc_easy:0"]["answer"] == 1  # B
    assert easy["arc_easy:2"]["choices"] == ["a wax crayon", "a plastic spoon", "a rubber eraser", "an iron nail"]
    assert easy["arc_easy:2"]["answer"] == 3  # label "4" of 1-4
    challenge = run("arc_challenge")
    assert challenge["arc_challenge:1"]["answer"] == 1  # label "2"
    assert len(challenge["arc_challenge:2"]["choices"]) == 5 and challenge["arc_challenge:2"]["answer"] == 2
    assert run("arc_challenge_test")["arc_challenge_test:1"]["answer"] == 2  # label "3"
    three = run("arc_challenge_test")["arc_challenge_test:2"]
    assert (len(three["choices"]), three["answer"]) == (3, 2)
    assert run("arc_easy_test")["arc_easy_test:2"]["question"].startswith("Meiosis is a type of cell division")


def test_arc_unknown_answer_key_fails_clearly():
    row = {**load("arc_easy")[0], "answerKey": "E"}
    with pytest.raises(FormatError) as err:
        run("arc_easy", rows=[row])
    message = str(err.value)
    assert "'arc_easy'" in message and "row 0" in message
    assert "answerKey 'E' is not one of the labels ['A', 'B', 'C', 'D']" in message


def test_mmlu():
    aux = run("mmlu_auxiliary_train")
    assert aux["mmlu_auxiliary_train:1"] == {
        "id": "mmlu_auxiliary_train:1", "source": "mmlu_auxiliary_train",
        "question": "Most of the energy used by living things on Earth comes from",
        "choices": ["fossil fuels", "trees", "wind", "the Sun"], "answer": 3,
    }  # empty subject left out
    test = run("mmlu_test")
    assert test["mmlu_test:0"]["answer"] == 1 and test["mmlu_test:0"]["subject"] == "abstract_algebra"
    assert test["mmlu_test:2"]["choices"][3] == "The second and third pharyngeal arches"
    row = {**load("mmlu_test")[0], "answer": "C"}
    assert run("mmlu_test", rows=[row])["mmlu_test:0"]["answer"] == 2
    with pytest.raises(FormatError, match="outside the 4 choices"):
        run("mmlu_test", rows=[{**load("mmlu_test")[0], "answer": 4}])


# --------------------------------------------------------------------------------------------------
# Evaluation sets.


def test_gsm8k_final_answers():
    records = run("gsm8k_test")
    assert [r["final"] for r in records.values()] == ["18", "3", "70000"]
    assert records["gsm8k_test:1"]["answer"].startswith("It takes 2/2=<<2/2=1>>1 bolt of white fiber\n")
    stripped = run("gsm8k_test", strip_calculator=True)
    assert stripped["gsm8k_test:1"]["answer"].startswith("It takes 2/2=1 bolt of white fiber\n")
    assert all("<<" not in r["answer"] and r["answer"].endswith(f"#### {r['final']}") for r in stripped.values())
    assert [r["final"] for r in stripped.values()] == ["18", "3", "70000"]


def test_hellaswag_matches_lm_eval_harness():
    records = run("hellaswag_validation")
    roof = records["hellaswag_validation:0"]
    assert roof["query"] == "Roof shingle removal: A man is sitting on a roof. He"
    assert roof["choices"][3] == "starts pulling up roofing on a roof."
    assert roof["label"] == 3
    # str.capitalize() lowercases the rest of ctx_b ("DRY" -> "dry"), as the harness does.
    assert records["hellaswag_validation:1"]["query"] == (
        "Cleaning windows: A woman holds a squeegee next to a large window. "
        "The woman then wipes the glass with a dry cloth")
    skillet = records["hellaswag_validation:2"]
    assert skillet["query"] == ("Home and Garden: How to clean a cast iron skillet. Rinse the skillet with hot water. "
                                "Avoid soap, which strips the seasoning.")
    assert skillet["choices"] == [
        " Scrub off stuck food with coarse salt and a paper towel.. Dry the skillet completely.",
        "Put the skillet in the dishwasher on the hottest cycle. Soak it overnight.",
        " Paint the skillet. Use a bright colour.",
        "Throw the skillet away and buy a new one.",
    ]
    assert skillet["label"] == 0


def test_wikitext_lines_kept_verbatim():
    texts = [r["text"] for r in run("wikitext2_test").values()]
    assert texts == [row["text"] for row in load("wikitext2_test")]
    assert texts[1] == " = Robert Boulter = \n" and texts[0] == ""
    assert "\n\n".join(texts).startswith("\n\n = Robert Boulter = \n\n\n\n\n Robert Boulter is")


# --------------------------------------------------------------------------------------------------
# Errors.


def test_missing_column_names_dataset_file_expected_and_found():
    with pytest.raises(FormatError) as err:
        run("arxiv_math", "magicoder_oss")
    message = str(err.value)
    assert "'arxiv_math'" in message and str(path("arxiv_math")) in message
    assert "needs columns ['problem', 'solution']" in message
    assert "found ['answer', 'question']" in message


def test_missing_column_lists_alternative_layouts():
    rows = [{"title": "q", "A": "a", "B": "b", "overall": "A"}]
    with pytest.raises(FormatError, match=r"or \['question_complete', 'preference'\]"):
        run("epfl", rows=rows)


def test_no_records_is_an_error():
    rows = [row for row in load("wiki_qa") if row["label"] == 0]
    with pytest.raises(FormatError, match="'wiki_qa'.*produced no records"):
        run("wiki_qa", rows=rows)
