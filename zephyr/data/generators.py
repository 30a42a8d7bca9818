"""Seeded stand-ins for the study's datasets, in the real datasets' schemas.

No machine here reaches the Hugging Face hub, so the default experiment draws its data from the
procedural generators of `reasoning-gym`. Each schema below emits rows with the columns of the real
dataset it stands in for (its dataset card on the hub; `config/paper.yaml` names each), so they pass
through the same formatters.

Every row is a pure function of (schema, size, seed, options): reasoning-gym items are indexed by a
seed derived with SHA-256 (never `hash()`), and our own choices come from one `random.Random` per
call, consumed row by row, so a smaller size yields a prefix of a larger one. Each schema derives its
own reasoning-gym seed, so e.g. the GSM8K stand-in (evaluation) and the MetaMathQA one (training)
do not share problem instances under the same seed.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import operator
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from importlib import metadata

SCHEMAS: dict[str, Callable[..., list[dict]]] = {}


def schema(name: str):
    """Register `fn(size, seed, **options)` as the generator of schema `name`."""

    def register(fn):
        SCHEMAS[name] = fn
        return fn

    return register


def generate(schema: str, size: int, seed: int, **options) -> list[dict]:
    """Exactly `size` rows of `schema`, identical for identical arguments in any process."""
    if schema not in SCHEMAS:
        raise ValueError(f"unknown generator schema {schema!r}; known: {', '.join(sorted(SCHEMAS))}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"generator {schema!r}: size must be a positive integer, got {size!r}")
    fn = SCHEMAS[schema]
    accepted = [p for p in inspect.signature(fn).parameters if p not in ("size", "seed")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"generator {schema!r}: unknown options {unknown}; accepted: {accepted}")
    rows = fn(size, int(seed), **options)
    assert len(rows) == size, (schema, len(rows), size)
    return rows


def package_version() -> str:
    """reasoning-gym's installed version, for provenance manifests (its output may change across versions)."""
    return metadata.version("reasoning-gym")


# --------------------------------------------------------------------------------------------------
# Seeds and reasoning-gym items.


def _seed(*parts) -> int:
    """A 32-bit seed from `parts`, stable across processes (SHA-256, not the salted `hash()`)."""
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:4], "big")


def _rng(schema_: str, seed: int) -> random.Random:
    return random.Random(_seed(schema_, seed, "choices"))


def _items(task: str, size: int, seed: int, schema_: str, keep: Callable[[dict], bool] | None = None,
           key: Callable[[dict], str] | None = None) -> list[dict]:
    """The first `size` items of reasoning-gym task `task` that pass `keep` and, given `key`, are
    not repeats (small templates recur). Items are indexed by seed + index, so a longer pool only
    appends. Imported lazily: the DAG can load without reasoning-gym."""
    import reasoning_gym

    pool = size if keep is None and key is None else size + size // 10 + 10
    while True:
        ds = reasoning_gym.create_dataset(task, size=pool, seed=_seed(schema_, seed, task))
        items, seen = [], set()
        for item in (ds[i] for i in range(pool)):
            if (keep is None or keep(item)) and (key is None or key(item) not in seen):
                items.append(item)
                seen.add(key(item) if key else None)
        if len(items) >= size:
            return items[:size]
        pool *= 2


_SUFFIX = re.compile(r"(?:\s*(?:Give (?:the|your|only)\b[^.?]*\.|Do not include units\.))+\s*$")
_NUM = re.compile(r"(?<![\d.,])\d+(?:,\d{3})*(?:\.\d+)?")


@dataclass(frozen=True)
class Problem:
    """A gsm_symbolic word problem: question without reasoning-gym's answer-format suffix, the
    worked solution's steps (`body`, no '####' line) and the final answer as text."""

    question: str
    body: str
    answer: str
    name: str = ""

    @property
    def solution(self) -> str:
        """GSM8K style: the steps, then '#### <answer>'."""
        return f"{self.body}\n#### {self.answer}"


def _problems(size: int, seed: int, schema_: str) -> list[Problem]:
    """`size` distinct gsm_symbolic problems; a few templates give negative results ('-1 years
    old'), which are left out."""
    out = []
    items = _items("gsm_symbolic", size, seed, schema_, lambda i: Decimal(i["answer"]) >= 0, lambda i: i["question"])
    for item in items:
        answer = str(item["answer"]).strip()
        cot = item["metadata"]["answer_cot"].rstrip()
        # The answer_cot mostly ends '#### <answer>', but sometimes '#### 36.0' for '36': rebuild it.
        body, sep, _ = cot.rpartition("####")
        body = (body if sep else cot).rstrip()
        name = str((item["metadata"].get("variables") or {}).get("name", ""))
        out.append(Problem(_SUFFIX.sub("", item["question"]).strip(), body, answer, name))
    return out


def _exact(expression: str) -> Fraction:
    """The exact value of a basic_arithmetic expression (+ - * / parentheses, unary minus)."""
    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}

    def value(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return Fraction(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -value(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            return ops[type(node.op)](value(node.left), value(node.right))
        raise ValueError(f"unexpected arithmetic {ast.dump(node)}")

    return value(ast.parse(expression, mode="eval").body)


def _arithmetic(size: int, seed: int, schema_: str) -> list[tuple[str, str]]:
    """(expression, answer) pairs from basic_arithmetic, keeping only items whose answer is exact:
    its floor divisions make about 1% of answers wrong (e.g. '758 / -( ... )' answered 0)."""
    exact = lambda item: _exact(item["metadata"]["expression"]) == int(item["answer"])  # noqa: E731
    items = _items("basic_arithmetic", size, seed, schema_, exact)
    return [(i["metadata"]["expression"], str(i["answer"]).strip()) for i in items]


def _questions(source: str, size: int, seed: int, schema_: str) -> list[tuple[str, str]]:
    """(question, numeric answer) pairs from word problems or bare arithmetic."""
    if source == "gsm_symbolic":
        return [(p.question, p.answer) for p in _problems(size, seed, schema_)]
    if source == "basic_arithmetic":
        return [(f"What is {e}?", a) for e, a in _arithmetic(size, seed, schema_)]
    raise ValueError(f"{schema_}: source must be 'gsm_symbolic' or 'basic_arithmetic', got {source!r}")


# --------------------------------------------------------------------------------------------------
# Wrong answers: distractors, rejected solutions, false endings.


def _wrong(answer: str, k: int, rng: random.Random) -> list[str]:
    """`k` distinct plausible wrong values for the number `answer`: near misses and scale slips,
    with its decimal places, never negative when it is not."""
    d = Decimal(answer.replace(",", ""))
    places = max(0, -d.as_tuple().exponent)
    n = int(d.scaleb(places))  # in units of the last decimal place
    seen, out = {n}, []
    for attempt in range(200):
        if attempt < 100:
            if rng.random() < 0.6:
                m = n + rng.choice((-1, 1)) * rng.randint(1, max(3, abs(n) // 5))
            else:
                m = round(n * rng.choice((0.5, 0.75, 1.25, 1.5, 2, 10)))
        else:  # a guaranteed way out for tiny answers
            m = n + attempt - 99
        if m in seen or (m < 0 <= n):
            continue
        seen.add(m)
        out.append(str(Decimal(m).scaleb(-places)) if places else str(m))
        if len(out) == k:
            return out
    raise AssertionError(f"no {k} wrong values for {answer!r}")  # unreachable


def _with_result(p: Problem, value: str) -> str:
    """`p`'s solution reaching `value`: the last step stating the true result now states `value`,
    and so does the '####' line, so the slip is consistent and visible."""
    lines, target = p.body.split("\n"), Decimal(p.answer)
    for i in reversed(range(len(lines))):
        hits = [m for m in _NUM.finditer(lines[i]) if Decimal(m.group().replace(",", "")) == target]
        if hits:
            lines[i] = lines[i][: hits[-1].start()] + value + lines[i][hits[-1].end():]
            break
    return "\n".join(lines) + f"\n#### {value}"


# --------------------------------------------------------------------------------------------------
# SFT schemas.


@schema("gsm8k")
def gsm8k(size: int, seed: int) -> list[dict]:
    """openai/gsm8k: {question, answer = rationale + '#### N'}."""
    return [{"question": p.question, "answer": p.solution} for p in _problems(size, seed, "gsm8k")]


@schema("metamathqa")
def metamathqa(size: int, seed: int, type: str = "GSM_AnsAug") -> list[dict]:
    """meta-math/MetaMathQA: the response ends 'The answer is: N' (MetaMathQA's marker)."""
    return [
        {"type": type, "query": p.question, "original_question": p.question,
         "response": f"{p.body}\nThe answer is: {p.answer}"}
        for p in _problems(size, seed, "metamathqa")
    ]


_GOAT_ASKS = ("What is {}?", "Calculate {}.", "Compute {}.", "Evaluate {}.", "Determine the value of {}.",
              "Solve {}.", "What is the result of {}?", "Find the value of {}.", "{} =?")


@schema("goat")
def goat(size: int, seed: int) -> list[dict]:
    """tiedong/goat: instruction asks in words, input is the bare expression, output 'expr = N'."""
    rng = _rng("goat", seed)
    return [
        {"instruction": rng.choice(_GOAT_ASKS).format(e), "input": e, "output": f"{e} = {a}", "answer": a}
        for e, a in _arithmetic(size, seed, "goat")
    ]


ALPACA_TASKS = ("simple_equations", "gcd", "lcm", "prime_factorization", "letter_counting")


@schema("alpaca")
def alpaca(size: int, seed: int, tasks: list[str] | tuple[str, ...] = ALPACA_TASKS) -> list[dict]:
    """{instruction, input, output} (Open-Platypus/MathInstruct slots): tasks taken in turn."""
    import reasoning_gym

    tasks = list(tasks)
    unknown = [t for t in tasks if t not in reasoning_gym.factory.DATASETS]
    if not tasks or unknown:
        raise ValueError(f"alpaca: tasks must be reasoning-gym tasks; unknown: {unknown or 'none given'}")
    per = -(-size // len(tasks))
    items = {t: _items(t, per, seed, "alpaca") for t in tasks}
    rows = []
    for i in range(size):
        item = items[tasks[i % len(tasks)]][i // len(tasks)]
        rows.append({"instruction": item["question"].strip(), "input": "", "output": str(item["answer"]).strip()})
    return rows


# --------------------------------------------------------------------------------------------------
# Preference schemas: a correct worked solution against one with a slip in the final step.

EPFL_COURSES = (101, 202, 303, 404)


@schema("epfl_pairs")
def epfl_pairs(size: int, seed: int, tie_share: float = 0.05, pairs: int = 1) -> list[dict]:
    """Course-internal EPFL layout (datasets.md §3). The correct side is A or B at random; about
    `tie_share` of pairs are ties (overall 'AB') that the correctness criterion breaks, so the real
    tie-dropping path runs. Each question carries 1..`pairs` pairs."""
    rng = _rng("epfl_pairs", seed)
    rows = []
    for i, p in enumerate(_problems(size, seed, "epfl_pairs")):
        n = rng.randint(1, max(1, pairs))
        prefs = []
        for wrong in _wrong(p.answer, n, rng):
            good, bad = p.solution, _with_result(p, wrong)
            right = rng.choice("AB")
            a, b = (good, bad) if right == "A" else (bad, good)
            overall = "AB" if rng.random() < tie_share else right
            clarity = rng.choice((right, right, "AB"))
            prefs.append({"A": a, "B": b, "ranking": {"overall": overall, "correctness": right, "clarity": clarity}})
        rows.append({"question_id": i + 1, "course_id": rng.choice(EPFL_COURSES), "question": p.question,
                     "preference": prefs})
    return rows


_TUTOR_SYSTEMS = (
    "You are a helpful math tutor. Solve the problem step by step and state the final answer.",
    "You are an AI assistant that explains its reasoning. Think step by step.",
    "You are a patient teacher. Show your working, then give the answer.",
)


@schema("orca_dpo")
def orca_dpo(size: int, seed: int) -> list[dict]:
    """Intel/orca_dpo_pairs: {system, question, chosen, rejected}."""
    rng = _rng("orca_dpo", seed)
    return [
        {"system": rng.choice(_TUTOR_SYSTEMS), "question": p.question, "chosen": p.solution,
         "rejected": _with_result(p, _wrong(p.answer, 1, rng)[0])}
        for p in _problems(size, seed, "orca_dpo")
    ]


# --------------------------------------------------------------------------------------------------
# Multiple choice.

LABELS = ("A", "B", "C", "D")


def _choices(answer: str, rng: random.Random) -> tuple[list[str], int]:
    """Four options, the answer at a random position among three wrong numbers."""
    options = _wrong(answer, 3, rng)
    position = rng.randrange(4)
    options.insert(position, answer)
    return options, position


@schema("arc")
def arc(size: int, seed: int, source: str = "gsm_symbolic") -> list[dict]:
    """allenai/ai2_arc: {id, question, choices {text, label}, answerKey}."""
    rng = _rng("arc", seed)
    rows = []
    for i, (question, answer) in enumerate(_questions(source, size, seed, "arc")):
        options, position = _choices(answer, rng)
        rows.append({"id": f"Gen_{seed}_{i}", "question": question,
                     "choices": {"text": options, "label": list(LABELS)}, "answerKey": LABELS[position]})
    return rows


@schema("mmlu_aux")
def mmlu_aux(size: int, seed: int, source: str = "basic_arithmetic") -> list[dict]:
    """cais/mmlu auxiliary_train (standalone config): everything nested under `train`, subject ''."""
    rng = _rng("mmlu_aux", seed)
    rows = []
    for question, answer in _questions(source, size, seed, "mmlu_aux"):
        options, position = _choices(answer, rng)
        rows.append({"train": {"answer": position, "choices": options, "question": question, "subject": ""}})
    return rows


# --------------------------------------------------------------------------------------------------
# Evaluation text.


def _steps(p: Problem) -> list[str]:
    """The solution's non-empty lines, bullets and indentation removed."""
    return [re.sub(r"^[\s•*-]+", "", line).strip() for line in p.body.split("\n") if line.strip()]


@schema("hellaswag")
def hellaswag(size: int, seed: int) -> list[dict]:
    """Rowan/hellaswag validation: the context is the problem and the first steps of its solution,
    ctx_b the first words of the next step; the true ending finishes that step, the three false
    ones state a wrong number in its place."""
    rng = _rng("hellaswag", seed)
    rows = []
    for i, p in enumerate(_problems(size, seed, "hellaswag")):
        steps = _steps(p)
        spots = [(j, cut) for j, step in enumerate(steps) for cut in (2, 3, 4)
                 if len(step.split()) > cut and _NUM.search(" ".join(step.split()[cut:]))]
        if spots:
            j, cut = rng.choice(spots)
            words = steps[j].split()
            before, ctx_b, ending = steps[:j], " ".join(words[:cut]), " ".join(words[cut:])
        else:  # no step with a number to change: ask for the answer itself
            before, ctx_b, ending = steps, "The answer is", p.answer
        last = list(_NUM.finditer(ending))[-1]
        endings = [ending[: last.start()] + w + ending[last.end():] for w in _wrong(last.group(), 3, rng)]
        position = rng.randrange(4)
        endings.insert(position, ending)
        ctx_a = " ".join([p.question, *before])
        ctx_b = ctx_b[:1].lower() + ctx_b[1:]
        rows.append({"ind": i, "activity_label": "Solving a word problem", "ctx_a": ctx_a, "ctx_b": ctx_b,
                     "ctx": f"{ctx_a} {ctx_b}", "endings": endings, "source_id": f"reasoning_gym~gsm_symbolic~{i}",
                     "split": "val", "split_type": "indomain", "label": str(position)})
    return rows


def _wiki(text: str) -> str:
    """WikiText tokenisation: punctuation spaced out, '1,000' -> '1 @,@ 000', '0.5' -> '0 @.@ 5',
    'well-known' -> 'well @-@ known'."""
    text = re.sub(r"(?<=\d),(?=\d)", "\0", text)
    text = re.sub(r"(?<=\d)\.(?=\d)", "\1", text)
    text = re.sub(r"(?<=\w)-(?=\w)", "\2", text)
    text = re.sub(r"([,.;:?!()\"=/+*×÷$€£%])", r" \1 ", text).replace("'s ", " 's ")
    text = text.replace("\0", " @,@ ").replace("\1", " @.@ ").replace("\2", " @-@ ")
    return " ".join(text.split())


@schema("wikitext")
def wikitext(size: int, seed: int) -> list[dict]:
    """Salesforce/wikitext raw rows: one article per problem, ' = Title = \\n' headings framed by ''
    rows, paragraphs ' ... \\n' back to back within a section. `size` counts rows, as in WikiText."""
    lines: list[str] = []
    for p in _problems(-(-size // 9), seed, "wikitext"):  # nine rows an article
        steps = [s if s[-1] in ".?!:" else s + "." for s in _steps(p)] + [f"The answer is {p.answer}."]
        half = (len(steps) + 1) // 2
        title = f"{p.name}'s problem" if p.name else "Word problem"
        lines += ["", f" = {_wiki(title)} = \n", "", f" {_wiki(p.question)} \n", "", " = = Solution = = \n", "",
                  f" {_wiki(' '.join(steps[:half]))} \n", f" {_wiki(' '.join(steps[half:]))} \n"]
    return [{"text": line} for line in lines[:size]]
