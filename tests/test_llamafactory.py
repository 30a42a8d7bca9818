"""LlamaFactory configs of the study's runs: names, chains, defaults and refusals; LlamaFactory's own
parser reads them where its venv exists (`python -m bench.llamafactory_check` builds it and trains on them)."""

import dataclasses
import json
import os
import re
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, run, snakemake
from zephyr.model import llamafactory

LF_VENV = Path(os.environ.get("ZEPHYR_LLAMAFACTORY_VENV", "/work/lf-venv"))
INFO = {
    "D_S": {"file_name": "D_S.json", "formatting": "alpaca", "columns": {}},
    "D_S_validation": {"file_name": "D_S.validation.json", "formatting": "alpaca", "columns": {}},
    "DPO": {"file_name": "DPO.json", "formatting": "alpaca", "ranking": True, "columns": {}},
}
SFT = {"trainer": "sft", "per_device_train_batch_size": 16, "gradient_accumulation_steps": 8, "learning_rate": 5e-5,
       "lr_scheduler_type": "cosine", "warmup_steps": 0.1, "num_train_epochs": 2, "max_length": 2048,
       "eval_steps": 50, "lora": {"r": 4, "alpha": 32}}
DPO = {"trainer": "dpo", "beta": 0.2, "learning_rate": 5e-5, "max_length": 512}


def config(name, variant, hyper, **kw):
    kw = {"base_dir": "resources/models/qwen", "model_type": "llama", "dataset_info": INFO,
          "dataset_dir": "results/mixtures", "output_dir": f"results/llamafactory/{name}", **kw}
    return llamafactory.run_config(name, variant, hyper, **kw)


def test_an_sft_run_in_llamafactory_names():
    c = config("qwen/M1-DS-cosine", {"data": "D_S", "parent": "M0", "seed": 3}, SFT)
    assert {k: c[k] for k in ("model_name_or_path", "stage", "do_train", "finetuning_type", "dataset", "eval_dataset",
                              "dataset_dir", "output_dir", "seed")} == {
        "model_name_or_path": "resources/models/qwen", "stage": "sft", "do_train": True, "finetuning_type": "lora",
        "dataset": "D_S", "eval_dataset": "D_S_validation", "dataset_dir": "results/mixtures",
        "output_dir": "results/llamafactory/qwen/M1-DS-cosine", "seed": 3}
    # the paper's Table 2 settings, under LlamaFactory's names where they differ from TRL's
    assert (c["cutoff_len"], c["per_device_train_batch_size"], c["gradient_accumulation_steps"]) == (2048, 16, 8)
    assert (c["learning_rate"], c["lr_scheduler_type"], c["warmup_steps"], c["num_train_epochs"]) == (
        5e-5, "cosine", 0.1, 2)
    assert (c["eval_strategy"], c["eval_steps"]) == ("steps", 50)
    # LoRA: the set's r and alpha, Zephyr's dropout default (LlamaFactory's own is 0), Zephyr's targets for llama
    assert (c["lora_rank"], c["lora_alpha"], c["lora_dropout"]) == (4, 32, 0.05)
    assert c["lora_target"] == "q_proj,k_proj,v_proj,o_proj"
    # the model folder's own chat template, parsed by LlamaFactory; nothing TRL-only left in
    assert "template" not in c and not {"max_length", "trainer", "lora", "beta"} & set(c)
    assert "adapter_name_or_path" not in c and "bf16" not in c


def test_what_a_set_leaves_to_trl_is_written_with_trl_values():
    from trl import DPOConfig, SFTConfig

    defaults = {f.name: f.default for f in dataclasses.fields(SFTConfig)}
    c = config("qwen/x", {"data": "D_S"}, {"trainer": "sft"})
    assert c["learning_rate"] == defaults["learning_rate"] and c["cutoff_len"] == defaults["max_length"]
    assert c["per_device_train_batch_size"] == defaults["per_device_train_batch_size"]
    dpo_defaults = {f.name: f.default for f in dataclasses.fields(DPOConfig)}
    d = config("qwen/y", {"data": "DPO"}, {"trainer": "dpo"})
    assert (d["learning_rate"], d["pref_beta"], d["pref_loss"]) == (
        dpo_defaults["learning_rate"], dpo_defaults["beta"], "sigmoid")
    assert "eval_dataset" not in d and d["eval_strategy"] == "no"  # DPO has no registered validation split here


def test_dpo_from_a_trained_parent_merges_the_parents_llamafactory_adapters():
    m1 = config("qwen/M1-DS-cosine", {"data": "D_S", "parent": "M0"}, SFT)
    m2 = config("qwen/M2-DS", {"data": "DPO", "parent": "M1-DS-cosine"}, DPO, parent=m1)
    assert m2["model_name_or_path"] == "resources/models/qwen"
    assert m2["adapter_name_or_path"] == "results/llamafactory/qwen/M1-DS-cosine"
    assert m2["create_new_adapter"] is True  # merged into the base: the reference (adapter off) is M1
    assert (m2["stage"], m2["pref_beta"], m2["cutoff_len"]) == ("dpo", 0.2, 512)
    m3 = config("qwen/M3", {"data": "DPO", "parent": "M2-DS"}, DPO, parent=m2)
    assert m3["adapter_name_or_path"] == "results/llamafactory/qwen/M1-DS-cosine,results/llamafactory/qwen/M2-DS"
    with pytest.raises(llamafactory.LlamaFactoryConfigError, match="whose config was not given"):
        config("qwen/M2-DS", {"data": "DPO", "parent": "M1-DS-cosine"}, DPO)


def test_qlora_bf16_lora_targets_and_renamed_trl_settings():
    c = config("qwen/q", {"data": "D_S", "qlora": "nf4"},
               {**SFT, "completion_only_loss": False, "gradient_checkpointing": False},
               lora_targets=["q_proj", "v_proj"], bf16=True)
    assert (c["quantization_bit"], c["quantization_type"], c["double_quantization"]) == (4, "nf4", False)
    assert config("qwen/q", {"data": "D_S", "qlora": "nf4-dq"}, SFT)["double_quantization"] is True
    assert c["lora_target"] == "q_proj,v_proj" and c["bf16"] is True
    assert c["train_on_prompt"] is True and c["disable_gradient_checkpointing"] is True
    bloom = config("bloom/x", {"data": "D_S"}, SFT, model_type="bloom")
    assert bloom["lora_target"] == "query_key_value,dense"


def test_what_llamafactory_cannot_train_as_zephyr_is_refused():
    error = llamafactory.LlamaFactoryConfigError
    with pytest.raises(error, match="hyperparameter precompute_ref_log_probs is a setting of TRL"):
        config("qwen/x", {"data": "DPO"}, {**DPO, "precompute_ref_log_probs": True})
    with pytest.raises(error, match="loss_type='robust' has no LlamaFactory counterpart"):
        config("qwen/x", {"data": "DPO"}, {**DPO, "loss_type": "robust"})
    with pytest.raises(error, match="a sft run on ranking data 'DPO'"):
        config("qwen/x", {"data": "DPO"}, SFT)
    with pytest.raises(error, match="'MCQA' is not in dataset_info.json"):
        config("qwen/x", {"data": "MCQA"}, SFT)
    with pytest.raises(error, match="no LoRA targets known for model type 'gpt_neox'"):
        config("qwen/x", {"data": "D_S"}, SFT, model_type="gpt_neox")
    # speed-only settings are LlamaFactory's to decide, not errors
    assert "padding_free" not in config("qwen/x", {"data": "D_S"}, {**SFT, "padding_free": True})


def test_write_run_config_reads_the_workflow_files(tmp_path):
    (tmp_path / "resources" / "models" / "qwen").mkdir(parents=True)
    (tmp_path / "resources" / "models" / "qwen" / "manifest.json").write_text(json.dumps({"model_type": "llama"}))
    (tmp_path / "mixtures").mkdir()
    (tmp_path / "mixtures" / "dataset_info.json").write_text(json.dumps(INFO))
    out = tmp_path / "llamafactory" / "M1.yaml"
    out.parent.mkdir()
    written = llamafactory.write_run_config(
        out, "qwen/M1", {"data": "D_S", "parent": "M0"}, SFT,
        base_manifest=tmp_path / "resources" / "models" / "qwen" / "manifest.json",
        dataset_info=tmp_path / "mixtures" / "dataset_info.json")
    text = out.read_text()
    assert text.startswith("# LlamaFactory 0.9.5 config of Zephyr run qwen/M1")
    assert yaml.safe_load(text) == written
    assert written["output_dir"] == str(tmp_path / "llamafactory" / "M1")
    assert written["model_name_or_path"] == str(tmp_path / "resources" / "models" / "qwen")
    assert written["dataset_dir"] == str(tmp_path / "mixtures")


@pytest.mark.workflow
def test_llamafactory_yamls_are_optional_outputs_of_the_workflow(tmp_path):
    run = "results/llamafactory/qwen/M2-DS.yaml"
    planned = snakemake(tmp_path, "-n", run, "--configfile", str(ROOT / "config.yaml")).stdout
    # M2-DS is trained from M1-DS-cosine: its YAML needs M1's, the mixtures' index and the base model
    for output in (run, "results/llamafactory/qwen/M1-DS-cosine.yaml", "results/mixtures/dataset_info.json"):
        assert output in planned
    assert re.search(r"resources/models/qwen/[0-9a-f]{12}/manifest\.json", planned)  # the shared base model
    assert "train_adapter" not in planned  # nothing of Zephyr's training
    everything = snakemake(tmp_path, "-n", "--configfile", str(ROOT / "config.yaml")).stdout
    assert "llamafactory_config" not in everything


@pytest.mark.skipif(not (LF_VENV / "bin" / "llamafactory-cli").exists(),
                    reason=f"no LlamaFactory venv at {LF_VENV} (`python -m bench.llamafactory_check` builds it)")
def test_llamafactory_parses_every_generated_config(tmp_path):
    """Every key is one LlamaFactory 0.9.5 accepts, with a value it takes (its own argument parser)."""
    m1 = config("qwen/M1-DS-cosine", {"data": "D_S", "parent": "M0"}, SFT)
    configs = {"sft": m1, "dpo": config("qwen/M2-DS", {"data": "DPO", "parent": "M1-DS-cosine"}, DPO, parent=m1)}
    for name, c in configs.items():
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({**c, "output_dir": str(tmp_path / name)}))
    code = (
        "import sys, yaml\n"
        "from llamafactory.hparams.parser import _parse_train_args\n"
        "for path in sys.argv[1:]:\n"
        "    model, data, training, finetuning, _ = _parse_train_args(yaml.safe_load(open(path)))\n"
        "    print(finetuning.stage, finetuning.lora_rank, finetuning.lora_target, data.cutoff_len, data.template,\n"
        "          training.learning_rate, training.get_warmup_steps(1000), finetuning.pref_beta,\n"
        "          model.adapter_name_or_path)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = run([str(LF_VENV / "bin" / "python"), "-c", code, str(tmp_path / "sft.yaml"), str(tmp_path / "dpo.yaml")],
                 timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    sft, dpo = result.stdout.strip().splitlines()[-2:]
    # warmup 0.1 of 1000 steps is 100 (a ratio, as for TRL); Zephyr's chat template is parsed (template None)
    assert sft == "sft 4 ['q_proj', 'k_proj', 'v_proj', 'o_proj'] 2048 None 5e-05 100 0.1 None"
    assert dpo.startswith("dpo 8 ") and " 512 None " in dpo
    assert dpo.endswith(" 0.2 ['results/llamafactory/qwen/M1-DS-cosine']")


@pytest.mark.parametrize("path", ["config.yaml", "config/paper.yaml"])
def test_every_run_of_the_configs_translates(path):
    from zephyr import config as zconfig

    cfg = zconfig.load(ROOT / path)
    info = {}
    for name, mix in cfg["mixtures"].items():
        if mix["task"] in ("sft", "preference"):
            info[name] = {"file_name": f"{name}.json", **({"ranking": True} if mix["task"] == "preference" else {})}
            if mix.get("validation"):
                info[f"{name}_validation"] = {"file_name": f"{name}.validation.json"}
    written = {}
    pending = [(m, v) for v, spec in cfg["variants"].items() for m in spec["models"]]
    while pending:  # a run after its parent's
        model, variant = pending.pop(0)
        spec = cfg["variants"][variant]
        if spec["parent"] != "M0" and (model, spec["parent"]) not in written:
            pending.append((model, variant))
            continue
        hyper = cfg["hyperparameters"][spec["hyperparameters"]]
        c = config(f"{model}/{variant}", spec, hyper, base_dir=f"resources/models/{model}",
                   model_type={"qwen": "qwen2", "bloom": "bloom"}[model], dataset_info=info,
                   parent=written.get((model, spec["parent"])), lora_targets=cfg["models"][model].get("lora_targets"),
                   output_dir=f"results/llamafactory/{model}/{variant}")
        written[(model, variant)] = c
        assert c["stage"] == hyper["trainer"] and c["dataset"] == spec["data"]
        for key in ("learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "lr_scheduler_type"):
            assert c[key] == hyper[key], (variant, key)
        assert c["cutoff_len"] == hyper["max_length"]
        assert ("adapter_name_or_path" in c) == (spec["parent"] != "M0")
        assert ("quantization_bit" in c) == bool(spec.get("qlora"))
    assert len(written) == sum(len(spec["models"]) for spec in cfg["variants"].values())
