"""Stored artifacts are checked against their manifest before use: a file cut short, edited or missing
stops the job that reads it, naming the file, what the manifest says and the command that rebuilds it."""

import os
import shutil

import pytest

import tinymodels
from zephyr import files
from zephyr.data import sources
from zephyr.model import modeldir


@pytest.fixture
def merged(tmp_path):
    """A tiny model folder with the manifest a merge writes (kind merged, checksums and sizes)."""
    folder = tinymodels.qwen2(tmp_path / "models" / "M1")
    modeldir.write_manifest(folder, {"kind": "merged", "model": "tiny", "variant": "M1"})
    return folder


def older_than_the_manifest(path):
    """Give `path` a time before its folder's manifest (as a folder written whole has)."""
    written = (path.parent / files.MANIFEST_FILE).stat().st_mtime_ns
    os.utime(path, ns=(written - 10**9, written - 10**9))


def newer_than_the_manifest(path):
    """Give `path` a time after its folder's manifest, as an edit after it has: set, not left to the clock,
    whose ticks on a coarse file system (1 s, 2 s on FAT) can give the edit the manifest's own time."""
    written = (path.parent / files.MANIFEST_FILE).stat().st_mtime_ns
    os.utime(path, ns=(written + 10**9, written + 10**9))


def test_a_weights_file_cut_short_is_named_with_both_sizes_and_the_rebuild(merged):
    weights = merged / "model.safetensors"
    size = weights.stat().st_size
    with open(weights, "r+b") as handle:
        handle.truncate(size - 100)
    older_than_the_manifest(weights)  # a copy cut short may keep the old time: the size still tells
    with pytest.raises(files.IntegrityError) as err:
        modeldir.load_model(merged, "cpu")
    message = str(err.value)
    assert message.startswith(f"{weights}: {size - 100:,} bytes, but {merged / 'manifest.json'} records {size:,}")
    # the smallest rerun: that folder's job alone (--forcerun would rerun every merge and all after them)
    assert f"rebuild it alone: snakemake --cores 1 --force {merged / 'manifest.json'}" in message
    assert "--forcerun" not in message


def test_a_file_changed_after_its_manifest_is_hashed_and_refused(merged):
    weights = merged / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size: the bytes still parse, and would be used as if nothing happened
    weights.write_bytes(bytes(data))
    newer_than_the_manifest(weights)
    with pytest.raises(files.IntegrityError, match=r"model\.safetensors: sha256 .* records .*changed after"):
        modeldir.load_model(merged, "cpu")


def test_a_missing_file_is_named(merged):
    (merged / "tokenizer.json").unlink()
    with pytest.raises(files.IntegrityError, match=r"tokenizer\.json: missing, but .*manifest\.json lists it"):
        modeldir.load_model(merged, "cpu")


def test_a_same_size_file_copied_with_its_time_kept_is_refused(merged, tmp_path):
    """`cp -p` of a sibling variant's weights: same size, a time before the manifest; its hash tells."""
    sibling = tinymodels.qwen2(tmp_path / "models" / "M1-other", seed=1)
    weights = merged / "model.safetensors"
    assert (sibling / "model.safetensors").stat().st_size == weights.stat().st_size
    shutil.copy2(sibling / "model.safetensors", weights)  # cp -p: content and times of the sibling's
    older_than_the_manifest(weights)
    with pytest.raises(files.IntegrityError, match=r"model\.safetensors: sha256 .* records .*changed after"):
        modeldir.load_model(merged, "cpu")


def test_a_dataset_file_cut_short_stops_formatting_naming_the_fetch(tmp_path):
    folder = tmp_path / "resources" / "datasets" / "goat"
    folder.mkdir(parents=True)
    files.write_parquet(folder / sources.DATA_FILE, [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(50)])
    files.write_json(folder / files.MANIFEST_FILE,
                     {"dataset": "goat", **files.manifest_files(folder, [sources.DATA_FILE])})
    assert len(sources.load_rows(folder)) == 50
    data = folder / sources.DATA_FILE
    data.write_bytes(data.read_bytes()[:-20])
    with pytest.raises(files.IntegrityError, match=r"data\.parquet: .* bytes, but .*--force \S*goat/manifest\.json"):
        sources.load_rows(folder)
