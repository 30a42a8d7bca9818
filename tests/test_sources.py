"""Raw sources: hub (against a local folder in the hub layout), local files, generators, and their errors."""

import json
import time

import pytest

from zephyr import files
from zephyr.data import records, sources
from zephyr.data.formats import FormatError


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


ORCA_ROWS = [
    {"system": "", "question": f"What is {i} + {i}?", "chosen": f"{2 * i}", "rejected": f"{2 * i + 1}"} for i in range(5)
]


def test_hub_source_loads_a_repository_layout_and_writes_manifest(tmp_path):
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    write_jsonl(repo / "data" / "train.jsonl", ORCA_ROWS)
    source = {"kind": "hub", "id": str(repo), "split": "train", "revision": "main"}
    manifest = sources.fetch_dataset("orca", source, tmp_path / "out", expected_rows=5)
    assert manifest["rows"] == 5 and manifest["columns"] == ["system", "question", "chosen", "rejected"]
    assert manifest["files"]["data.parquet"] == files.sha256(tmp_path / "out" / "data.parquet")
    assert manifest["resolved_revision"] is None  # a local folder has no hub commit
    assert json.loads((tmp_path / "out" / "manifest.json").read_text()) == manifest
    assert sources.load_rows(tmp_path / "out")[2]["question"] == "What is 2 + 2?"


def test_unreachable_hub_dataset_is_a_clear_error_at_once(tmp_path):
    source = {"kind": "hub", "id": "nobody/no-such-dataset", "split": "train", "revision": "main"}
    start = time.monotonic()
    with pytest.raises(sources.SourceError, match=r"dataset 'gone'.*nobody/no-such-dataset"):
        sources.fetch_dataset("gone", source, tmp_path)
    assert time.monotonic() - start < 20  # offline mode fails fast instead of retrying
    assert not (tmp_path / "data.parquet").exists()


@pytest.mark.parametrize("suffix", ["jsonl", "json", "csv", "parquet"])
def test_local_source_reads_each_format(tmp_path, suffix):
    path = tmp_path / f"pairs.{suffix}"
    if suffix == "jsonl":
        write_jsonl(path, ORCA_ROWS)
    elif suffix == "json":
        path.write_text(json.dumps(ORCA_ROWS))
    elif suffix == "csv":
        import pandas as pd

        pd.DataFrame(ORCA_ROWS).to_csv(path, index=False)
    else:
        files.write_parquet(path, ORCA_ROWS)
    manifest = sources.fetch_dataset("pairs", {"kind": "local", "path": str(path)}, tmp_path / "out")
    assert manifest["rows"] == 5
    assert manifest["original"]["sha256"] == files.sha256(path)
    assert sources.load_rows(tmp_path / "out")[4]["chosen"] == "8"


def test_rows_with_different_keys_keep_every_column(tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl", [{"question": "q1", "A": "a"}, {"question": "q2", "B": "b", "system": "s"}])
    manifest = sources.fetch_dataset("mixed", {"kind": "local", "path": str(path)}, tmp_path / "out")
    assert manifest["columns"] == ["question", "A", "B", "system"]
    assert sources.load_rows(tmp_path / "out")[1] == {"question": "q2", "A": None, "B": "b", "system": "s"}


def test_malformed_local_row_names_file_and_line(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(ORCA_ROWS[0]) + "\n\n" + '{"question": "broken",\n')
    with pytest.raises(files.RowError, match=r"pairs\.jsonl: line 3: not valid JSON"):
        sources.fetch_dataset("pairs", {"kind": "local", "path": str(path)}, tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_missing_and_empty_local_files_are_errors(tmp_path):
    with pytest.raises(sources.SourceError, match=r"dataset 'epfl': local file .*nothere\.jsonl not found \(get it from the course\)"):
        sources.fetch_dataset("epfl", {"kind": "local", "path": str(tmp_path / "nothere.jsonl"),
                                       "description": "get it from the course"}, tmp_path / "out")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(sources.SourceError, match=r"dataset 'e'.*holds no rows"):
        sources.fetch_dataset("e", {"kind": "local", "path": str(empty)}, tmp_path / "out")


def test_generator_source_is_byte_identical_across_fetches(tmp_path):
    source = {"kind": "generator", "schema": "gsm8k", "size": 12, "seed": 3}
    first = sources.fetch_dataset("g", source, tmp_path / "a")
    second = sources.fetch_dataset("g", source, tmp_path / "b")
    assert first["files"] == second["files"] and first["rows"] == 12
    assert first["versions"]["reasoning-gym"]


def test_format_stage_names_dataset_file_and_columns_when_a_column_is_missing(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "p", "answer": "a"}])
    sources.fetch_dataset("arxiv", {"kind": "local", "path": str(path)}, tmp_path / "raw")
    with pytest.raises(FormatError) as err:
        records.format_dataset("arxiv", tmp_path / "raw", tmp_path / "arxiv.jsonl", "question_answer")
    message = str(err.value)
    assert "'arxiv'" in message and "data.parquet" in message and "question" in message and "prompt" in message
    assert not (tmp_path / "arxiv.jsonl").exists()


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    import os
    import stat

    files.write_json(tmp_path / "x.json", {"a": 1})
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == 0o666 & ~mask
