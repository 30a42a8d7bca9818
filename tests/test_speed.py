"""The speed settings keep the math: same loss at every logged step, whatever the settings chose; a
forced setting wins; the plain LM head equals TRL's fused one; a changed parent never resumes."""

import json
import types

import pandas as pd
import pytest
import torch
from transformers import AutoConfig

import tinymodels
from test_training import pair_records, sft_records, write
from zephyr import devices, files
from zephyr.model import lm_head, modeldir, speed, training

#: Today's settings (TRL's defaults as Zephyr used them) against the fast ones, at a changed split.
SLOW = {"gradient_checkpointing": True, "lm_head": "fused", "micro_batch": 2,
        "padding_free": False}
#: padding_free left to auto: on for SFT on the CPU (the tiny Qwen2 keeps joined records apart), off for DPO.
FAST = {"gradient_checkpointing": False, "lm_head": "plain", "micro_batch": 4}
COMMON = {"logging_steps": 1, "learning_rate": 1e-2, "lr_scheduler_type": "constant", "per_device_train_batch_size": 4,
          "max_steps": 4, "max_length": 64, "save_steps": 10**6, "lora": {"r": 8, "alpha": 16, "dropout": 0.0}}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tinymodels.qwen2(tmp_path_factory.mktemp("base") / "M0")


def losses(out):
    history = pd.read_csv(out / "log_history.csv")
    return history.dropna(subset=["loss"]).set_index("step")["loss"]


def uneven(records):
    """Records of different lengths, so that a padded batch pads (and a padding-free one has something to drop)."""
    return [{**r, "instruction": r["instruction"] + " Think step by step." * (4 * (i % 4))}
            for i, r in enumerate(records)]


@pytest.mark.parametrize("trainer, records, extra", [
    ("sft", uneven(sft_records(16)), {}),
    ("dpo", uneven(pair_records(16)), {"beta": 0.5}),
])
def test_fast_settings_give_the_same_loss_at_every_step(tmp_path, base, trainer, records, extra):
    train = write(tmp_path / "train.json", records)
    validation = write(tmp_path / "validation.json", uneven(sft_records(6, offset=40) if trainer == "sft"
                                                            else pair_records(6, offset=40)))
    runs, evaluated, tokens = {}, {}, {}
    for name, settings in (("slow", SLOW), ("fast", FAST)):
        hyper = {"trainer": trainer, **COMMON, **extra, "max_length": 256, "eval_steps": 2, "speed": settings}
        summary = training.train(f"t/{name}", hyper, base, train, validation, tmp_path / name,
                                 tmp_path / f"ckpt-{name}")
        assert summary["speed"]["gradient_checkpointing"] is settings["gradient_checkpointing"]
        assert summary["speed"]["micro_batch"] == settings["micro_batch"]
        assert summary["speed"]["accumulation"] == 4 // settings["micro_batch"]
        assert summary["global_batch_size"] == 4
        runs[name] = losses(tmp_path / name)
        history = pd.read_csv(tmp_path / name / "log_history.csv")
        evaluated[name] = history.dropna(subset=["eval_loss"]).set_index("step")["eval_loss"]
        tokens[name] = summary["tokens_seen"]
    assert summary["speed"]["padding_free"] is (trainer == "sft")
    assert list(runs["slow"].index) == [1, 2, 3, 4]
    assert runs["fast"].tolist() == pytest.approx(runs["slow"].tolist(), rel=1e-4)
    assert runs["slow"].iloc[-1] != runs["slow"].iloc[0]  # it trained: the comparison is not between constants
    assert list(evaluated["slow"].index) == [2, 4]
    assert evaluated["fast"].tolist() == pytest.approx(evaluated["slow"].tolist(), rel=1e-4)
    assert tokens["fast"] == tokens["slow"]  # non-padding tokens, counted alike padded or joined


def config_of(**sizes):
    return types.SimpleNamespace(**{"hidden_size": 1024, "num_hidden_layers": 24, "vocab_size": 151936,
                                    "intermediate_size": 2816, **sizes})


def test_a_forced_setting_wins_over_auto(monkeypatch):
    monkeypatch.setattr(devices, "free_bytes", lambda device: 10**15)  # memory would allow anything
    forced = speed.plan("h", {"gradient_checkpointing": True, "micro_batch": 2,
                              "lm_head": "fused", "padding_free": False}, micro_batch=16, accumulation=8, device="cuda",
                        model_config=config_of(), max_length=2048, sequences_per_example=1, dtype="bfloat16")
    assert (forced.gradient_checkpointing, forced.micro_batch, forced.accumulation) == (True, 2, 64)
    assert (forced.lm_head, forced.padding_free) == ("fused", False)
    assert forced.why == {}


def test_auto_splits_the_global_batch_by_memory_on_a_gpu(monkeypatch):
    fixed = {"lm_head": "fused"}
    config = config_of()

    def plan_with(free):
        monkeypatch.setattr(devices, "free_bytes", lambda device: free)
        return speed.plan("h", fixed, micro_batch=16, accumulation=8, device="cuda", model_config=config,
                          max_length=2048, sequences_per_example=1, dtype="bfloat16")

    roomy = plan_with(10**15)
    assert (roomy.gradient_checkpointing, roomy.micro_batch, roomy.accumulation) == (False, 128, 1)
    # 140 GB: the micro-batch is the largest divisor of 128 whose activations fit the budget, the next does not
    h200 = plan_with(140 * 10**9)
    budget = int(140 * 10**9 * speed.MEMORY_SHARE) - speed.weight_bytes(config, "bfloat16")

    def need(m, checkpointing=False):
        return speed.activation_bytes(config, m * 2048, "bfloat16", checkpointing=checkpointing, plain_head=False)

    assert not h200.gradient_checkpointing and h200.micro_batch * h200.accumulation == 128
    assert need(h200.micro_batch) <= budget < need(2 * h200.micro_batch)
    # too little memory for one example without checkpointing: checkpointing goes on
    tight = plan_with(speed.weight_bytes(config, "bfloat16") * 2)
    assert tight.gradient_checkpointing and tight.micro_batch * tight.accumulation == 128


@pytest.mark.parametrize("fused, plain, faster", [(0.003, 0.001, "plain"), (0.001, 0.003, "fused")])
def test_auto_keeps_the_set_s_split_on_the_cpu_and_times_only_the_head(tmp_path, monkeypatch, fused, plain, faster):
    """The head is the one timed faster: the clock is replaced, so each outcome is asked for, not accepted."""
    timed = []

    def clock(step):  # lm_head.time_head times the fused head, then the plain one
        timed.append(step)
        return (fused, plain)[len(timed) - 1]

    monkeypatch.setenv("ZEPHYR_CACHE", str(tmp_path))  # nothing kept from an earlier timing
    monkeypatch.setattr(lm_head, "_time", clock)
    lm_head.fastest_head.cache_clear()
    try:
        plan = speed.plan("h", {}, micro_batch=4, accumulation=2, device="cpu", model_config=config_of(
            hidden_size=64, num_hidden_layers=2, vocab_size=384, intermediate_size=128), max_length=64,
            sequences_per_example=2, dtype="float32")
    finally:
        lm_head.fastest_head.cache_clear()
    assert (plan.micro_batch, plan.accumulation, plan.gradient_checkpointing) == (4, 2, False)
    assert len(timed) == 2  # the two heads, and nothing else
    assert plan.lm_head == faster
    assert f"fused {fused * 1e3:.1f} ms, plain {plain * 1e3:.1f} ms" in plan.why["lm_head"]
    assert not hasattr(plan, "base_dtype")  # a dtype is the study's precision, never timed


def test_the_head_is_timed_on_a_micro_batch_s_worth_of_tokens_on_a_gpu():
    vocab = 151936  # Qwen's
    assert lm_head.head_probe_tokens("cpu", vocab, 0) == lm_head.HEAD_PROBE_TOKENS
    # an H200's free memory: a tenth of it holds 140e9 / 10 / (12 * vocab) tokens of float32 logits
    assert lm_head.head_probe_tokens("cuda", vocab, 140 * 10**9) == 140 * 10**9 // 10 // (12 * vocab)
    assert lm_head.head_probe_tokens("cuda", vocab, 10**15) == lm_head.GPU_HEAD_PROBE_TOKENS
    assert lm_head.head_probe_tokens("cuda", vocab, 10**9) == lm_head.HEAD_PROBE_TOKENS  # never fewer than on the CPU


def test_a_timed_choice_is_kept_per_machine(tmp_path, monkeypatch):
    """Reruns on one machine train the same bytes: the first timing decides, later ones are not taken."""
    monkeypatch.setenv("ZEPHYR_CACHE", str(tmp_path))
    answers = iter([("plain", "first timing"), ("fused", "second timing")])
    monkeypatch.setattr(lm_head, "time_head", lambda device, hidden, vocab, dtype: next(answers))
    lm_head.fastest_head.cache_clear()
    first = lm_head.fastest_head("cpu", 64, 384, "float32")
    lm_head.fastest_head.cache_clear()  # a new process
    again = lm_head.fastest_head("cpu", 64, 384, "float32")
    assert first[0] == again[0] == "plain" and "first timing" in again[1]
    # the file's format, which reruns on this machine read: one entry per machine, head size and dtype
    assert json.loads((tmp_path / "speed.json").read_text()) == {
        f"lm_head {lm_head._machine('cpu')} 64x384 float32": {"choice": "plain", "why": "first timing"}}
    lm_head.fastest_head.cache_clear()


@pytest.mark.parametrize("bad, message", [
    ({"micro_batch": 3}, r"h.speed.micro_batch: 3 does not divide the batch of 8"),
    ({"lm_head": "liger"}, r"h.speed.lm_head: 'liger' is not one of"),
    ({"gradient_checkpoint": True}, r"unknown key\(s\) \['gradient_checkpoint'\]"),
    ({"base_dtype": "bfloat16"}, r"h.speed.base_dtype: .*set the config's precision.weights"),
])
def test_bad_speed_settings_name_the_key(bad, message):
    with pytest.raises(speed.SpeedError, match=message):
        speed.plan("h", {"lm_head": "fused", **bad}, micro_batch=4, accumulation=2,
                   device="cpu", model_config=config_of(), max_length=64, sequences_per_example=1, dtype="float32")


def test_padding_free_only_for_architectures_that_keep_joined_records_apart(base, monkeypatch):
    from transformers import BloomConfig

    qwen2 = AutoConfig.from_pretrained(base)
    bloom = BloomConfig(hidden_size=32, n_layer=1, n_head=2, vocab_size=97)
    assert speed.packs_exactly(qwen2)[0]
    works, why = speed.packs_exactly(bloom)
    assert not works and "attention crosses records" in why
    fixed = {"lm_head": "plain"}
    sizes = {"micro_batch": 4, "accumulation": 1, "device": "cpu", "max_length": 64, "dtype": "float32"}
    uneven, even = [10, 60, 20, 64, 15, 40], [60, 62, 64, 61]
    joined = speed.plan("h", fixed, model_config=qwen2, sequences_per_example=1, lengths=uneven, **sizes)
    assert joined.padding_free and "padding" in joined.why["padding_free"]
    padded = speed.plan("h", fixed, model_config=qwen2, sequences_per_example=1, lengths=even, **sizes)
    assert not padded.padding_free and "not more than" in padded.why["padding_free"]
    forced = speed.plan("h", {**fixed, "padding_free": True}, model_config=qwen2, sequences_per_example=1,
                        lengths=even, **sizes)
    assert forced.padding_free
    for config, sequences, padded_to in ((bloom, 1, None), (qwen2, 2, None), (qwen2, 1, 8)):
        auto = speed.plan("h", fixed, model_config=config, sequences_per_example=sequences, padded_to=padded_to,
                          lengths=uneven, **sizes)
        assert not auto.padding_free and auto.why["padding_free"]
        with pytest.raises(speed.SpeedError, match=r"h.speed.padding_free: "):
            speed.plan("h", {**fixed, "padding_free": True}, model_config=config, sequences_per_example=sequences,
                       padded_to=padded_to, **sizes)
    grouped = speed.plan("h", fixed, model_config=qwen2, sequences_per_example=1, lengths=uneven * 20, grouped=True,
                         **sizes)  # batches of like lengths pad little: no need to join them
    assert not grouped.padding_free and "length-grouped batch of 4" in grouped.why["padding_free"]
    monkeypatch.setattr(devices, "free_bytes", lambda device: 10**12)
    on_gpu = speed.plan("h", {**fixed, "micro_batch": 4}, model_config=qwen2, sequences_per_example=1,
                        lengths=uneven, **{**sizes, "device": "cuda"})
    assert not on_gpu.padding_free


def test_padding_share_is_the_expected_padding_of_a_random_batch():
    assert speed.padding_share([7] * 9, 4) == 0
    # two records, batches of two: always both, 10 + 30 real tokens in 2 x 30
    assert speed.padding_share([10, 30], 2) == pytest.approx(1 - 40 / 60)
    # batches of one never pad
    assert speed.padding_share([3, 50, 9], 1) == 0


def test_padding_share_of_length_grouped_batches_is_transformers_sampler_s():
    """The share `padding_share` expects with grouping against batches cut from transformers' own
    LengthGroupedSampler order (the reference), over many seeds; both far below random batches'."""
    from transformers.trainer_pt_utils import get_length_grouped_indices

    rng = torch.Generator().manual_seed(0)
    lengths = torch.randint(5, 300, (400,), generator=rng).tolist()
    real = padded = 0
    for seed in range(40):
        order = get_length_grouped_indices(lengths, 8, generator=torch.Generator().manual_seed(seed))
        for start in range(0, len(order), 4):  # micro-batches of 4 in a step of 8 examples
            batch = [lengths[i] for i in order[start:start + 4]]
            real, padded = real + sum(batch), padded + len(batch) * max(batch)
    reference = 1 - real / padded
    assert speed.padding_share(lengths, 4, group=8) == pytest.approx(reference, abs=0.01)
    assert reference < speed.padding_share(lengths, 4) / 5


def test_sft_lengths_are_chat_template_lengths_of_a_seeded_sample(base):
    from zephyr.model.prompts import examples

    tokenizer = modeldir.load_tokenizer(base)
    rows = examples("sft", uneven(sft_records(12)))
    whole = training.sft_lengths(tokenizer, rows, None)
    first = tokenizer.apply_chat_template(rows[0]["prompt"] + rows[0]["completion"], tokenize=False)
    assert whole[0] == len(tokenizer(first, add_special_tokens=False)["input_ids"])
    assert training.sft_lengths(tokenizer, rows, 20) == [min(n, 20) for n in whole]
    sample = training.sft_lengths(tokenizer, rows, None, most=5)
    assert len(sample) == 5 and set(sample) <= set(whole)
    assert sample == training.sft_lengths(tokenizer, rows, None, most=5)  # the same records every time


def test_a_retrained_parent_is_never_resumed(tmp_path, base):
    """A run killed mid-way, its parent then retrained (new weights, new manifest): the rerun starts over."""
    parent = tmp_path / "M1"
    tinymodels.qwen2(parent)
    modeldir.write_manifest(parent, {"model": "tiny", "variant": "M1"})
    train = write(tmp_path / "train.json", sft_records(16))
    hyper = {"trainer": "sft", **COMMON, "max_steps": 6, "save_steps": 2, "speed": FAST}

    class Interrupt(Exception):
        pass

    from transformers import TrainerCallback

    class StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise Interrupt

    args = ("t/m2", hyper, parent, train, None, tmp_path / "out", tmp_path / "ckpt")
    with pytest.raises(Interrupt):
        training.train(*args, callbacks=[StopAt()])
    tinymodels.qwen2(parent, seed=7)  # the parent is retrained
    modeldir.write_manifest(parent, {"model": "tiny", "variant": "M1"})
    assert files.read_json(parent / "manifest.json")["files"]
    summary = training.train(*args)
    assert summary["resumed_from"] is None and summary["steps"] == 6
    # the same parent again: the interrupted run resumes from its checkpoint
    with pytest.raises(Interrupt):
        training.train("t/m2b", *args[1:], callbacks=[StopAt()])
    again = training.train("t/m2b", *args[1:])
    assert again["resumed_from"] and again["resumed_from"].endswith("checkpoint-2")
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["steps"] == 6
