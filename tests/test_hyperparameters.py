"""Hyperparameter sets as the trainer takes them: fields TRL decides elsewhere are refused, the
accumulation splits over GPUs or is refused, and a small run books the GPU memory its plan needs."""

import pytest
from transformers import AutoConfig

from test_training import SFT
from zephyr import devices
from zephyr.model import hyperparameters, speed


@pytest.mark.parametrize("trainer, micro, max_length", [("sft", 1, 2048), ("dpo", 1, 1024), ("sft", 2, 512)])
def test_a_small_run_books_what_its_plan_needs_and_shares_a_gpu(tmp_path, monkeypatch, trainer, micro, max_length):
    """The Qwen1.5-0.5B shape at a small micro-batch books memory on an 80 GB GPU (activations dominate:
    a booking short of them would turn checkpointing on); within it the plan keeps the set's micro-batch
    without checkpointing. At Table 2's settings it takes a GPU whole."""
    qwen05b = tmp_config(tmp_path / "qwen05b", hidden_size=1024, num_hidden_layers=24, intermediate_size=2816,
                         num_attention_heads=16, vocab_size=151936)
    hyper = {"trainer": trainer, "per_device_train_batch_size": micro, "gradient_accumulation_steps": 8,
             "max_length": max_length, "speed": {"lm_head": "plain"}}
    bf16 = {"weights": "bfloat16", "compute": "plain"}
    booking = hyperparameters.gpu_booking_mb(hyper, qwen05b, bf16, capacity_mb={"0": 80_000})
    assert booking is not None and booking <= 80_000 * hyperparameters.SHARE_GPU_UP_TO
    monkeypatch.setattr(devices, "free_bytes", lambda device: booking * 2**20)
    plan = speed.plan("h", hyper["speed"], micro_batch=micro, accumulation=8, device="cuda",
                      model_config=AutoConfig.from_pretrained(qwen05b), max_length=max_length,
                      sequences_per_example=2 if trainer == "dpo" else 1, dtype="bfloat16")
    assert not plan.gradient_checkpointing and plan.micro_batch >= micro

    table2 = {"trainer": "sft", "per_device_train_batch_size": 16, "max_length": 2048}
    assert hyperparameters.gpu_booking_mb(table2, qwen05b, bf16, capacity_mb={"0": 143_771}) is None
    assert hyperparameters.gpu_booking_mb(hyper, qwen05b, bf16, capacity_mb={}) is None  # no GPU: nothing to book


def tmp_config(folder, **sizes):
    from transformers import Qwen2Config

    Qwen2Config(**sizes).save_pretrained(folder)
    return folder


def test_gpus_split_the_accumulation_or_are_refused():
    hyper = {**SFT, "gradient_accumulation_steps": 8}
    assert hyperparameters.split_accumulation("h", hyper, 4)["gradient_accumulation_steps"] == 2
    assert hyperparameters.split_accumulation("h", hyper, 1) is hyper
    with pytest.raises(hyperparameters.TrainingError,
                       match=r"h: gradient_accumulation_steps=8 cannot be split over 3 GPUs"):
        hyperparameters.split_accumulation("h", hyper, 3)


def test_trl_s_gradient_checkpointing_field_points_to_speed_and_its_bf16_to_the_precision():
    with pytest.raises(hyperparameters.TrainingError, match=r"set speed.gradient_checkpointing instead"):
        hyperparameters.check_hyperparameters("h", {"trainer": "sft", "gradient_checkpointing": True})
    with pytest.raises(hyperparameters.TrainingError, match=r"h: set the config's precision.compute instead of bf16"):
        hyperparameters.check_hyperparameters("h", {"trainer": "dpo", "bf16": True})


def test_the_bitsandbytes_optimizers_read_from_source_are_transformers_own():
    """What a training job decides bitsandbytes from (zephyr/model/bnb.py), read without importing transformers."""
    from transformers.trainer_optimizer import _BITSANDBYTES_OPTIMIZERS

    assert hyperparameters.bitsandbytes_optimizers() == {name.value for name in _BITSANDBYTES_OPTIMIZERS}
    assert "paged_adamw_8bit" in hyperparameters.bitsandbytes_optimizers()
    assert "adamw_torch" not in hyperparameters.bitsandbytes_optimizers()
