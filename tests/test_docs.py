"""The manual: README.md is a front door, the pages it promises exist, every relative link resolves, and the
configuration reference is what the schema gives now."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from zephyr import docs

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["running.md", "configuration.md", "study.md", "performance.md", "measurements.md", "llamafactory.md",
         "development.md", "new_task_guide.md"]
MARKDOWN = [ROOT / "README.md", ROOT / "config" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _prose(text: str) -> str:
    """The text outside fenced code blocks and inline code, where a link is a link."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: its text without markup, lower case, every character but letters,
    digits, `_`, `-` and spaces dropped, each space a hyphen."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    """Every heading's anchor in a Markdown file, a repeated one numbered as GitHub numbers it (-1, -2...)."""
    seen: dict[str, int] = {}
    out = set()
    for line in re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M).splitlines():
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            slug = _slug(match.group(1))
            out.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
            seen[slug] = seen.get(slug, 0) + 1
    return out


def _links(path: Path) -> list[str]:
    return LINK.findall(_prose(path.read_text()))


def test_every_page_of_the_manual_exists():
    missing = [page for page in PAGES if not (ROOT / "docs" / page).is_file()]
    assert not missing


def test_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200
    assert any("make run" in line for line in lines[:40]) and any("make test" in line for line in lines[:40])


def _broken(page: Path, root: Path = ROOT) -> list[str]:
    """The relative links of `page` that name no file, or no heading of the file they name."""
    broken = []
    for link in _links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", link):  # http(s), mailto: not this repository's to check
            continue
        target, _, anchor = link.partition("#")
        resolved = (page.parent / target).resolve() if target else page
        if not resolved.is_relative_to(root):
            # The report lives beside the repository (../shared/paper), not in it: a clone does not have it.
            continue
        if not resolved.exists():
            broken.append(f"{link}: no such file")
        elif anchor and (resolved.suffix != ".md" or anchor not in _anchors(resolved)):
            broken.append(f"{link}: no heading with that anchor")
    return broken


@pytest.mark.parametrize("page", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    assert not _broken(page), f"{page.relative_to(ROOT)}: {_broken(page)}"


def test_a_broken_link_or_anchor_is_found(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "b.md").write_text("# Running on GPUs\n")
    page = tmp_path / "docs" / "a.md"
    page.write_text("[ok](b.md#running-on-gpus) [file](c.md) [anchor](b.md#running) [self](#nowhere) "
                    "[web](https://example.org/x.md) [outside](../../shared/x.md)\n# Here\n")
    assert _broken(page, tmp_path) == ["c.md: no such file", "b.md#running: no heading with that anchor",
                                       "#nowhere: no heading with that anchor"]


def test_slugs_follow_githubs_rules(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Zephyr\n## On GPUs and on a SLURM cluster\n## The `zephyr/` package, in order\n"
                    "```\n# not a heading\n```\n## Tests\n## Tests\n### [LlamaFactory](http://x) runs\n")
    assert _anchors(page) == {"zephyr", "on-gpus-and-on-a-slurm-cluster", "the-zephyr-package-in-order", "tests",
                              "tests-1", "llamafactory-runs"}


def test_links_skip_code():
    page = "See [running](docs/running.md) and ![dag](docs/rulegraph.svg).\n`[no](x.md)`\n```\n[no](y.md)\n```\n"
    assert LINK.findall(_prose(page)) == ["docs/running.md", "docs/rulegraph.svg"]


def test_configuration_reference_is_fresh():
    """A stale page fails here: regenerate it with `make docs` after changing the schema."""
    assert (ROOT / "docs" / "configuration.md").read_text() == docs.reference()


def test_check_fails_on_a_stale_page(tmp_path):
    page = tmp_path / "configuration.md"
    assert docs.main(["--out", str(page)]) == 0
    assert docs.main(["--check", "--out", str(page)]) == 0
    page.write_text(page.read_text().replace("| `experiment` |", "| `experiment_name` |"))
    assert docs.main(["--check", "--out", str(page)]) == 1


def test_reference_walks_refs_maps_lists_and_kinds():
    schema = {
        "type": "object", "required": ["things"],
        "$defs": {"seed": {"type": "integer", "minimum": 0, "maximum": 9, "description": "A seed."},
                  "hub": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}},
        "properties": {
            "things": {"type": "object", "description": "Things | by name.", "propertyNames": {"pattern": "^[a-z]+$"},
                       "additionalProperties": {"type": "object", "properties": {
                           "seed": {"$ref": "#/$defs/seed", "default": 3, "description": "Its seed."},
                           "mode": {"enum": [None, "a"], "default": None},
                           "size": {"oneOf": [{"const": "auto"}, {"type": "integer", "minimum": 1}]},
                           "source": {"type": "object", "properties": {"kind": {"enum": ["hub"]}},
                                      "allOf": [{"if": {"properties": {"kind": {"const": "hub"}}},
                                                 "then": {"$ref": "#/$defs/hub"}}]}}}},
            "rows": {"type": "array", "default": [], "items": {"type": "object", "properties": {
                "tags": {"type": ["array", "null"], "items": {"type": "string"}}}}},
            "open": {"type": "object", "properties": {"x": {"type": "boolean"}}},
        },
    }
    page = docs.reference(schema)
    for row in [
        "| `things` | mapping by name (required) | each name matches `^[a-z]+$` |  | Things \\| by name. |",
        "| `things.<name>.seed` | integer | ≥ 0; ≤ 9 | `3` | Its seed. |",
        "| `things.<name>.mode` | string or null | one of `null`, `a` | `null` |  |",
        "| `things.<name>.size` | `auto` or integer | ≥ 1 |  |  |",
        "| `things.<name>.source.id` | string (required) |  |  | When `kind: hub`. |",
        "| `rows` | array |  | `[]` |  |",
        "| `rows[].tags` | array of string or null |  |  |  |",
        "| `open` | object (other keys pass through) |  |  |  |",
    ]:
        assert row in page
    assert [line for line in page.splitlines() if line.startswith("## ")] == ["## things", "## rows", "## open"]
