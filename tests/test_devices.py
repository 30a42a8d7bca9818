"""GPU claims of local jobs: disjoint GPUs, SLURM's choice kept, clear errors (counts given, no GPU needed);
free memory within a booking."""

import json
import os

import pytest

from zephyr import devices


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID"):  # set first, so that what the claims set is undone after
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
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
    with pytest.raises(devices.DeviceError,
                       match=r"asks for 3 GPU\(s\) but SLURM gave it 2 \(CUDA_VISIBLE_DEVICES='5,7'\)"):
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


def test_small_jobs_share_a_gpu_up_to_its_memory(tmp_path, monkeypatch):
    """A fake inventory of two 10 GB GPUs: 4 GB jobs pack two per GPU, a whole-GPU job waits for an
    empty GPU, and an ended job's booking no longer counts."""
    inventory = {"0": 10_000, "1": 10_000}

    def claim(count=1, memory_mb=4_000, wait=0):
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)  # each job is a new process
        return devices.claim_gpus(count, available=2, lock_dir=tmp_path, wait_seconds=wait, memory_mb=memory_mb,
                                  capacity_mb=inventory)

    assert [claim(), claim()] == [["0"], ["0"]]  # 8 of 10 GB on GPU 0
    assert claim() == ["1"]  # a third 4 GB job no longer fits on GPU 0
    with pytest.raises(devices.DeviceError, match=r"2 GPU\(s\) not free"):
        claim(count=2, memory_mb=None)  # whole GPUs: both are in use
    assert claim(memory_mb=2_000) == ["0"]  # 10 of 10 GB
    with pytest.raises(devices.DeviceError, match=r"no GPU had 6500 MB free after 0 s"):
        claim(memory_mb=6_500)  # GPU 0 is full, GPU 1 has 6 GB left
    with pytest.raises(devices.DeviceError, match=r"needs 20000 MB of GPU memory, more than any GPU has"):
        claim(memory_mb=20_000)
    ledger = json.loads((tmp_path / "gpu0.json").read_text())
    assert sorted(b["mb"] for b in ledger.values()) == [2_000, 4_000, 4_000]
    ledger["99999999-0"] = {"pid": 99_999_999, "mb": 9_000}  # a killed job's booking: its process is gone
    (tmp_path / "gpu0.json").write_text(json.dumps(ledger))
    devices.release_gpus()
    assert claim(count=2, memory_mb=None) == ["0", "1"]  # every share released: whole GPUs again
    devices.release_gpus()
    assert claim(memory_mb=9_500) == ["0"]  # the dead process's 9 GB booking does not count


def test_shared_claims_wait_for_a_whole_gpu_job(tmp_path, monkeypatch):
    assert devices.claim_gpus(1, available=1, lock_dir=tmp_path) == ["0"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    with pytest.raises(devices.DeviceError, match="no GPU had 1000 MB free"):
        devices.claim_gpus(1, available=1, lock_dir=tmp_path, wait_seconds=0, memory_mb=1_000,
                           capacity_mb={"0": 80_000})


def test_inference_memory_is_the_weights_and_an_overhead(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"\0" * (100 * 2**20))
    assert devices.inference_memory_mb(tmp_path) == 120 + devices.OVERHEAD_MB


def test_a_shared_job_plans_within_its_booking(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (100 * 2**30, 141 * 2**30))
    assert devices.free_bytes("cuda") == 100 * 2**30  # a whole GPU: what is free
    devices.claim_gpus(1, available=1, lock_dir=tmp_path, wait_seconds=0, memory_mb=3_000, capacity_mb={"0": 141_000})
    try:
        assert devices.booked_bytes() == 3_000 * 2**20 == devices.free_bytes("cuda")
    finally:
        devices.release_gpus()
    assert devices.booked_bytes() is None
