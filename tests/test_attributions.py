"""What the configs credit to the report, they quote from it or place in it.

The rule, for config.yaml and config/paper.yaml:

- A *statement* is a YAML comment (one line's text after its `#`; a `#` inside a block scalar or a
  double-quoted scalar is not a comment) or a `description:` / `note:` value (the whole string).
- A statement *mentions the report* when it says "report" or "paper" as a word ("the report", "the
  paper's", "progress report"; not `config/paper.yaml` or `zephyr-report.txt`), "as reported", or names
  a place (below).
- A statement that mentions the report must hold a double-quoted phrase or a *place*: "Table N",
  "Figure N", "§N" (§2, §B.3) or "section N" / "Appendix X".
- Every double-quoted phrase in a statement that mentions the report is a quote of the report. It must
  occur in shared/paper/zephyr-report.txt, compared in lower case with runs of whitespace made one space,
  markdown emphasis (`*`) and backslash escapes (`\\(`) dropped, and curly quotes made straight. An
  ellipsis ("..." or "…") inside a quote separates fragments, each of which must occur. Anything else
  on such a line is quoted with single quotes or backticks.

The report lies outside the repository (shared/paper/, beside or inside the checkout; ZEPHYR_REPORT
names it elsewhere). Where it is absent, as on a clean clone in CI, only the check that its quotes exist is
skipped.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

CONFIGS = [ROOT / "config.yaml", ROOT / "config" / "paper.yaml"]
REPORT_CANDIDATES = [Path(os.environ["ZEPHYR_REPORT"])] if os.environ.get("ZEPHYR_REPORT") else []
REPORT_CANDIDATES += [ROOT / "shared" / "paper" / "zephyr-report.txt",
                      ROOT.parent / "shared" / "paper" / "zephyr-report.txt"]
REPORT = next((path for path in REPORT_CANDIDATES if path.is_file()), None)

#: Words that credit the report. "report" and "paper" only as words of prose (not in a path or a key).
MENTION = re.compile(
    r"(?<![\w/.-])(?:report|paper)s?(?:'s|’s)?(?![\w/-]|\.\w)|\bas\s+reported\b|\bTables?\s+\d|\bFigures?\s+\d|§"
    r"|\b(?:section|appendix)\s+[A-C1-5]\b",
    re.IGNORECASE,
)
#: A place in the report: a table, a figure, a section or an appendix.
PLACE = re.compile(r"\bTables?\s+\d|\bFigures?\s+\d|§\s*[A-C1-5]|\b(?:section|appendix)\s+[A-C1-5]\b",
                   re.IGNORECASE)
QUOTE = re.compile(r'"([^"]*)"')
ELLIPSIS = re.compile(r"\.\.\.|…")
#: A key whose block scalar (`key: >`, `key: |-`, `- key: >`) runs over the more-indented lines below.
BLOCK = re.compile(r"^(\s*)(?:-\s+)?[^\s#][^:#]*:\s*[>|][-+0-9]*\s*(?:#.*)?$")


def normalize(text: str) -> str:
    text = text.replace("’", "'").replace("‘", "'").replace("“", '"').replace("”", '"')
    text = re.sub(r"\\([^A-Za-z])", r"\1", text).replace("*", "")
    return re.sub(r"\s+", " ", text).strip().lower()


def comments(text: str) -> list[tuple[int, str]]:
    """(line number, comment text) of every YAML comment in `text`."""
    found, block_indent = [], None
    for number, line in enumerate(text.splitlines(), 1):
        indent = len(line) - len(line.lstrip())
        if block_indent is not None:
            if not line.strip() or indent > block_indent:
                continue  # a line of a block scalar: a `#` in it is text
            block_indent = None
        in_quotes, comment = False, None
        for i, char in enumerate(line):
            if char == '"' and (i == 0 or line[i - 1] != "\\"):
                in_quotes = not in_quotes
            elif char == "#" and not in_quotes and (i == 0 or line[i - 1].isspace()):
                comment = line[i + 1:].strip()
                break
        if comment is not None:
            found.append((number, comment))
        match = BLOCK.match(line)
        if match:
            block_indent = len(match.group(1))
    return found


def prose_values(text: str) -> list[tuple[str, str]]:
    """(key path, value) of every `description` and `note` string in the YAML `text`."""
    found = []

    def walk(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                where = f"{path}.{key}" if path else str(key)
                if key in ("description", "note") and isinstance(value, str):
                    found.append((where, value))
                else:
                    walk(value, where)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")

    walk(yaml.safe_load(text), "")
    return found


def statements(text: str) -> list[tuple[str, str]]:
    """(where, text) of every comment and every description or note value."""
    return [(f"line {n}", c) for n, c in comments(text)] + prose_values(text)


def problems(text: str, report: str | None) -> list[str]:
    """Every statement of the YAML `text` that credits the report without a quote or a place, or that
    quotes it wrongly (checked only when `report`, the report's text, is given)."""
    haystack = normalize(report) if report is not None else None
    found = []
    for where, statement in statements(text):
        if not MENTION.search(statement):
            continue
        if statement.count('"') % 2:
            found.append(f"{where}: an unbalanced double quote (keep a quote on one line): {statement!r}")
            continue
        quotes = QUOTE.findall(statement)
        if not quotes and not PLACE.search(statement):
            found.append(f"{where}: credits the report with neither a quote nor a place "
                         f"(Table N, Figure N, §N, Appendix X): {statement!r}")
        if haystack is None:
            continue
        for quote in quotes:
            for fragment in filter(None, (normalize(part) for part in ELLIPSIS.split(quote))):
                if fragment not in haystack:
                    found.append(f"{where}: {quote!r} is not in the report: {statement!r}")
    return found


def report_text() -> str | None:
    return REPORT.read_text(encoding="utf-8") if REPORT else None


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_attribution_quotes_or_places_the_report(path):
    """The place-or-quote half needs nothing outside the repository."""
    assert problems(path.read_text(encoding="utf-8"), None) == []


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_quote_of_the_report_is_in_it(path):
    if REPORT is None:
        pytest.skip("shared/paper/zephyr-report.txt is not here (a clean clone): the quotes cannot be checked")
    assert problems(path.read_text(encoding="utf-8"), report_text()) == []


REPORT_SNIPPET = (
    "Our training pipeline relies on LlamaFactory (Zheng et al., 2024). Interestingly, the cosine\n"
    "learning rate scheduler consistently leads to a lower final validation loss. [H4rmony \\(revision\n"
    "ee03d79\\)](#). *Exp DPO 3*: pairs of prompts and responses. ZEPHYR’s performance."
)


@pytest.mark.parametrize("text", [
    "# The report uses 1,000 warmup steps.\n",
    "# as the report scored it\n",
    "x: 1  # the paper's D_S\n",
    "# as reported, cosine wins\n",
    "d:\n  description: The main SFT mixture (paper's D_S).\n",
    "d:\n  note: >\n    The report gives no caps\n    for D_L.\n",
    "d:\n  - {a: 1, description: the report does not say which set}\n",
])
def test_an_unquoted_unplaced_attribution_fails(text):
    assert len(problems(text, REPORT_SNIPPET)) == 1
    assert len(problems(text, None)) == 1


@pytest.mark.parametrize("text", [
    "# Table 2 lists 1,000 warmup steps.\n",
    "# the report's Figure 1 shows it\n",
    "# the report (§4) says so\n",
    "# the report, Appendix B.3, says so\n",
    '# The report: "Our training pipeline relies on LlamaFactory".\n',
    '# the report says "the cosine learning rate scheduler consistently leads to a lower" (§4)\n',
    '# the report cites "H4rmony (revision ee03d79)"\n',
    '# the report\'s "Exp DPO 3" and "ZEPHYR\'s performance"\n',
    '# the report: "Our training pipeline ... LlamaFactory"\n',
    "d:\n  description: 'the report''s \"Exp DPO 3\" (§2)'\n",
    # no mention of the report: quotes and words of paths are not checked
    '# LlamaFactory joins them with "\\n"; see config/paper.yaml and zephyr-report.txt\n',
    "# reported_size and report_to are keys, results/report a folder\n",
    # a `#` in a block scalar (here not a description) is text, not a comment
    "d:\n  text: >\n    GSM8K's answer, the closing `#### N` line\n    # the report\nx: 1\n",
])
def test_a_quoted_or_placed_attribution_passes(text):
    assert problems(text, REPORT_SNIPPET) == []


@pytest.mark.parametrize("text", [
    '# the report says "cosine always wins" (§4)\n',
    '# Table 2: "Batch Size 128"\n',
    '# the report: "Our training pipeline ... Hugging Face"\n',
    "d:\n  description: 'the report''s \"Exp DPO 4\"'\n",
    '# Appendix B.3: "cosine always wins"\n',
])
def test_a_quote_the_report_does_not_hold_fails(text):
    assert len(problems(text, REPORT_SNIPPET)) == 1
    assert problems(text, None) == []  # without the report, a quote cannot be checked


def test_a_quote_split_over_lines_fails():
    text = '# the report observes that "the cosine learning rate\n# scheduler consistently leads" (§4)\n'
    assert [p.split(":")[0] for p in problems(text, REPORT_SNIPPET)] == ["line 1", "line 2"]


def test_comments_skip_block_scalars_and_double_quoted_hashes():
    text = ('a: >\n  text # not a comment\n  more\nb: "x # y"  # a comment\n'
            "# top\nc:\n  - d: |-\n      # text too\n  - e: 1 # last\n")
    assert comments(text) == [(4, "a comment"), (5, "top"), (9, "last")]
