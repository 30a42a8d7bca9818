"""Raw sources: hub (against a local folder in the hub layout, or a stand-in hub client), local files,
generators, their errors, and the lock file of pinned hub commits."""

import json
import time
from pathlib import Path

import pytest

from conftest import run
from zephyr import files, lock, paths
from zephyr.data import records, sources
from zephyr.data.formats import FormatError

ROOT_DIR = Path(__file__).resolve().parent.parent


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


ORCA_ROWS = [
    {"system": "", "question": f"What is {i} + {i}?", "chosen": f"{2 * i}", "rejected": f"{2 * i + 1}"}
    for i in range(5)
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


def test_unreachable_hub_dataset_is_a_clear_error_at_once(tmp_path, connections):
    source = {"kind": "hub", "id": "nobody/no-such-dataset", "split": "train", "revision": "main"}
    with pytest.raises(sources.SourceError, match=r"dataset 'gone'.*nobody/no-such-dataset"):
        sources.fetch_dataset("gone", source, tmp_path)
    assert connections == []  # offline: it fails at once, with nothing to retry
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
    path = write_jsonl(tmp_path / "mixed.jsonl",
                       [{"question": "q1", "A": "a"}, {"question": "q2", "B": "b", "system": "s"}])
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
    with pytest.raises(sources.SourceError,
                       match=r"dataset 'epfl': local file .*nothere\.jsonl not found \(get it from the course\)"):
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


@pytest.mark.parametrize("suffix", ["jsonl", "json", "csv"])
def test_a_local_file_that_is_not_utf8_names_file_line_and_column(tmp_path, suffix):
    rows = [{"question": "What is 1 + 1?", "chosen": "2", "rejected": "3"},
            {"question": "Caf\u00e9 au lait?", "chosen": "oui", "rejected": "non"}]
    if suffix == "jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    elif suffix == "json":
        text = json.dumps(rows, ensure_ascii=False, indent=1)
    else:
        text = "question,chosen,rejected\n" + "".join(f"{r['question']},{r['chosen']},{r['rejected']}\n" for r in rows)
    path = tmp_path / f"pairs.{suffix}"
    path.write_bytes(text.encode("latin-1"))  # what a Windows editor may save
    line_text = next(line for line in text.splitlines() if "\u00e9" in line)
    line = text.splitlines().index(line_text) + 1
    column = len(line_text[:line_text.index("\u00e9")].encode("latin-1")) + 1
    with pytest.raises(files.RowError,
                       match=rf"pairs\.{suffix}: line {line}, column {column}: not UTF-8 text \(byte 0xe9\)"):
        sources.fetch_dataset("pairs", {"kind": "local", "path": str(path)}, tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_a_utf8_byte_order_mark_is_read_as_text(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_bytes("\ufeffquestion,chosen\nq,a\n".encode("utf-8"))
    assert files.read_rows(path) == [{"question": "q", "chosen": "a"}]


def test_a_column_holding_a_list_and_text_names_the_column_and_both_lines(tmp_path):
    rows = [{"question": "q1", "chosen": ["a", "b"]}, {"question": "q2", "chosen": ["c"]},
            {"question": "q3", "chosen": "d"}, {"question": "q4", "chosen": ["e"]}]
    path = tmp_path / "mixed.jsonl"
    path.write_text(json.dumps(rows[0]) + "\n\n" + "".join(json.dumps(r) + "\n" for r in rows[1:]))
    # a blank line 2: the rows are on lines 1, 3, 4, 5; the text is the third row, on line 4
    with pytest.raises(sources.SourceError) as err:
        sources.fetch_dataset("mixed", {"kind": "local", "path": str(path)}, tmp_path / "out")
    assert f"dataset 'mixed': {path}: column 'chosen' holds a list at line 1 but text at line 4" in str(err.value)
    assert not (tmp_path / "out" / "data.parquet").exists()


def test_a_conflicting_row_of_a_json_list_is_named_by_item(tmp_path):
    rows = [{"q": "a", "n": {"x": 1}}, {"q": "b", "n": None}, {"q": "c", "n": 5}]
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps(rows))
    with pytest.raises(sources.SourceError, match=r"column 'n' holds an object at item 0 but a number at item 2"):
        sources.fetch_dataset("mixed", {"kind": "local", "path": str(path)}, tmp_path / "out")


def test_local_content_key_follows_the_bytes_not_the_mtime(tmp_path):
    import os

    path = write_jsonl(tmp_path / "pairs.jsonl", ORCA_ROWS)
    source = {"kind": "local", "path": str(path)}
    before = paths.content_key(source)
    assert before == {"sha256": files.sha256(path)}
    stat = path.stat()
    write_jsonl(path, ORCA_ROWS[:2])
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns - 10**12))  # new bytes, older mtime (cp -p)
    assert paths.content_key(source) == {"sha256": files.sha256(path)} != before
    assert paths.content_key({"kind": "local", "path": str(tmp_path / "gone.jsonl")}) == {"sha256": None}
    hub = {"kind": "hub", "id": "a/b", "split": "train", "revision": "abc123"}
    assert paths.content_key(hub) == {"revision": "abc123"}


@pytest.mark.parametrize("writer", ["atomic", "staged_dir"])
def test_what_a_killed_writer_leaves_is_removed_by_the_next_write(tmp_path, writer):
    import signal
    import sys

    target = tmp_path / ("data.parquet" if writer == "atomic" else "model")
    body = {  # write half the output, then SIGKILL this very process, mid-write
        "atomic": "with files.atomic(target, 'wb') as handle:\n"
                  "    handle.write(b'half')\n    handle.flush()\n    kill()",
        "staged_dir": "with files.staged_dir(target) as staged:\n"
                      "    (staged / 'model.safetensors').write_bytes(b'half')\n    kill()",
    }[writer]
    code = ("import os, signal, sys\nfrom pathlib import Path\nfrom zephyr import files\n"
            "target = Path(sys.argv[1])\ndef kill():\n    os.kill(os.getpid(), signal.SIGKILL)\n" + body)
    result = run([sys.executable, "-c", code, str(target)], cwd=ROOT_DIR, timeout=300)  # its own process group
    assert result.returncode == -signal.SIGKILL
    left = [p.name for p in tmp_path.iterdir()]
    assert not target.exists() and len(left) == 1
    assert left[0].startswith(f".{target.name}.") and left[0].endswith(".part")

    if writer == "atomic":
        files.write_json(target, {"done": True})
    else:
        with files.staged_dir(target) as staged:
            (staged / "model.safetensors").write_bytes(b"whole")
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


# ---- pinned revisions: the lock file ----------------------------------------------------------

HUB = {"kind": "hub", "id": "org/pairs", "split": "train", "revision": "main"}
MAIN, V2 = "a" * 40, "b" * 40


@pytest.fixture
def fake_hub(monkeypatch):
    """The hub client and load_dataset stood in for, online: `calls` in order; `commits` what each revision
    resolves to; `rows` what a download holds."""
    from types import SimpleNamespace

    import datasets
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE")
    hub = SimpleNamespace(calls=[], commits={"main": MAIN, "v2": V2}, rows=ORCA_ROWS)

    def dataset_info(self, repo_id, *, revision=None, **_):
        hub.calls.append(("resolve", repo_id, revision))
        return SimpleNamespace(sha=hub.commits[revision])

    def load_dataset(path, *, split, revision=None, **_):
        hub.calls.append(("download", path, revision))
        return datasets.Dataset.from_list(hub.rows)

    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", dataset_info)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return hub


def test_the_lock_file_sits_beside_the_config():
    assert lock.lock_path("config/paper.yaml") == Path("config/paper.lock.yaml")
    assert lock.lock_path("config.yaml") == Path("config.lock.yaml")


def test_a_hub_revision_is_resolved_before_the_download_which_asks_for_that_commit(tmp_path, fake_hub):
    lock_file = tmp_path / "config.lock.yaml"
    manifest = sources.fetch_dataset("orca", HUB, tmp_path / "out", lock_file=lock_file)
    assert fake_hub.calls == [("resolve", "org/pairs", "main"), ("download", "org/pairs", MAIN)]
    assert manifest["resolved_revision"] == MAIN and manifest["source"] == HUB
    entry = {"id": "org/pairs", "split": "train", "revision": "main", "commit": MAIN, "rows": 5}
    assert lock.read(lock_file) == {"datasets": {"orca": entry}}


def test_a_rerun_fetches_the_locked_commit_without_asking_the_hub(tmp_path, fake_hub, monkeypatch):
    lock_file = tmp_path / "config.lock.yaml"
    sources.fetch_dataset("orca", HUB, tmp_path / "a", lock_file=lock_file)
    fake_hub.commits["main"] = "c" * 40  # the branch has moved on since
    fake_hub.calls.clear()
    assert sources.fetch_dataset("orca", HUB, tmp_path / "b", lock_file=lock_file)["resolved_revision"] == MAIN
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # from a cache, offline: the lock still names the commit
    assert sources.fetch_dataset("orca", HUB, tmp_path / "c", lock_file=lock_file)["resolved_revision"] == MAIN
    assert fake_hub.calls == [("download", "org/pairs", MAIN)] * 2


def test_a_changed_revision_replaces_its_lock_entry_and_reruns_the_fetch(tmp_path, fake_hub):
    lock_file = tmp_path / "config.lock.yaml"
    sources.fetch_dataset("orca", HUB, tmp_path / "a", lock_file=lock_file)
    sources.fetch_dataset("other", {**HUB, "id": "org/other"}, tmp_path / "o", lock_file=lock_file)
    moved = {**HUB, "revision": "v2"}
    assert paths.content_key(moved) != paths.content_key(HUB)  # a param of the fetch job: it reruns
    sources.fetch_dataset("orca", moved, tmp_path / "b", lock_file=lock_file)
    assert fake_hub.calls[-2:] == [("resolve", "org/pairs", "v2"), ("download", "org/pairs", V2)]
    entries = lock.read(lock_file)["datasets"]
    assert (entries["orca"]["revision"], entries["orca"]["commit"]) == ("v2", V2)
    assert entries["other"]["commit"] == MAIN  # the other entry is kept


def test_a_full_commit_needs_no_resolving_and_offline_no_commit_is_invented(tmp_path, fake_hub, monkeypatch):
    lock_file = tmp_path / "config.lock.yaml"
    sha = "d" * 40
    sources.fetch_dataset("orca", {**HUB, "revision": sha}, tmp_path / "a", lock_file=lock_file)
    assert fake_hub.calls == [("download", "org/pairs", sha)]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert sources.fetch_dataset("new", HUB, tmp_path / "b", lock_file=lock_file)["resolved_revision"] is None
    assert fake_hub.calls[-1] == ("download", "org/pairs", "main")
    assert list(lock.read(lock_file)["datasets"]) == ["orca"]


def test_an_unresolvable_revision_fails_before_any_download(tmp_path, fake_hub):
    with pytest.raises(sources.SourceError, match=r"dataset 'orca': cannot resolve revision 'nope' of org/pairs"):
        sources.fetch_dataset("orca", {**HUB, "revision": "nope"}, tmp_path / "a", lock_file=tmp_path / "l.yaml")
    assert [call[0] for call in fake_hub.calls] == ["resolve"]


def test_a_row_count_other_than_the_recorded_one_is_an_error_unless_allowed(tmp_path, fake_hub):
    lock_file = tmp_path / "config.lock.yaml"
    sources.fetch_dataset("orca", HUB, tmp_path / "a", expected_rows=5, lock_file=lock_file)
    fake_hub.rows = ORCA_ROWS[:4]
    with pytest.raises(sources.SourceError) as err:
        sources.fetch_dataset("orca", HUB, tmp_path / "b", lock_file=lock_file)
    message = str(err.value)
    assert "dataset 'orca': 4 rows fetched" in message
    assert f"lock file {lock_file} records 5 at commit {MAIN}" in message
    assert "datasets.orca.allow_row_change: true" in message
    assert not (tmp_path / "b" / "data.parquet").exists()
    manifest = sources.fetch_dataset("orca", HUB, tmp_path / "b", lock_file=lock_file, allow_row_change=True)
    assert manifest["rows"] == 4 and lock.read(lock_file)["datasets"]["orca"]["rows"] == 4
    # before anything is locked, the config's count is the recorded one
    with pytest.raises(sources.SourceError, match=r"dataset 'fresh': 4 rows fetched, but the config's rows say 5"):
        sources.fetch_dataset("fresh", HUB, tmp_path / "c", expected_rows=5, lock_file=lock_file)
    # other files of the same commit (another split) are not held to the old count
    fake_hub.rows = ORCA_ROWS[:3]
    assert sources.fetch_dataset("orca", {**HUB, "split": "test"}, tmp_path / "d", lock_file=lock_file)["rows"] == 3
    assert fake_hub.calls[-1] == ("download", "org/pairs", MAIN)
    assert lock.read(lock_file)["datasets"]["orca"] == {
        "id": "org/pairs", "split": "test", "revision": "main", "commit": MAIN, "rows": 3}


def test_parallel_fetch_jobs_each_keep_their_lock_entry(tmp_path):
    import sys
    from concurrent.futures import ThreadPoolExecutor

    lock_file = tmp_path / "config.lock.yaml"
    code = ("import sys, time\nfrom zephyr import lock\n"
            "time.sleep(max(0, float(sys.argv[3]) - time.time()))  # both start together\n"
            "for i in range(60):\n"
            "    name = f'{sys.argv[2]}{i}'\n"
            "    lock.Pin(sys.argv[1], 'datasets', name, {'id': 'org/' + name}, 'a' * 40, None).record(rows=i)\n")
    start = str(time.time() + 2)
    # each job leads its own process group, killed whole at the timeout (conftest's `run`), run side by side
    with ThreadPoolExecutor(2) as pool:
        jobs = [pool.submit(run, [sys.executable, "-c", code, str(lock_file), prefix, start], cwd=ROOT_DIR, timeout=300)
                for prefix in ("x", "y")]
        results = [job.result() for job in jobs]
    assert [result.returncode for result in results] == [0, 0], [result.stderr[-2000:] for result in results]
    entries = lock.read(lock_file)["datasets"]
    assert sorted(entries) == sorted(f"{p}{i}" for p in "xy" for i in range(60))
    assert [p.name for p in tmp_path.iterdir()] == [lock_file.name]  # no temporary file left beside it
