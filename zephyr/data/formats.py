"""Formatters: one per source schema, turning raw rows into Zephyr's unified records.

Every dataset of the study, real or generated, passes through the formatter named in its config
entry, so the generated default data and the real hub data meet exactly the same code.

A formatter maps one raw row to one record (or several, or none: raise `Drop` with a reason, and the
drop is counted in the log). `format_rows` adds `id` and `source`, checks the required columns up front
and each record's fields, and refuses an empty result.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

#: Fields every record of a task carries (beyond `id`, `source` and an optional `group`).
TASK_FIELDS: dict[str, dict[str, type]] = {
    "sft": {"instruction": str, "input": str, "output": str},
    "preference": {"instruction": str, "input": str, "chosen": str, "rejected": str},
    "mcqa": {"question": str, "choices": list, "answer": int},
    "gsm8k": {"question": str, "answer": str, "final": str},
    "hellaswag": {"query": str, "choices": list, "label": int},
    "text": {"text": str},
}
#: Optional fields a record of a task may carry.
OPTIONAL_FIELDS: dict[str, dict[str, type]] = {
    "sft": {"system": str, "history": list},
    "preference": {"system": str, "history": list},
}


class FormatError(ValueError):
    """A source that cannot be formatted: names the dataset, the file and what was wrong."""


class Drop(Exception):
    """Raised by a formatter to leave a row out; the reason is counted and logged.

    A formatter returning a list may put a `Drop` in it for one part of the row left out.
    """


#: A record key a formatter may set to have something noteworthy counted and logged (then removed).
NOTE = "_note"


@dataclass(frozen=True)
class Formatter:
    name: str
    task: str
    columns: tuple[str, ...]
    convert: Callable[..., Any]
    doc: str = ""
    #: Alternative column sets: the row must hold `columns` or one of these.
    alternatives: tuple[tuple[str, ...], ...] = field(default=())

    def missing_columns(self, found: Iterable[str]) -> list[str] | None:
        """The required columns absent from `found`, or None when some accepted layout matches."""
        found = set(found)
        layouts = (self.columns, *self.alternatives)
        for layout in layouts:
            if set(layout) <= found:
                return None
        return [c for c in self.columns if c not in found]


FORMATTERS: dict[str, Formatter] = {}


def formatter(name: str, task: str, columns: Iterable[str], alternatives: Iterable[Iterable[str]] = ()):
    """Register `fn(row, **options)` as the formatter `name` for rows holding `columns`."""
    if task not in TASK_FIELDS:
        raise ValueError(f"formatter {name}: unknown task {task!r}")

    def register(fn):
        if name in FORMATTERS:
            raise ValueError(f"formatter {name!r} registered twice")
        FORMATTERS[name] = Formatter(
            name, task, tuple(columns), fn, (fn.__doc__ or "").strip(), tuple(tuple(a) for a in alternatives)
        )
        return fn

    return register


def get(name: str) -> Formatter:
    try:
        return FORMATTERS[name]
    except KeyError:
        raise FormatError(f"unknown formatter {name!r}; known: {', '.join(sorted(FORMATTERS))}") from None


def check_record(record: dict, task: str) -> None:
    """Raise ValueError if `record` lacks a field of `task` or has one of the wrong type."""
    for key, kind in TASK_FIELDS[task].items():
        if key not in record:
            raise ValueError(f"record lacks field {key!r}")
        if not isinstance(record[key], kind) or isinstance(record[key], bool):
            raise ValueError(f"field {key!r} should be {kind.__name__}, got {type(record[key]).__name__}")
    for key, kind in OPTIONAL_FIELDS.get(task, {}).items():
        if key in record and not isinstance(record[key], kind):
            raise ValueError(f"field {key!r} should be {kind.__name__}, got {type(record[key]).__name__}")
    if task in ("mcqa", "hellaswag"):
        label = record["answer" if task == "mcqa" else "label"]
        if not 0 <= label < len(record["choices"]):
            raise ValueError(f"answer index {label} outside the {len(record['choices'])} choices")


def format_rows(
    rows: Iterable[dict],
    name: str,
    *,
    dataset: str,
    origin: str,
    columns: Iterable[str] | None = None,
    options: dict | None = None,
) -> Iterator[dict]:
    """Yield the records of `rows` under formatter `name`.

    `dataset` and `origin` (the file the rows came from) only go into error messages and ids.
    `columns` are the source's columns, checked once before any row is read.
    """
    fmt = get(name)
    options = options or {}
    if columns is not None:
        missing = fmt.missing_columns(columns)
        if missing is not None:
            raise FormatError(
                f"dataset {dataset!r} ({origin}): formatter {name!r} needs columns {list(fmt.columns)}"
                + "".join(f" or {list(a)}" for a in fmt.alternatives)
                + f"; missing {missing}; found {sorted(columns)}"
            )
    dropped: Counter[str] = Counter()
    notes: Counter[str] = Counter()
    kept = 0
    for index, row in enumerate(rows):
        try:
            out = fmt.convert(row, **options)
        except Drop as why:
            dropped[str(why)] += 1
            continue
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
            raise FormatError(f"dataset {dataset!r} ({origin}), row {index}: {name}: {err!r}") from err
        many = isinstance(out, list)
        for sub, record in enumerate(out if many else [out]):
            if isinstance(record, Drop):  # one part of a many-record row left out
                dropped[str(record)] += 1
                continue
            note = record.pop(NOTE, None)
            if note:
                notes[note] += 1
            record = {"id": f"{dataset}:{index}" + (f".{sub}" if many else ""), "source": dataset, **record}
            try:
                check_record(record, fmt.task)
            except ValueError as err:
                raise FormatError(f"dataset {dataset!r} ({origin}), row {index}: {name}: {err}") from err
            kept += 1
            yield record
    if dropped:
        log.info("%s: dropped %d rows (%s)", dataset, sum(dropped.values()),
                 ", ".join(f"{why}: {n}" for why, n in sorted(dropped.items())))
    if notes:
        log.info("%s: %s", dataset, ", ".join(f"{why}: {n}" for why, n in sorted(notes.items())))
    if kept == 0:
        raise FormatError(f"dataset {dataset!r} ({origin}): formatter {name!r} produced no records")
    log.info("%s: %d records (%s)", dataset, kept, fmt.task)


# --------------------------------------------------------------------------------------------------
# Helpers shared by formatters.


def text(value: Any) -> str:
    """A field as stripped text; None becomes ''."""
    return "" if value is None else str(value).strip()


def require(**fields: str) -> None:
    """Drop the row if any named field is empty."""
    for key, value in fields.items():
        if not value:
            raise Drop(f"empty {key}")


def normalize(value: str) -> str:
    """Text as compared for sameness (ties, duplicates, held-out items in training sets): Unicode NFKC,
    invisible format characters (zero-width spaces, soft hyphens, byte-order marks) removed, casefolded,
    every run of whitespace one space, none at the ends."""
    value = unicodedata.normalize("NFKC", value)
    value = "".join(c for c in value if unicodedata.category(c) != "Cf").casefold()
    return " ".join(unicodedata.normalize("NFKC", value).split())


def pair(instruction: str, chosen: str, rejected: str, *, system: str = "", input: str = "") -> dict:
    """A preference record, dropping empty sides and non-preferences (chosen and rejected the same text once
    `normalize`d: a tie that differs in case, spacing or Unicode form only)."""
    require(instruction=instruction, chosen=chosen, rejected=rejected)
    if normalize(chosen) == normalize(rejected):
        raise Drop("chosen equals rejected")
    record = {"instruction": instruction, "input": input, "chosen": chosen, "rejected": rejected}
    if system:
        record["system"] = system
    return record


def sft(instruction: str, output: str, *, input: str = "", system: str = "", history: list | None = None) -> dict:
    """An SFT record, dropping rows with an empty instruction or output."""
    require(instruction=instruction, output=output)
    record = {"instruction": instruction, "input": input, "output": output}
    if system:
        record["system"] = system
    if history:
        record["history"] = history
    return record


# --------------------------------------------------------------------------------------------------
# Column-mapping formatters: sources whose rows map onto a record field for field.


def _mapped_sft(name: str, instruction: str, output: str, input: str | None = None, doc: str = ""):
    """Register `name` mapping columns onto an SFT record; `input` is optional (read if present)."""

    def convert(row):
        return sft(text(row[instruction]), text(row[output]), input=text(row.get(input)) if input else "")

    convert.__doc__ = doc
    return formatter(name, "sft", [instruction, output])(convert)


def _mapped_pair(name: str, instruction: str, system: str | None = None, doc: str = ""):
    """Register `name` mapping columns onto a preference record; `system` is optional (read if present)."""

    def convert(row):
        return pair(
            text(row[instruction]),
            text(row["chosen"]),
            text(row["rejected"]),
            system=text(row.get(system)) if system else "",
        )

    convert.__doc__ = doc
    return formatter(name, "preference", [instruction, "chosen", "rejected"])(convert)


_mapped_sft("cosmopedia", "prompt", "text", doc="Cosmopedia: the generation prompt and the textbook text.")
_mapped_sft("alpaca", "instruction", "output", input="input",
            doc="Alpaca layout; `input` may be absent (Maths-College, MathInstruct) or empty.")
_mapped_sft("question_answer", "question", "answer", doc="Question/answer pairs (arxiv-math, glaive-code-assistant).")
_mapped_sft("magicoder_oss", "problem", "solution", doc="Magicoder OSS-Instruct: problem and solution.")
_mapped_sft("magicoder_evol", "instruction", "response", doc="Magicoder Evol-Instruct: instruction and response.")
_mapped_sft("goat", "instruction", "output",
            doc="goat: `input` only repeats the expression in the instruction, and `answer` ends `output`.")
_mapped_sft("metamathqa", "query", "response", doc="MetaMathQA: the augmented query and its response.")

_mapped_pair("orca_dpo", "question", system="system",
             doc="Orca DPO pairs layout (also Code_Vulnerability_Security_DPO): question, system, chosen, rejected.")
_mapped_pair("prompt_pairs", "prompt", system="system",
             doc="DPOTrainer layout: prompt, chosen, rejected, an optional system (truthy-dpo's persona).")


# --------------------------------------------------------------------------------------------------
# SFT formatters that need code.


def _history(turns: list[str]) -> list[list[str]]:
    """Alternating [user, assistant, ...] turns as LLaMA-Factory's history: [[prompt, response], ...]."""
    if not all(turns):
        raise Drop("empty turn in history")
    return [[user, assistant] for user, assistant in zip(turns[0::2], turns[1::2])]


@formatter("lima", "sft", ["conversations"])
def _lima(row):
    """LIMA: alternating user/assistant strings; the last pair is the record, earlier pairs its history."""
    turns = [text(turn) for turn in row["conversations"] or []]
    if not turns:
        raise Drop("empty conversations")
    if len(turns) % 2:
        raise Drop("last user turn has no answer")
    return sft(turns[-2], turns[-1], history=_history(turns[:-2]))


@formatter("wiki_qa", "sft", ["question_id", "question", "answer", "label"])
def _wiki_qa(row, only_correct: bool = True):
    """WikiQA: one row per candidate sentence; label 1 marks a real answer (LLaMA-Factory keeps all)."""
    if only_correct and int(row["label"]) != 1:
        raise Drop("label 0")
    return {**sft(text(row["question"]), text(row["answer"])), "group": str(row["question_id"])}


# --------------------------------------------------------------------------------------------------
# Preference formatters that need code.


@formatter("shp", "preference", ["post_id", "history", "human_ref_A", "human_ref_B", "labels"])
def _shp(row):
    """SHP: two comments on one post; labels 1 means A is preferred, 0 means B."""
    label = int(row["labels"])
    if label not in (0, 1):
        raise ValueError(f"labels should be 0 or 1, got {row['labels']!r}")
    a, b = text(row["human_ref_A"]), text(row["human_ref_B"])
    chosen, rejected = (a, b) if label == 1 else (b, a)
    return {**pair(text(row["history"]), chosen, rejected), "group": str(row["post_id"])}


@formatter("h4rmony", "preference", ["PromptID", "Prompt", "BetterCompletion", "WorseCompletion"])
def _h4rmony(row):
    """The original pairwise H4rmony layout (H4rmony_dpo goes through prompt_pairs)."""
    pref = pair(text(row["Prompt"]), text(row["BetterCompletion"]), text(row["WorseCompletion"]))
    return {**pref, "group": str(row["PromptID"])}


@formatter("chat_pairs", "preference", ["chosen", "rejected"])
def _chat_pairs(row):
    """Chat-format pairs (argilla dpo-mix): both sides repeat the prompt turns and differ in the last answer."""
    chosen, rejected = ([(text(m.get("role")).lower(), text(m.get("content"))) for m in row[side] or []]
                        for side in ("chosen", "rejected"))
    if not chosen or not rejected:
        raise Drop("empty conversation")
    if chosen[-1][0] != "assistant" or rejected[-1][0] != "assistant":
        raise Drop("last turn is not the assistant's")
    if chosen[:-1] != rejected[:-1]:
        raise Drop("rejected prompt turns differ from chosen")
    prompt = chosen[:-1]
    system = prompt.pop(0)[1] if prompt and prompt[0][0] == "system" else ""
    if [role for role, _ in prompt] != ["user", "assistant"] * (len(prompt) // 2) + ["user"]:
        raise Drop("prompt turns do not alternate user/assistant ending with user")
    contents = [content for _, content in prompt]
    record = pair(contents[-1], chosen[-1][1], rejected[-1][1], system=system)
    history = _history(contents[:-1])
    return {**record, "history": history} if history else record


EPFL_QUESTION = ("question", "question_complete", "question_body", "prompt")


def _epfl_pair(question: str, item: dict, tie_break: str | None) -> dict:
    """One A/B judgement: overall (top-level or under ranking) picks chosen; a tie may fall to `tie_break`."""
    ranking = item.get("ranking") or {}
    overall = text(item.get("overall") or ranking.get("overall")).upper()
    note = None
    if overall == "AB":
        rescue = text(ranking.get(tie_break) or item.get(tie_break)).upper() if tie_break else ""
        if rescue not in ("A", "B"):
            raise Drop("tie")
        overall, note = rescue, f"tie broken by {tie_break}"
    if overall not in ("A", "B"):
        raise Drop(f"overall {overall!r} is not A, B or AB" if overall else "no overall preference")
    a, b = text(item.get("A")), text(item.get("B"))
    record = pair(question, *((a, b) if overall == "A" else (b, a)))
    return {**record, NOTE: note} if note else record


@formatter("epfl_pairs", "preference", ["question", "A", "B"],
           alternatives=[(q, *sides) for q in EPFL_QUESTION for sides in (("A", "B"), ("preference",))])
def _epfl_pairs(row, tie_break: str | None = None):
    """EPFL course preferences (datasets.md §3), whose exact layout is unknown: accept every variant seen.

    A row holds A/B/overall itself or a `preference` list of them (one record each); ties ("AB")
    are dropped unless the `tie_break` criterion of the ranking says A or B.
    """
    question = next((text(row[k]) for k in EPFL_QUESTION if text(row.get(k))), "")
    require(question=question)
    group = {"group": str(row["question_id"])} if row.get("question_id") is not None else {}
    items = row.get("preference")
    if items is None:
        return {**_epfl_pair(question, row, tie_break), **group}
    if not isinstance(items, list):
        raise ValueError(f"preference should be a list of A/B judgements, got {type(items).__name__}")
    if not items:
        raise Drop("empty preference list")
    out = []
    for item in items:
        try:
            out.append({**_epfl_pair(question, item, tie_break), **group})
        except Drop as why:
            out.append(why)
    return out


# --------------------------------------------------------------------------------------------------
# Multiple-choice QA.


def _mcqa(question: str, choices: list, answer: int, subject: str = "") -> dict:
    """An MCQA record, dropping an empty question or choice; `subject` kept when known."""
    choices = [text(choice) for choice in choices]
    require(question=question, choices=choices)
    if not all(choices):
        raise Drop("empty choice")
    record = {"question": question, "choices": choices, "answer": answer}
    return {**record, "subject": subject} if subject else record


@formatter("arc", "mcqa", ["question", "choices", "answerKey"])
def _arc(row):
    """ARC: labels are A-D or 1-4, with 3 to 5 options; the answer is the answerKey's position."""
    labels = [text(label) for label in row["choices"]["label"]]
    key = text(row["answerKey"])
    if key not in labels:
        raise ValueError(f"answerKey {key!r} is not one of the labels {labels}")
    return _mcqa(text(row["question"]), row["choices"]["text"], labels.index(key))


@formatter("mmlu", "mcqa", ["question", "choices", "answer"])
def _mmlu(row):
    """MMLU (`all` config): answer is the ClassLabel index 0-3; auxiliary rows have an empty subject."""
    answer = row["answer"]
    if isinstance(answer, str):  # a letter or a digit string, in some mirrors
        answer = answer.strip().upper()
        answer = "ABCD".index(answer) if answer in ("A", "B", "C", "D") else int(answer)
    return _mcqa(text(row["question"]), row["choices"], answer, subject=text(row.get("subject")))


@formatter("mmlu_aux", "mcqa", ["train"])
def _mmlu_aux(row):
    """MMLU's standalone auxiliary_train config nests all fields in one struct column, `train`."""
    return _mmlu(row["train"])


# --------------------------------------------------------------------------------------------------
# Evaluation sets.


def hellaswag_preprocess(text_: str) -> str:
    """lm-evaluation-harness's HellaSwag `preprocess`: strip, [title] to '. ', drop [tags], squash '  '."""
    text_ = text_.strip()
    text_ = text_.replace(" [title]", ". ")
    text_ = re.sub("\\[.*?\\]", "", text_)
    return text_.replace("  ", " ")


#: GSM8K's calculator annotations, `<<48/2=24>>` after each computed number.
CALCULATOR = re.compile(r"<<[^<>]*>>")


@formatter("gsm8k", "gsm8k", ["question", "answer"])
def _gsm8k(row, strip_calculator: bool = False):
    """GSM8K: the rationale ends '#### <number>'; the final answer is what follows it.

    `answer`, the reference that BLEU and ROUGE score against, is the full rationale as the dataset has
    it: its calculator annotations (`<<48/2=24>>`) and the closing `#### N` line included. With
    `strip_calculator` (a formatter option) the annotations are removed, as a model answering in
    plain prose would not write them."""
    question, answer = text(row["question"]), text(row["answer"])
    require(question=question, answer=answer)
    if "####" not in answer:
        raise ValueError("answer has no '####' final-answer marker")
    if strip_calculator:
        answer = CALCULATOR.sub("", answer)
    return {"question": question, "answer": answer, "final": answer.split("####")[-1].strip()}


@formatter("hellaswag", "hellaswag", ["activity_label", "ctx_a", "ctx_b", "endings", "label"])
def _hellaswag(row):
    """HellaSwag exactly as lm-evaluation-harness builds it (capitalize() lowercasing included)."""
    label = text(row["label"])
    if not label:
        raise Drop("no label")
    ctx = row["ctx_a"] + " " + row["ctx_b"].capitalize()
    return {
        "query": hellaswag_preprocess(row["activity_label"] + ": " + ctx),
        "choices": [hellaswag_preprocess(ending) for ending in row["endings"]],
        "label": int(label),
    }


@formatter("wikitext", "text", ["text"])
def _wikitext(row):
    """WikiText lines verbatim, blanks and ' = Heading = ' lines too: perplexity joins them with blank lines."""
    return {"text": row["text"]}
