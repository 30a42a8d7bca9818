"""Kill anywhere: a job SIGKILLed mid-work at each stage, the workflow rerun, and the finished outputs
identical to an uninterrupted run's; training resumes from its last checkpoint; nothing half-written is
taken for finished, and nothing a killed writer left behind stays.

The kills are real SIGKILLs of the job's own process, at a chosen point (tests/killhook/sitecustomize.py,
put on PYTHONPATH for these runs only): as the job is about to move an output into place, its work done,
or, for training, right after a checkpoint and before the next one. One chain of the tiny study (data →
SFT → merge → NF4 export → perplexity) is run, killed once per stage, until it finishes; the reference is
the shared uninterrupted run of the whole tiny study (`tiny_study`).
"""

import hashlib
import json
import os
import time

import pandas as pd
import pytest

from conftest import ROOT, snakemake, tiny_workdir

pytestmark = pytest.mark.workflow

TARGET = "results/metrics/qwen/M1-DS-cosine/perplexity-nf4.csv"
# script of the job to kill: where (see tests/killhook/sitecustomize.py)
KILLS = {
    "fetch_dataset": "manifest.json",  # its data.parquet already moved in, the manifest not yet
    "format_records": "*.jsonl",  # the records written in full, not yet under their name
    "draw_mixture": "*.stats.csv",  # the validation split moved in, the stats and the mixture not
    "train_adapter": "checkpoint-2",  # right after checkpoint 2 of 4 (save_steps 2, max_steps 4)
    "merge_adapter": "M1-DS-cosine",  # the merged folder staged whole, not yet moved in
    "export_quantized": "M1-DS-cosine-nf4",  # the NF4 folder staged whole, not yet moved in
    "evaluate": "*.csv",  # the per-item JSONL moved in, the metric CSV not yet
}
# Outputs that carry wall-clock measurements, so that two uninterrupted runs differ in them too, are
# left out: a training summary (wall time, tokens/s, peak memory, and whether it resumed) and a model
# card (it quotes the summary). The log history and the manifests are compared as `comparable` says.
WALL_TIME_FILES = ("summary.json", "README.md")
# Log-history columns a resumed run would restart without zephyr.model.training carrying them over
# (TRL's `num_tokens` and `eval_num_tokens`, the Trainer's final `train_loss`): compared on their own.
RESTARTED_COLUMNS = ("num_tokens", "eval_num_tokens", "train_loss")


def comparable(path, drop=RESTARTED_COLUMNS) -> bytes:
    """A file's bytes, less what carries wall time: the log history without its timing columns (and
    the columns in `drop`), its rows and column order as written; a model manifest without the hash and
    size of its card and the hash of its parent's manifest (which hashes the parent's card)."""
    if path.name == "log_history.csv":
        history = pd.read_csv(path)
        timing = [c for c in history.columns if "runtime" in c or "per_second" in c or c in drop]
        return history.drop(columns=timing).to_csv(index=False).encode()
    if path.name == "manifest.json":
        manifest = json.loads(path.read_text())
        for recorded in ("files", "sizes"):  # the card quotes wall times: its hash and size vary
            manifest.get(recorded, {}).pop("README.md", None)
        drop_parent_hashes(manifest)
        return json.dumps(manifest, sort_keys=True).encode()
    return path.read_bytes()


def drop_parent_hashes(tree) -> None:
    if isinstance(tree, dict):
        tree.pop("manifest_sha256", None)
        for value in tree.values():
            drop_parent_hashes(value)
    elif isinstance(tree, list):
        for value in tree:
            drop_parent_hashes(value)


def outputs(workdir) -> dict:
    """Every output file, not the logs and benchmarks (times) of the shared jobs under resources/."""
    return {
        str(p.relative_to(workdir)): p
        for top in ("resources", "results")
        for p in sorted((workdir / top).rglob("*"))
        if p.is_file() and p.name not in WALL_TIME_FILES
        and p.relative_to(workdir).parts[:2] not in (("resources", "logs"), ("resources", "benchmarks"))
    }


def digest(path, drop=RESTARTED_COLUMNS) -> str:
    return hashlib.sha256(comparable(path, drop)).hexdigest()


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory):
    """The chain run again and again until it finishes, each stage's first job SIGKILLed once."""
    start = time.monotonic()
    workdir = tmp_path_factory.mktemp("killed")
    _, config = tiny_workdir(workdir)
    markers = workdir / "killed"
    markers.mkdir()
    env = {
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT / "tests" / "killhook"), os.environ.get("PYTHONPATH")) if p),
        "ZEPHYR_TEST_KILL": ",".join(f"{script}:{point}" for script, point in KILLS.items()),
        "ZEPHYR_TEST_KILL_DIR": str(markers),
    }
    runs = []
    for _ in range(len(KILLS) + 2):
        before = {m.name for m in markers.iterdir()}
        result = snakemake(workdir, TARGET, "--cores", "2", "--configfile", str(config), check=False, env=env)
        killed = {}
        for script in sorted({m.name for m in markers.iterdir()} - before):
            what = workdir / (markers / script).read_text()
            # what the killed job left under its outputs' real names, right after the failed run
            killed[script] = {
                "point": str(what.relative_to(workdir)),
                "exists": what.exists(),
                "complete_checkpoint": (what / "trainer_state.json").is_file(),
                "data.parquet": (what.parent / "data.parquet").exists(),
            }
        runs.append({"returncode": result.returncode, "killed": killed,
                     "output": (result.stdout + result.stderr)[-6000:]})
        if result.returncode == 0 or not killed:
            break
    return {"workdir": workdir, "config": config, "runs": runs, "seconds": time.monotonic() - start}


def test_each_stage_killed_once_then_the_rerun_finishes(killed_run):
    runs = killed_run["runs"]
    for run in runs[:-1]:
        assert run["returncode"] != 0 and run["killed"], run["output"]  # failed from a kill of ours
    assert runs[-1]["returncode"] == 0, runs[-1]["output"]
    killed = {script: kill for run in runs for script, kill in run["killed"].items()}
    assert sorted(killed) == sorted(KILLS)
    print(f"kill test: {len(runs)} runs, {killed_run['seconds']:.0f} s; killed at",
          {script: kill["point"] for script, kill in killed.items()})

    for script, kill in killed.items():
        if script == "train_adapter":  # killed between checkpoints: the last one complete, kept
            assert kill["exists"] and kill["complete_checkpoint"], kill
        else:  # killed before moving its output in: nothing under the output's real name
            assert not kill["exists"], kill
    # the fetch had moved its data.parquet in before the kill: gone with the failed job, not kept
    assert not killed["fetch_dataset"]["data.parquet"]


def test_training_resumed_from_its_last_checkpoint(killed_run):
    workdir = killed_run["workdir"]
    summary = json.loads((workdir / "results/adapters/qwen/M1-DS-cosine/summary.json").read_text())
    assert summary["resumed_from"].endswith("checkpoint-2") and summary["steps"] == 4
    assert not any((workdir / "results" / "checkpoints").rglob("checkpoint-*"))  # removed once finished


def test_finished_outputs_equal_the_uninterrupted_runs(killed_run, tiny_study):
    workdir = killed_run["workdir"]
    got, want = outputs(workdir), outputs(tiny_study)
    assert len(got) >= 30 and set(got) <= set(want)
    assert [name for name, path in got.items() if digest(path) != digest(want[name])] == []
    # nothing a killed writer left behind (hidden .part files or folders) stays
    assert [str(p) for p in workdir.rglob("*") if p.name.endswith((".part", ".old"))] == []
    config = killed_run["config"]
    assert "Nothing to be done" in snakemake(workdir, TARGET, "-n", "--configfile", str(config)).stdout


def test_a_resumed_runs_log_history_counts_from_the_first_step(killed_run, tiny_study):
    name = "results/adapters/qwen/M1-DS-cosine/log_history.csv"
    assert digest(killed_run["workdir"] / name, drop=()) == digest(tiny_study / name, drop=())


def test_a_checkpoint_cut_short_by_a_kill_is_not_resumed_from(tmp_path):
    import tinymodels
    from test_training import SFT, Interrupt, sft_records, stop_at, write
    from zephyr.model import training

    base = tinymodels.qwen2(tmp_path / "M0")
    hyper = {**SFT, "num_train_epochs": 2, "save_steps": 4, "eval_on_start": False}
    args = ("t/cut", hyper, base, write(tmp_path / "train.json", sft_records(48)),
            write(tmp_path / "val.json", sft_records(8, offset=100)), tmp_path / "adapter", tmp_path / "ckpt")
    with pytest.raises(Interrupt):
        training.train(*args, callbacks=[stop_at(10)])  # checkpoints 4 and 8 saved
    last = max((tmp_path / "ckpt").rglob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert last.name == "checkpoint-8"
    # what a SIGKILL during the save of checkpoint 8 leaves: its folder, without the files written last
    for name in ("trainer_state.json", "rng_state.pth"):
        (last / name).unlink()
    summary = training.train(*args)
    assert summary["resumed_from"].endswith("checkpoint-4") and summary["steps"] == 12


# The kill hook's trainer patch loaded in a child process, which then trains and is SIGKILLed by it right
# after the given checkpoint (as the workflow's train_adapter job is in `killed_run`).
KILLED_TRAINING = """
import importlib.util, json, sys
args = json.loads(sys.argv[1])
spec = importlib.util.spec_from_file_location("zephyr_killhook", args["hook"])
hook = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hook)  # not armed: no ZEPHYR_TEST_KILL here
sys.meta_path.insert(0, hook._PatchTrainer(args["marker"], args["step"]))  # before transformers.trainer loads
from zephyr.model import training
training.train(*args["train"])
"""


def test_a_dpo_run_sigkilled_between_checkpoints_resumes_to_the_uninterrupted_result(tmp_path):
    """DPO's resume, as SFT's in `killed_run`: SIGKILLed right after checkpoint 2 of 4, the rerun resumes
    from it, and its adapter and log history equal an uninterrupted run's (wall times aside)."""
    import sys

    import tinymodels
    from conftest import run
    from test_training import DPO, pair_records, write
    from zephyr.model import training

    base = tinymodels.qwen2(tmp_path / "M0")
    # logged at every step, as the tiny study's runs are: a logging interval that spans the kill would be
    # averaged over its resumed steps alone (the Trainer keeps its running sums in memory, not in checkpoints)
    hyper = {**DPO, "num_train_epochs": 1, "per_device_train_batch_size": 4, "max_steps": 4, "save_steps": 2,
             "eval_steps": 2, "eval_on_start": False, "logging_steps": 1}
    train, val = write(tmp_path / "train.json", pair_records(16)), write(tmp_path / "val.json", pair_records(4, 40))
    args = ["t/dpo-kill", hyper, str(base), str(train), str(val), str(tmp_path / "adapter"), str(tmp_path / "ckpt")]
    marker = tmp_path / "killed"
    child = {"hook": str(ROOT / "tests" / "killhook" / "sitecustomize.py"), "marker": str(marker), "step": 2,
             "train": args}
    killed = run([sys.executable, "-c", KILLED_TRAINING, json.dumps(child)], timeout=600, cwd=ROOT)
    assert killed.returncode == -9, killed.stderr[-4000:]  # SIGKILL, by the hook
    checkpoint = tmp_path / marker.read_text()
    assert checkpoint.name == "checkpoint-2" and (checkpoint / "trainer_state.json").is_file()
    assert not (tmp_path / "adapter").exists()

    summary = training.train(*args)
    assert summary["resumed_from"].endswith("checkpoint-2") and summary["steps"] == 4
    assert not any((tmp_path / "ckpt").rglob("checkpoint-*"))  # removed once finished
    straight = training.train("t/dpo-kill", hyper, base, train, val, tmp_path / "straight", tmp_path / "ckpt2")
    assert straight["resumed_from"] is None and straight["steps"] == 4
    for name in ("adapter_model.safetensors", "log_history.csv", "adapter_config.json"):
        assert digest(tmp_path / "adapter" / name, drop=()) == digest(tmp_path / "straight" / name, drop=()), name
