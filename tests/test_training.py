"""LoRA SFT and DPO on tiny models through TRL: learning, the reference model, resume, bad input."""

import json
import sys

import pandas as pd
import pytest
import torch

import tinymodels
from conftest import ROOT, run, run_script
from zephyr import files
from zephyr.model import modeldir, prompts, training
from zephyr.model.bnb import BitsandbytesError

SFT = {"trainer": "sft", "logging_steps": 1, "learning_rate": 1e-2, "lr_scheduler_type": "constant",
       "per_device_train_batch_size": 8, "num_train_epochs": 6, "max_length": 64, "eval_steps": 6,
       "eval_on_start": True, "lora": {"r": 8, "alpha": 16}}
DPO = {"trainer": "dpo", "beta": 0.5, "learning_rate": 2e-2, "lr_scheduler_type": "constant",
       "per_device_train_batch_size": 8, "num_train_epochs": 4, "max_length": 64, "eval_steps": 5,
       "eval_on_start": True, "lora": {"r": 8, "alpha": 16}}


def write(path, records):
    path.write_text(json.dumps(records))
    return path


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tinymodels.qwen2(tmp_path_factory.mktemp("base") / "M0")


def sft_records(n, offset=0):
    """A learnable task: the answer is always the sum, in the same words."""
    return [{"instruction": f"What is {a} plus {a % 5}?", "input": "", "output": f"The answer is {a + a % 5}."}
            for a in range(offset, offset + n)]


def pair_records(n, offset=0):
    """A learnable preference: 'Correct' answers over 'wrong' ones."""
    return [{"instruction": f"What is {a} plus 1?", "input": "", "chosen": f"Correct: {a + 1}.",
             "rejected": f"wrong no {a + 3}"} for a in range(offset, offset + n)]


def evals(history: pd.DataFrame, column: str) -> pd.Series:
    return history.dropna(subset=[column]).set_index("step")[column]


def test_sft_lowers_validation_loss_and_writes_its_records(tmp_path, base):
    train = write(tmp_path / "train.json", sft_records(48))
    val = write(tmp_path / "val.json", sft_records(8, offset=100))
    summary = training.train("t/sft", SFT, base, train, val, tmp_path / "adapter", tmp_path / "ckpt")
    history = pd.read_csv(tmp_path / "adapter" / "log_history.csv")
    loss = evals(history, "eval_loss")
    assert loss.index[0] == 0 and loss.iloc[-1] < loss.iloc[0] - 0.5
    assert {"step", "epoch", "loss", "learning_rate"} <= set(history.columns)
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    saved = json.loads((tmp_path / "adapter" / "summary.json").read_text())
    assert saved == summary and summary["tokens_seen"] > 0 and summary["wall_seconds"] > 0
    assert summary["lora_targets"] and summary["versions"]["trl"] == "1.16.0"
    assert not (tmp_path / "ckpt").exists() or not any((tmp_path / "ckpt").iterdir())


def test_dpo_learns_the_preference_with_the_parent_as_reference(tmp_path, base):
    train = write(tmp_path / "train.json", pair_records(48))
    val = write(tmp_path / "val.json", pair_records(16, offset=100))
    training.train("t/dpo", DPO, base, train, val, tmp_path / "adapter", tmp_path / "ckpt")
    history = pd.read_csv(tmp_path / "adapter" / "log_history.csv")
    accuracy = evals(history, "eval_rewards/accuracies")
    # At the start the policy is its parent: every reward is exactly 0, so the reference is the parent.
    assert evals(history, "eval_rewards/chosen").iloc[0] == 0 == evals(history, "eval_rewards/rejected").iloc[0]
    assert accuracy.iloc[-1] > 0.5
    assert {"rewards/accuracies", "rewards/margins"} <= set(history.columns)


class Interrupt(Exception):
    pass


def stop_at(step):
    from transformers import TrainerCallback

    class Stop(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise Interrupt

    return Stop()


def test_an_interrupted_run_resumes_from_its_checkpoint(tmp_path, base):
    hyper = {**SFT, "num_train_epochs": 2, "save_steps": 4, "eval_on_start": False}
    train = write(tmp_path / "train.json", sft_records(48))
    val = write(tmp_path / "val.json", sft_records(8, offset=100))
    args = ("t/resume", hyper, base, train, val, tmp_path / "adapter", tmp_path / "ckpt")
    with pytest.raises(Interrupt):
        training.train(*args, callbacks=[stop_at(6)])
    assert not (tmp_path / "adapter").exists()
    summary = training.train(*args)
    assert summary["resumed_from"].endswith("checkpoint-4")
    resumed = pd.read_csv(tmp_path / "adapter" / "log_history.csv")
    # steps 1-4 restored
    assert resumed.dropna(subset=["loss"])["step"].tolist() == list(range(1, summary["steps"] + 1))
    training.train("t/resume", hyper, base, train, val, tmp_path / "straight", tmp_path / "ckpt2")
    straight = pd.read_csv(tmp_path / "straight" / "log_history.csv")
    for column in ("num_tokens", "eval_num_tokens", "loss"):
        assert resumed[column].tolist() == pytest.approx(straight[column].tolist(), nan_ok=True), column
    # train_loss: the mean of every step's logged loss (logging_steps 1), resumed or not
    losses = straight.dropna(subset=["loss"])["loss"]
    for history in (resumed, straight):
        assert history["train_loss"].dropna().tolist() == pytest.approx([losses.sum() / len(losses)])


def test_a_run_resumed_right_after_an_evaluation_step_has_the_uninterrupted_history(tmp_path, base):
    """With eval_on_start, a resumed Trainer would evaluate again at the step it resumes from (a point the
    uninterrupted run does not have), and the history read back from the checkpoint lists its columns
    by name: the resumed log_history.csv is the uninterrupted one, rows and column order, timings aside."""
    hyper = {**SFT, "num_train_epochs": 2, "save_steps": 6, "eval_on_start": True}  # eval_steps 6 too
    train = write(tmp_path / "train.json", sft_records(48))
    val = write(tmp_path / "val.json", sft_records(8, offset=100))
    args = ("t/resume-eval", hyper, base, train, val, tmp_path / "adapter", tmp_path / "ckpt")
    with pytest.raises(Interrupt):
        training.train(*args, callbacks=[stop_at(7)])  # checkpoint-6 saved right after the step-6 evaluation
    assert training.train(*args)["resumed_from"].endswith("checkpoint-6")
    training.train("t/resume-eval", hyper, base, train, val, tmp_path / "straight", tmp_path / "ckpt2")
    resumed, straight = (pd.read_csv(tmp_path / d / "log_history.csv") for d in ("adapter", "straight"))
    assert list(resumed.columns) == list(straight.columns)
    assert evals(resumed, "eval_loss").index.tolist() == [0, 6, 12]
    timing = [c for c in straight.columns if "runtime" in c or "per_second" in c]
    pd.testing.assert_frame_equal(resumed.drop(columns=timing), straight.drop(columns=timing), rtol=1e-5)


def test_a_changed_run_does_not_resume_a_stale_checkpoint(tmp_path, base):
    train = write(tmp_path / "train.json", sft_records(16))
    one = training.fingerprint("r", SFT, 0, None, None, str(base), base / "config.json", train, "")
    two = training.fingerprint("r", {**SFT, "learning_rate": 1e-3}, 0, None, None, str(base), base / "config.json",
                               train, "")
    assert one != two


def test_the_fingerprint_follows_the_parent_s_manifest_and_the_precision(tmp_path, base):
    """A retrained parent (a new manifest, whatever its path) or another precision never resumes a
    checkpoint of the old run."""
    import shutil

    parent = tmp_path / "parent"
    shutil.copytree(base, parent)
    (parent / "manifest.json").write_text(json.dumps({"files": {"model.safetensors": "aaaa"}}))
    train = write(tmp_path / "train.json", sft_records(16))
    float32 = {"weights": "float32", "compute": "plain"}

    def fingerprint(precision=float32):
        return training.fingerprint("r", SFT, 0, None, None, precision, str(parent),
                                    *modeldir.identity_files(parent), train, "")

    first = fingerprint()
    assert fingerprint() == first
    assert fingerprint({"weights": "float32", "compute": "bf16-autocast"}) != first
    (parent / "manifest.json").write_text(json.dumps({"files": {"model.safetensors": "bbbb"}}))
    assert fingerprint() != first


@pytest.mark.parametrize("precision", [{"weights": "float32", "compute": "plain"},
                                       {"weights": "bfloat16", "compute": "plain"},
                                       {"weights": "float32", "compute": "bf16-autocast"}])
def test_training_runs_in_the_study_precision_and_records_it(tmp_path, base, precision):
    """The frozen base in the precision's dtype, the Trainer's bf16 autocast exactly when it says so (TRL
    would turn it on by itself on a GPU), LoRA weights in float32, and the precision in summary.json."""
    from transformers import TrainerCallback

    seen = {}

    class Look(TrainerCallback):
        def on_step_begin(self, args, state, control, model=None, **kwargs):
            seen["bf16"], seen["fp16"] = args.bf16, args.fp16
            seen["base"] = {p.dtype for n, p in model.named_parameters() if "lora_" not in n}
            seen["lora"] = {p.dtype for n, p in model.named_parameters() if "lora_" in n}

    train = write(tmp_path / "train.json", sft_records(8))
    hyper = {**SFT, "num_train_epochs": 1, "eval_on_start": False}
    summary = training.train("t/precision", hyper, base, train, None, tmp_path / "adapter", tmp_path / "ckpt",
                             precision=precision, callbacks=[Look()])
    assert summary["precision"] == precision
    assert seen["bf16"] == (precision["compute"] == "bf16-autocast") and seen["fp16"] is False
    assert seen["base"] == {getattr(torch, precision["weights"])} and seen["lora"] == {torch.float32}


def test_unknown_hyperparameter_is_named_before_loading_a_model(tmp_path):
    with pytest.raises(training.TrainingError,
                       match=r"hyperparameters of run x: warmup_ratio not a field of TRL's SFTConfig"):
        training.train("x", {**SFT, "warmup_ratio": 0.1}, tmp_path / "nowhere", tmp_path / "t.json", None,
                       tmp_path / "out", tmp_path / "ckpt")


def test_messages_carry_system_history_and_input():
    record = {"instruction": "Q", "input": "ctx", "system": "S", "history": [["u1", "a1"]]}
    assert prompts.messages(record) == [
        {"role": "system", "content": "S"}, {"role": "user", "content": "u1"},
        {"role": "assistant", "content": "a1"}, {"role": "user", "content": "Q\nctx"}]


def test_prompts_longer_than_max_length_are_refused_before_training(tmp_path, base):
    train = write(tmp_path / "train.json", pair_records(8))
    with pytest.raises(training.TrainingError, match=r"every prompt is at least max_length=4 tokens"):
        training.train("t/short", {**DPO, "max_length": 4}, base, train, None, tmp_path / "out", tmp_path / "ckpt")
    assert not (tmp_path / "out").exists()


def test_pairs_cut_before_they_differ_are_refused_or_reported(tmp_path, base, caplog):
    """max_length cutting a pair inside the answer's shared part leaves two identical sequences."""
    tok = training.modeldir.load_tokenizer(base)
    shared = "We add the numbers one at a time and then we check the sum twice. "
    long = [{"instruction": f"What is {a} plus 1?", "input": "", "chosen": shared + f"So {a + 1}.",
             "rejected": shared + f"So {a + 3}."} for a in range(6)]
    prompt = max(len(prompts.prompt_ids(tok, prompts.messages(r))) for r in long)
    full = max(len(tok.apply_chat_template(prompts.messages(r) + [{"role": "assistant", "content": r["rejected"]}],
                                           tokenize=True, return_dict=True)["input_ids"]) for r in long)
    max_length = prompt + 5  # inside the shared sentence
    assert prompts.pairs_cut_equal(tok, long, max_length) == (6, full)
    assert prompts.pairs_cut_equal(tok, long, full) == (0, full)
    train = write(tmp_path / "train.json", long)
    with pytest.raises(training.TrainingError, match=rf"6 of 6 preference pairs are cut at max_length={max_length}.*"
                                                     rf"needs {full} tokens"):
        training.train("t/cut", {**DPO, "max_length": max_length}, base, train, None, tmp_path / "out", tmp_path / "c")
    assert not (tmp_path / "out").exists()
    mixed = long[:2] + pair_records(4)  # the short pairs differ within max_length
    training.check_pair_lengths("t/mixed", tok, mixed, max_length)
    assert "2 of 6 preference pairs are cut" in caplog.text


def test_qlora_trains_an_adapter_on_a_4bit_base(tmp_path, base):
    """The model the trainer steps holds the base's linear layers as NF4 4-bit layers (not the dense ones
    the summary could name alike), and the adapter on them trained: LoRA's B matrices start at zero."""
    import bitsandbytes as bnb
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, TrainerCallback

    dense = AutoModelForCausalLM.from_pretrained(base)
    linear = {name for name, module in dense.named_modules() if isinstance(module, torch.nn.Linear)}
    seen = {}

    class Look(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            four_bit = {name: module for name, module in model.named_modules() if isinstance(module, bnb.nn.Linear4bit)}
            seen["layers"] = {name.split("base_model.model.", 1)[-1].replace(".base_layer", "") for name in four_bit}
            seen["quant_types"] = {module.weight.quant_type for module in four_bit.values()}

    train = write(tmp_path / "train.json", sft_records(8))
    hyper = {**SFT, "num_train_epochs": 1, "eval_on_start": False}
    summary = training.train("t/qlora", hyper, base, train, None, tmp_path / "adapter", tmp_path / "ckpt", qlora="nf4",
                             callbacks=[Look()])
    assert summary["qlora"] == "nf4" and summary["steps"] == 1
    assert seen["quant_types"] == {"nf4"}
    assert seen["layers"] == linear - {"lm_head"}  # every linear layer of the base but the output head
    adapter = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    b_matrices = [tensor for key, tensor in adapter.items() if "lora_B" in key]
    assert b_matrices and all(tensor.abs().sum() > 0 for tensor in b_matrices)


def test_qlora_trains_on_after_an_evaluation_and_its_4bit_layers_keep_one_kernel(tmp_path, base):
    """An evaluation (eval mode, no grad) before training steps: on a CPU with AVX-512-bf16, bitsandbytes
    would repack the 4-bit weights for its bf16 kernel there and fail the next training step."""
    import bitsandbytes as bnb
    from transformers import TrainerCallback

    kernels = set()

    class Look(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            kernels.update(getattr(m.weight.quant_state, "packing_format_for_cpu", False)
                           for m in model.modules() if isinstance(m, bnb.nn.Linear4bit))

    train, validation = (write(tmp_path / f"{n}.json", sft_records(k)) for n, k in (("train", 8), ("val", 4)))
    hyper = {**SFT, "max_steps": 2, "eval_on_start": True, "eval_steps": 1, "eval_strategy": "steps"}
    summary = training.train("t/qlora-eval", hyper, base, train, validation, tmp_path / "adapter", tmp_path / "ckpt",
                             qlora="nf4", callbacks=[Look()])
    assert summary["steps"] == 2 and kernels == {False}
    assert len(pd.read_csv(tmp_path / "adapter" / "validation_items.csv")) == 4  # each record's final loss


def test_a_dense_training_job_runs_without_bitsandbytes_and_trains_the_same_adapter(tmp_path, base):
    """The LoRA SFT job (its script, its own process, one thread) imports TRL and peft but not
    bitsandbytes, and trains the adapter, to the byte, that this process trains with bitsandbytes imported."""
    train = write(tmp_path / "train.json", sft_records(16))
    hyper = {**SFT, "num_train_epochs": 1, "eval_on_start": False}
    fp32 = {"weights": "float32", "compute": "plain"}
    imported = run_script("train_adapter", {
        "input": {"base": str(base / "config.json"), "train": str(train), "validation": None},
        "output": {"adapter": str(tmp_path / "job" / "adapter_config.json")}, "log": {"log": str(tmp_path / "t.log")},
        "wildcards": {"model": "t", "variant": "sft"},
        "params": {"hyperparameters": hyper, "seed": 0, "qlora": None, "lora_targets": None, "precision": fp32,
                   "checkpoints": str(tmp_path / "job-ckpt")}}, ["trl", "peft", "bitsandbytes"])
    assert imported == {"trl": True, "peft": True, "bitsandbytes": False}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the job
    try:
        training.train("t/sft", hyper, base, train, None, tmp_path / "here", tmp_path / "ckpt", precision=fp32)
    finally:
        torch.set_num_threads(threads)
    assert sys.modules.get("bitsandbytes") is not None  # here it was imported
    assert files.sha256(tmp_path / "job" / "adapter_model.safetensors") == \
        files.sha256(tmp_path / "here" / "adapter_model.safetensors")
    job, here = (pd.read_csv(tmp_path / d / "log_history.csv").filter(regex="^(?!.*(runtime|per_second))")
                 for d in ("job", "here"))  # what the run logged, its wall times aside
    pd.testing.assert_frame_equal(job, here)


def test_a_run_that_needs_bitsandbytes_says_so_and_is_refused_without_it(tmp_path, base, monkeypatch):
    """A QLoRA base or a bitsandbytes optimizer needs bitsandbytes; in a process started without it such
    a run fails before a model is loaded, naming the optimizer."""
    assert training.needs_bitsandbytes({"qlora": "nf4", "base_dir": base, "hyper": SFT})
    assert training.needs_bitsandbytes({"qlora": None, "base_dir": base, "hyper": {**SFT, "optim": "adamw_8bit"}})
    assert not training.needs_bitsandbytes({"qlora": None, "base_dir": base, "hyper": {**SFT, "optim": "adamw_torch"}})
    import peft  # noqa: F401  # with bitsandbytes first: peft and transformers test for it once a process
    from transformers.utils import is_bitsandbytes_available

    assert is_bitsandbytes_available()

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # what bnb.for_job(False) leaves
    train = write(tmp_path / "train.json", sft_records(8))
    with pytest.raises(BitsandbytesError, match="run t/8bit: optim paged_adamw_8bit needs bitsandbytes"):
        training.train("t/8bit", {**SFT, "optim": "paged_adamw_8bit"}, base, train, None, tmp_path / "a",
                       tmp_path / "c")
    with pytest.raises(BitsandbytesError, match="the nf4 format needs bitsandbytes"):
        training.train("t/qlora", SFT, base, train, None, tmp_path / "a", tmp_path / "c", qlora="nf4")
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("hyper, records", [(SFT, sft_records), (DPO, pair_records)])
def test_length_grouped_batches_train_sft_and_dpo(tmp_path, base, hyper, records):
    """transformers' length-grouped sampler measures rows by `input_ids`, which TRL's DPO rows lack."""
    train = write(tmp_path / "train.json", records(16))
    grouped = {**hyper, "num_train_epochs": 1, "per_device_train_batch_size": 4, "eval_on_start": False,
               "train_sampling_strategy": "group_by_length"}
    summary = training.train("t/grouped", grouped, base, train, None, tmp_path / "adapter", tmp_path / "ckpt")
    assert summary["steps"] == 4 and summary["tokens_seen"] > 0


#: The longest a data-parallel launch of a test may take (two tiny runs, a few steps each, on 2 cores).
LAUNCH_TIMEOUT = 900
LAUNCH = """
import json, sys
from zephyr.model import training
args = json.loads(sys.argv[1])
try:
    summary = training.launch(args["spec"], args["processes"], **args["options"])
except training.TrainingError as err:
    print(f"TrainingError: {err}", file=sys.stderr)
    sys.exit(3)
with open(args["summary"], "w") as handle:
    json.dump(summary, handle)
"""


def launch_in_own_session(tmp_path, spec: dict, processes: int, **options) -> dict:
    """`training.launch(spec, processes, **options)` in a child process that leads its own session, run by
    conftest's `run`: past LAUNCH_TIMEOUT the whole tree (the child, `accelerate launch` and its training
    processes) is killed, not the child alone. A TrainingError comes back as one."""
    summary = tmp_path / f"launched-{len(list(tmp_path.glob('launched-*')))}.json"
    args = json.dumps({"spec": spec, "processes": processes, "options": options, "summary": str(summary)}, default=str)
    result = run([sys.executable, "-c", LAUNCH, args], timeout=LAUNCH_TIMEOUT, cwd=ROOT)
    errors = [line for line in result.stderr.splitlines() if line.startswith("TrainingError: ")]
    if result.returncode == 3 and errors:
        raise training.TrainingError(errors[-1].removeprefix("TrainingError: "))
    assert result.returncode == 0, result.stderr[-6000:]
    return json.loads(summary.read_text())


def test_two_processes_train_data_parallel_with_the_run_s_global_batch(tmp_path, base):
    """The multi-GPU path on CPU: `accelerate launch` starts two gloo processes; they split the
    accumulation, so a run sees the same steps and tokens as one process, and one rank writes."""
    train = write(tmp_path / "train.json", sft_records(16))
    hyper = {**SFT, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 2, "num_train_epochs": 1,
             "eval_on_start": False}
    spec = dict(name="t/ddp", hyper=hyper, base_dir=base, train_path=train, validation_path=None)
    one = training.launch({**spec, "out_dir": tmp_path / "one", "checkpoint_root": tmp_path / "ckpt1"}, 1)
    log = tmp_path / "train.log"
    two = launch_in_own_session(tmp_path, {**spec, "out_dir": tmp_path / "two", "checkpoint_root": tmp_path / "ckpt2"},
                                2, threads=2, log_file=log)
    assert (one["processes"], two["processes"]) == (1, 2)
    assert one["global_batch_size"] == two["global_batch_size"] == 4
    assert one["steps"] == two["steps"] == 4 and one["tokens_seen"] == two["tokens_seen"] > 0
    assert json.loads((tmp_path / "two" / "summary.json").read_text()) == two
    assert (tmp_path / "two" / "adapter_model.safetensors").exists()
    text = log.read_text()
    assert "[rank 0] INFO zephyr.model.training: t/ddp: sft" in text and "x 2 processes" in text
    assert "[rank 1] INFO" not in text  # the other ranks log warnings only
    assert not any((tmp_path / "ckpt2").iterdir())  # checkpoints and the launch spec are gone


def test_a_failed_process_fails_the_launch_naming_the_log(tmp_path):
    train = write(tmp_path / "train.json", sft_records(4))
    log = tmp_path / "train.log"
    spec = dict(name="t/broken", hyper=SFT, base_dir=tmp_path / "no-model", train_path=train, validation_path=None,
                out_dir=tmp_path / "out", checkpoint_root=tmp_path / "ckpt")
    with pytest.raises(training.TrainingError, match="gradient_accumulation_steps=1 cannot be split over 2 GPUs"):
        training.launch(spec, 2, log_file=log)
    assert not log.exists()  # refused before any process started
    spec["hyper"] = {**SFT, "gradient_accumulation_steps": 2}
    with pytest.raises(training.TrainingError, match=rf"t/broken: the 2 training processes failed .*see {log}"):
        launch_in_own_session(tmp_path, spec, 2, log_file=log)
    assert "no-model" in log.read_text() and not (tmp_path / "out").exists()


def test_more_processes_than_gpus_is_refused_before_starting(tmp_path, monkeypatch):
    """On a 1-GPU machine, 2 processes would crash one with 'invalid device ordinal'."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    spec = dict(name="t/ddp", hyper={**SFT, "gradient_accumulation_steps": 2}, base_dir=str(tmp_path / "M0"),
                train_path=str(tmp_path / "t.json"), validation_path=None, out_dir=str(tmp_path / "out"),
                checkpoint_root=str(tmp_path / "ckpt"))
    with pytest.raises(training.TrainingError, match=r"t/ddp: 2 training processes \(one per GPU\) but this job "
                                                     r"sees 1 GPU\(s\)"):
        training.launch(spec, 2)
    assert not (tmp_path / "ckpt").exists()  # refused before writing anything
