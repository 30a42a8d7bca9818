"""Tests for zephyr.data.generators: determinism, sizes, real-dataset columns, and that the rows mean
what their real counterparts mean (right answers right, wrong answers wrong)."""

import hashlib
import json
import os
import sys
from decimal import Decimal

import pytest

from conftest import ROOT, run
from zephyr.data import formats
from zephyr.data import generators as g

SEED, SIZE = 7, 300

#: Columns of the real dataset each schema stands in for (shared/paper/datasets.md).
COLUMNS = {
    "gsm8k": {"question", "answer"},
    "metamathqa": {"type", "query", "original_question", "response"},
    "goat": {"instruction", "input", "output", "answer"},
    "alpaca": {"instruction", "input", "output"},
    "epfl_pairs": {"question_id", "course_id", "question", "preference"},
    "orca_dpo": {"system", "question", "chosen", "rejected"},
    "arc": {"id", "question", "choices", "answerKey"},
    "mmlu_aux": {"train"},
    "hellaswag": {"ind", "activity_label", "ctx_a", "ctx_b", "ctx", "endings", "source_id", "split", "split_type",
                  "label"},
    "wikitext": {"text"},
}


@pytest.fixture(scope="module")
def rows():
    return {name: g.generate(name, SIZE, SEED) for name in g.SCHEMAS}


def final(solution: str) -> str:
    return solution.rsplit("####", 1)[1].strip()


def digest(rows) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


def test_registry_matches_expected_schemas():
    assert set(g.SCHEMAS) == set(COLUMNS)


@pytest.mark.parametrize("name", sorted(COLUMNS))
def test_size_columns_determinism(name, rows):
    got = rows[name]
    assert len(got) == SIZE
    assert all(set(row) == COLUMNS[name] for row in got)
    assert g.generate(name, SIZE, SEED) == got
    assert g.generate(name, SIZE, SEED + 1) != got
    assert g.generate(name, 40, SEED) == got[:40]  # a smaller size is a prefix
    assert len(g.generate(name, 1, SEED)) == 1


def test_same_bytes_in_other_processes():
    """No dependence on hash randomisation: two interpreters with different hash seeds agree."""
    code = ("import hashlib, json; from zephyr.data import generators as g; "
            f"print(hashlib.sha256(json.dumps({{n: g.generate(n, 50, {SEED}) for n in sorted(g.SCHEMAS)}}, "
            "sort_keys=True).encode()).hexdigest())")
    results = [run([sys.executable, "-c", code], timeout=300, cwd=ROOT,
                   env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": hs}) for hs in ("1", "2")]
    assert [r.returncode for r in results] == [0, 0], results[0].stderr[-3000:] + results[1].stderr[-3000:]
    assert {r.stdout.strip() for r in results} == {digest({n: g.generate(n, 50, SEED) for n in sorted(g.SCHEMAS)})}


def test_bad_arguments():
    with pytest.raises(ValueError, match="known: .*gsm8k"):
        g.generate("nope", 5, 0)
    for size in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="size"):
            g.generate("gsm8k", size, 0)
    with pytest.raises(ValueError, match="unknown options"):
        g.generate("gsm8k", 5, 0, colour="red")
    with pytest.raises(ValueError, match="tasks"):
        g.generate("alpaca", 5, 0, tasks=["no_such_task"])
    with pytest.raises(ValueError, match="source"):
        g.generate("arc", 5, 0, source="nope")


def test_package_version():
    assert g.package_version()[0].isdigit()


def test_schemas_do_not_share_problems():
    """Each schema draws its own instances, so the GSM8K stand-in barely meets the SFT data: only
    chance collisions of templates with few parameters remain (about 0.3%)."""
    test = [r["question"] for r in g.generate("gsm8k", 2000, SEED)]
    train = {r["query"] for r in g.generate("metamathqa", 2000, SEED)}
    assert len(set(test)) == len(test)
    assert len(train & set(test)) < 0.01 * len(test)


# --------------------------------------------------------------------------------------------------
# Meaning.


def test_gsm8k(rows):
    problems = g._problems(SIZE, SEED, "gsm8k")
    for row, p in zip(rows["gsm8k"], problems):
        assert row["answer"].count("####") == 1
        assert final(row["answer"]) == p.answer and Decimal(p.answer) >= 0
        assert row["answer"].split("\n")[-1] == f"#### {p.answer}"
        assert "Give the result" not in row["question"] and "units" not in row["question"][-30:]
        assert row["question"].endswith(("?", "."))


def test_metamathqa(rows):
    for row in rows["metamathqa"]:
        assert row["type"] == "GSM_AnsAug" and row["query"] == row["original_question"]
        assert "####" not in row["response"]
        assert row["response"].split("\n")[-1].startswith("The answer is: ")


def test_goat_answers_are_exact(rows):
    for row in rows["goat"]:
        assert row["output"] == f"{row['input']} = {row['answer']}"
        assert row["input"] in row["instruction"]
        assert g._exact(row["input"]) == int(row["answer"])


def test_exact_arithmetic():
    assert g._exact("-( 2 * -3 ) / 4") == Decimal("1.5")
    with pytest.raises(ValueError):
        g._exact("__import__('os')")


def test_alpaca_tasks(rows):
    assert all(r["instruction"] and r["output"] and r["input"] == "" for r in rows["alpaca"])
    only = g.generate("alpaca", 20, 0, tasks=["gcd"])
    assert all("GCD" in r["instruction"] for r in only)


def test_wrong_values():
    import random

    rng = random.Random(0)
    for answer in ("0", "1", "7", "1687.5", "250", "99999", "-4"):
        wrong = g._wrong(answer, 3, rng)
        assert len(set(wrong)) == 3 and answer not in wrong
        assert all(Decimal(w) != Decimal(answer) for w in wrong)
        if not answer.startswith("-"):
            assert all(Decimal(w) >= 0 for w in wrong)


def test_orca_rejected_is_wrong(rows):
    for row in rows["orca_dpo"]:
        assert row["system"] and row["chosen"] != row["rejected"]
        assert final(row["chosen"]) != final(row["rejected"])
        # the slip is in a step too, not only in the '####' line
        assert row["chosen"].rsplit("\n", 1)[0] != row["rejected"].rsplit("\n", 1)[0]
        assert str(final(row["rejected"])) in row["rejected"].rsplit("\n", 1)[0]


def test_epfl_pairs():
    rows = g.generate("epfl_pairs", 2000, SEED)
    pairs = [p for r in rows for p in r["preference"]]
    assert len({r["question_id"] for r in rows}) == len(rows)
    overall = [p["ranking"]["overall"] for p in pairs]
    assert 0.03 < overall.count("AB") / len(pairs) < 0.08
    assert 0.4 < overall.count("A") / overall.count("B") < 2.5
    truth = {r["question_id"]: p for r, p in zip(rows, g._problems(2000, SEED, "epfl_pairs"))}
    for row in rows:
        for p in row["preference"]:
            right = p["ranking"]["correctness"]
            wrong = "B" if right == "A" else "A"
            assert p["ranking"]["overall"] in (right, "AB")
            assert final(p[right]) == truth[row["question_id"]].answer != final(p[wrong])
    several = g.generate("epfl_pairs", 200, SEED, pairs=3)
    assert max(len(r["preference"]) for r in several) == 3


def test_arc_and_mmlu(rows):
    for row in rows["arc"]:
        texts, labels = row["choices"]["text"], row["choices"]["label"]
        assert labels == ["A", "B", "C", "D"] and row["answerKey"] in labels
        assert len(set(texts)) == 4
    positions = {row["answerKey"] for row in rows["arc"]}
    assert positions == {"A", "B", "C", "D"}
    problems = g._problems(SIZE, SEED, "arc")
    assert all(r["choices"]["text"]["ABCD".index(r["answerKey"])] == p.answer for r, p in zip(rows["arc"], problems))
    for row in rows["mmlu_aux"]:
        t = row["train"]
        assert t["subject"] == "" and 0 <= t["answer"] <= 3 and len(set(t["choices"])) == 4
        assert Decimal(t["choices"][t["answer"]]) == g._exact(t["question"][len("What is "):-1])


def test_hellaswag(rows):
    problems = g._problems(SIZE, SEED, "hellaswag")
    labels = set()
    for row, p in zip(rows["hellaswag"], problems):
        assert row["label"] in ("0", "1", "2", "3") and len(set(row["endings"])) == 4
        assert row["ctx"] == f"{row['ctx_a']} {row['ctx_b']}" and row["ctx_a"].startswith(p.question)
        true = f"{row['ctx_b']} {row['endings'][int(row['label'])]}"
        assert true.lower() in [s.lower() for s in g._steps(p)]
        for i, ending in enumerate(row["endings"]):
            if i != int(row["label"]):
                assert f"{row['ctx_b']} {ending}".lower() not in [s.lower() for s in g._steps(p)]
        labels.add(row["label"])
    assert labels == {"0", "1", "2", "3"}


def test_wikitext(rows):
    text = [r["text"] for r in rows["wikitext"]]
    headings = [t for t in text if t.startswith(" = ") and t.endswith(" = \n")]
    assert any(t.startswith(" = = ") for t in headings) and any(not t.startswith(" = = ") for t in headings)
    assert text.count("") > SIZE // 5
    paragraphs = [t for t in text if t and t not in headings]
    assert paragraphs and all(t.startswith(" ") and t.endswith(" \n") for t in paragraphs)
    for i, t in enumerate(text):  # headings framed by blank rows, as in WikiText
        if t in headings and 0 < i < len(text) - 1:
            assert text[i - 1] == "" and text[i + 1] == ""
    assert len(g.generate("wikitext", 5, 0)) == 5


# --------------------------------------------------------------------------------------------------
# Through the real formatters.

@pytest.mark.parametrize("name", sorted(COLUMNS))
def test_rows_pass_formatter(name, rows):
    columns = rows[name][0].keys()
    records = list(formats.format_rows(rows[name], name, dataset="gen", origin="generator", columns=columns))
    assert records
    if name == "epfl_pairs":  # ties dropped unless the correctness criterion breaks them
        assert len(records) < SIZE
        rescued = list(formats.format_rows(rows[name], name, dataset="gen", origin="generator",
                                           columns=columns, options={"tie_break": "correctness"}))
        assert len(rescued) == SIZE
        assert all(final(r["chosen"]) != final(r["rejected"]) for r in rescued)
    else:
        assert len(records) == SIZE
