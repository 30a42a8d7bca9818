"""GPU claims of local jobs: disjoint GPUs, SLURM's choice kept, clear errors (counts given, no GPU needed)."""

import os

import pytest

from zephyr import devices


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    yield
    devices.release_gpus()


def test_concurrent_jobs_claim_disjoint_gpus(tmp_path, monkeypatch):
    first = devices.claim_gpus(2, available=4, lock_dir=tmp_path)
    assert first == ["0", "1"] and os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")  # the next job is another process, with a clean environment
    assert devices.claim_gpus(1, available=4, lock_dir=tmp_path) == ["2"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    with pytest.raises(devices.DeviceError, match=r"2 GPU\(s\) not free after 0 s"):
        devices.claim_gpus(2, available=4, lock_dir=tmp_path, wait_seconds=0)
    devices.release_gpus()
    assert devices.claim_gpus(3, available=4, lock_dir=tmp_path) == ["0", "1", "2"]


def test_gpus_given_by_slurm_are_kept_and_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    assert devices.claim_gpus(2, lock_dir=tmp_path) == ["5", "7"]
    assert not any(tmp_path.iterdir())  # no locks: the scheduler chose
    with pytest.raises(devices.DeviceError, match=r"asks for 3 GPU\(s\) but SLURM gave it 2 \(CUDA_VISIBLE_DEVICES='5,7'\)"):
        devices.claim_gpus(3, lock_dir=tmp_path)


def test_a_local_run_s_visible_devices_are_the_pool_jobs_claim_from(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")  # set by the user for the whole run
    assert devices.claim_gpus(1, lock_dir=tmp_path) == ["5"] and os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")  # the next job starts from the run's setting
    assert devices.claim_gpus(1, lock_dir=tmp_path) == ["7"]


def test_more_gpus_than_the_machine_has_is_an_error(tmp_path):
    with pytest.raises(devices.DeviceError, match=r"asks for 2 GPU\(s\) but this machine shows 1; lower compute.gpus"):
        devices.claim_gpus(2, available=1, lock_dir=tmp_path)


def test_a_job_without_gpus_sees_none(tmp_path):
    assert devices.claim_gpus(0, lock_dir=tmp_path) == [] and os.environ["CUDA_VISIBLE_DEVICES"] == ""


@pytest.mark.parametrize("resources, gpus", [
    ({"gpu": 2, "gres": "gpu:4"}, 2), ({"gpu": 0, "gres": "gpu:a100:3"}, 3), ({"gres": "gpu:2"}, 2),
    ({"gres": "gpu"}, 1), ({"gres": "gpu:a100"}, 1), ({"gres": "tmpdisk:100"}, 0), ({}, 0),
])
def test_gpus_come_from_the_gpu_resource_or_a_gpu_gres(resources, gpus):
    assert devices.gpus_of(resources) == gpus
