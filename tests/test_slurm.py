"""The workflow on a real SLURM cluster: profiles/slurm, layered with tests/slurm/profile, against the
single-node cluster that tests/slurm/cluster.sh starts on localhost.

Opt-in (it needs root, installs munge and slurm-wlm with apt if missing, and starts daemons):
    ZEPHYR_SLURM_TEST=1 .venv/bin/python -m pytest -m slurm tests/test_slurm.py
.ci/run does this after `make test`; a plain `make test` skips it.
"""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import ROOT, SNAKEMAKE, run, study_path, write_config

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(
        os.environ.get("ZEPHYR_SLURM_TEST") != "1",
        reason="starts a local SLURM cluster (root, apt): set ZEPHYR_SLURM_TEST=1 to run",
    ),
]

CLUSTER = ROOT / "tests" / "slurm" / "cluster.sh"
PROFILES = ["--profile", str(ROOT / "profiles" / "slurm"), "--profile", str(ROOT / "tests" / "slurm" / "profile")]
# A hung status query must not hang CI. Every job pays ~7 s of SLURM and snakemake start-up on 2 cores:
# the tiny experiment's data stage (23 jobs) took ~2 min, the whole tiny DAG (~57 jobs) ~7-8 min.
WORKFLOW_TIMEOUT = int(os.environ.get("ZEPHYR_SLURM_TIMEOUT", "1800"))
# Above pyproject's per-test limit: the cluster's start (up to 600 s) comes before a run's own limit.
pytestmark.append(pytest.mark.timeout(WORKFLOW_TIMEOUT + 900))


def _cluster(action: str, root, timeout: int) -> subprocess.CompletedProcess:
    # TTL: the daemons stop by themselves after it, should this process die without cleaning up
    env = {**os.environ, "ZEPHYR_SLURM_TTL": os.environ.get("ZEPHYR_SLURM_TTL", str(4 * WORKFLOW_TIMEOUT))}
    return subprocess.run([str(CLUSTER), action, str(root)], capture_output=True, text=True, timeout=timeout, env=env)


def _daemon_pids(root) -> dict[str, int]:
    return {p.stem: int(p.read_text()) for p in (root / "run").glob("*.bgpid") if p.read_text().strip()}


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, request):
    """A running single-node cluster (partition `debug`); stopped after the module's tests, always.

    Its ROOT is under /tmp, not pytest's private (0700) tmp dir: munged needs a world-traversable path
    to its socket. The daemons' logs are copied to pytest's tmp dir before ROOT is removed."""
    root = Path(tempfile.mkdtemp(prefix="zephyr-slurm-"))

    def stop():
        pids = _daemon_pids(root) if (root / "run").is_dir() else {}
        result = _cluster("stop", root, timeout=120)
        left = {name: pid for name, pid in pids.items() if _running(pid)}
        assert not left, f"daemons still running after stop: {left}\n{result.stderr}"
        if (root / "log").is_dir():
            shutil.copytree(root / "log", tmp_path_factory.mktemp("slurm-logs"), dirs_exist_ok=True)
        shutil.rmtree(root, ignore_errors=True)

    request.addfinalizer(stop)  # before starting: a start that fails half-way is cleaned up too
    result = _cluster("start", root, timeout=600)
    if result.returncode != 0:
        pytest.fail(f"cluster.sh start failed:\n{result.stdout}\n{result.stderr}")
    return root


def slurm_snakemake(cluster_root, workdir, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    """Run the workflow through the SLURM profiles. Hard limit: `timeout -k` SIGKILLs snakemake after
    WORKFLOW_TIMEOUT (it ignores SIGTERM while it waits for jobs); if the test itself is interrupted,
    timeout's whole process group (snakemake and its children) is killed, so nothing outlives it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}  # not a job of an outer SLURM
    env["SLURM_CONF"] = str(cluster_root / "etc" / "slurm.conf")
    cmd = ["timeout", "-k", "10", str(WORKFLOW_TIMEOUT), str(SNAKEMAKE), "--snakefile", str(ROOT / "Snakefile"),
           "--directory", str(workdir), *PROFILES, *args]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=workdir, env=env)
    try:
        stdout, stderr = proc.communicate(timeout=WORKFLOW_TIMEOUT + 60)
    except BaseException:  # KeyboardInterrupt included
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # timeout leads its own process group
        except ProcessLookupError:
            proc.kill()
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr), time.monotonic() - start


def _tail(result) -> str:
    return f"rc={result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-8000:]}"


def _scontrol_job(job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, timeout=30).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def _megabytes(value: str) -> int:  # scontrol's 8000M, 16G
    return int(float(value[:-1]) * {"M": 1, "G": 1024, "T": 1024**2}[value[-1]])


def _minutes(value: str) -> int:  # scontrol's [D-]HH:MM:SS
    days, _, clock = value.rpartition("-")
    hours, minutes, _ = clock.split(":")
    return int(days or 0) * 1440 + int(hours) * 60 + int(minutes)


def _jobs(log: str) -> dict[str, tuple[str, dict[str, str]]]:
    """Snakemake's job id -> (rule, resources), from the job blocks it prints."""
    jobs = {}
    for block in re.finditer(r"^rule (\w+):\n((?: {4}.*\n)+)", log, flags=re.M):
        job_id = re.search(r"^ {4}jobid: (\d+)$", block[2], flags=re.M)[1]
        resources = re.search(r"^ {4}resources: (.*)$", block[2], flags=re.M)[1]
        jobs[job_id] = block[1], dict(re.findall(r"(\w+)=([^,\s]+)", resources))
    return jobs


def test_tiny_experiment_runs_every_job_through_slurm(cluster, tmp_path, tiny_config):
    config = write_config(tmp_path, tiny_config)
    result, seconds = slurm_snakemake(cluster, tmp_path, "--configfile", str(config))
    print(f"tiny experiment on SLURM: {seconds:.1f} s")
    assert result.returncode == 0, _tail(result)

    mixtures = tmp_path / "results" / "mixtures"
    for name in tiny_config["mixtures"]:
        assert (mixtures / f"{name}.json").exists()
    # Every output of the default target exists and is up to date.
    dry = run([str(SNAKEMAKE), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
               "-n", "--configfile", str(config)], timeout=600, cwd=tmp_path)
    assert "Nothing to be done" in dry.stdout + dry.stderr, _tail(dry)

    # Every job but the local ones (`all`, and the fetches, which need the network) was a SLURM job that ran to
    # COMPLETED in the test partition, in the work directory, with the rule's threads, runtime and memory, and
    # left its log under its rule.
    log = result.stdout + result.stderr
    jobs = _jobs(log)
    submitted = re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)", log)
    assert jobs and sorted(job for job, _, _ in submitted) == sorted(jobs), "a job ran outside SLURM"
    assert set(re.findall(r"^localrule (\w+):", log, flags=re.M)) == {"all", "fetch_dataset", "fetch_model"}
    for job, slurm_id, job_log in submitted:
        rule, resources = jobs[job]
        assert os.path.exists(job_log) and f"/rule_{rule}/" in job_log, job_log
        state = _scontrol_job(slurm_id)
        assert state.get("JobState") == "COMPLETED" and state.get("Partition") == "debug", (rule, state)
        assert state["WorkDir"] == str(tmp_path), state
        assert state["NumCPUs"] == resources["cpus_per_task"], (rule, resources, state)
        assert _minutes(state["TimeLimit"]) == int(resources["runtime"]), (rule, resources, state)
        assert _megabytes(state["MinMemoryNode"]) == int(resources["mem_mb"]), (rule, resources, state)


def test_a_job_asking_more_cpus_than_the_node_has_is_rejected_at_submission(cluster, tmp_path, tiny_config):
    """EnforcePartLimits=ALL: sbatch refuses it at once (instead of a job PENDING forever)."""
    config = write_config(tmp_path, tiny_config)
    target = study_path(tmp_path, config, "records", "goat")  # before --configfile, which takes several values
    result, _ = slurm_snakemake(cluster, tmp_path, target, "--set-resources", "format_records:cpus_per_task=1024",
                                "--configfile", str(config))
    assert result.returncode != 0, _tail(result)
    log = result.stdout + result.stderr
    assert "SLURM sbatch failed" in log and "More processors requested than permitted" in log, _tail(result)
    assert "--cpus-per-task=1024" in log
    assert not (tmp_path / target).exists()


def test_the_gpu_resource_becomes_sbatch_gpus(cluster, tmp_path, tiny_config):
    """The rules' `gpu` resource maps to `sbatch --gpus=N` (this node has no GPU, so SLURM refuses it)."""
    config = write_config(tmp_path, tiny_config)
    target = study_path(tmp_path, config, "records", "goat")
    result, _ = slurm_snakemake(cluster, tmp_path, target, "--set-resources", "format_records:gpu=1",
                                "--configfile", str(config))
    assert result.returncode != 0, _tail(result)
    log = result.stdout + result.stderr
    assert " --gpus=1" in log and "Invalid generic resource (gres) specification" in log, _tail(result)
