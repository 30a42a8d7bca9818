"""Merging LoRA adapters and bitsandbytes exports, on tiny models (seconds, CPU)."""

import json
import shutil
import stat
import sys

import pytest
import torch

import tinymodels
from conftest import run_script
from zephyr import devices, files
from zephyr.evaluation import scoring
from zephyr.model import bnb, merge, modeldir, quantize
from zephyr.model.modeldir import ModelDirError
from zephyr.study import AS_TRAINED, DENSE, QUANTIZED

CARD = {
    "model": "tiny",
    "variant": "M1-DS-cosine",
    "parent": "M0",
    "base_source": {"kind": "scratch", "architecture": "qwen2", "revision": "rev-1234", "seed": 0},
    "data": "D_S",
    "qlora": None,
    "hyperparameters": {"trainer": "sft", "learning_rate": 2.0e-4, "lr_scheduler_type": "cosine",
                        "max_steps": 12, "lora": {"r": 4, "alpha": 8}},
    "experiment": "zephyr-test",
}
# (min top-1 agreement, max mean |Δlogit| / mean |logit|) against the fp32 model. Measured on this tiny
# merged model over 128 positions and several adapter seeds: NF4 0.78-0.85 and 0.15-0.18 (double
# quantization the same to 3 digits), int8 0.96-0.98 and 0.013-0.018; the bounds leave about 2x margin.
CLOSENESS = {"nf4": (0.6, 0.3), "nf4-dq": (0.6, 0.3), "int8": (0.9, 0.05)}
#: Largest mean difference, per continuation token (nats), between a quantized copy's log-likelihoods and
#: the dense model's, on the tiny merged model: about 3.5x what was measured (2026-12-03, AMD EPYC CPU:
#: nf4 0.0145, nf4-dq 0.0137, int8 0.0009).
LOGLIKELIHOOD_TOLERANCE = {"nf4": 0.05, "nf4-dq": 0.05, "int8": 0.003}
#: Continuations scored for it: a context and a continuation of several tokens each.
CONTINUATIONS = [("What is 3 plus 4?", " The answer is 7."), ("What is 12 plus 3? The answer is", " 15. Correct"),
                 ("Be brief.", " The answer is 0 and nothing more.")]


def tokens(vocab: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(7)
    return torch.randint(0, vocab, (4, 32), generator=generator)


def logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids.to(model.device)).logits.float().cpu()


def write_base_manifest(path, name="tiny"):
    files.write_json(path / "manifest.json", {"model": name, "source": CARD["base_source"], "resolved_revision": None})
    return path


def qwen2_sized(path, hidden=64, intermediate=128, seed=0):
    """A tiny Qwen2 of chosen sizes (tinymodels.qwen2 is fixed at 64/128)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = tinymodels.tokenizer()
    config = Qwen2Config(vocab_size=len(tok), hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True)
    torch.manual_seed(seed)
    Qwen2ForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def leftovers(parent, name):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def base(work):
    return write_base_manifest(tinymodels.qwen2(work / "resources" / "M0"))


@pytest.fixture(scope="module")
def adapter(work, base):
    """A non-trivial LoRA adapter saved with the base's absolute path, and the PeftModel's logits."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(base.resolve()))
    ids = tokens(model.config.vocab_size)
    base_logits = logits(model, ids)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                            lora_dropout=0.0, task_type="CAUSAL_LM"))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.3)
    peft.eval()
    out = work / "adapters" / "M1-DS-cosine"
    peft.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    files.write_json(out / "summary.json", {"steps": 12, "epochs": 1.0, "train_records": 40, "device": "cpu"})
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(base.resolve())
    return {"dir": out, "ids": ids, "peft_logits": logits(peft, ids), "base_logits": base_logits}


@pytest.fixture(scope="module")
def merged(work, base, adapter):
    out = work / "models" / "tiny" / "M1-DS-cosine"
    manifest = merge.merge_adapter(base, adapter["dir"], out, card=CARD)
    return out, manifest


@pytest.fixture(scope="module")
def other_base(work):
    return write_base_manifest(qwen2_sized(work / "resources" / "other", hidden=128, intermediate=256), "other")


# ---- merging ---------------------------------------------------------------------------------------


def test_merged_logits_equal_the_adapted_model(merged, adapter):
    from transformers import AutoModelForCausalLM

    out, _ = merged
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    got = logits(model, adapter["ids"])
    assert (got - adapter["peft_logits"]).abs().max() < 1e-4
    assert (adapter["peft_logits"] - adapter["base_logits"]).abs().max() > 1e-2  # the adapter does something
    assert not any(k for k in model.state_dict() if "lora" in k)


def test_merged_folder_manifest_and_card(merged, base, adapter):
    out, manifest = merged
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md", "manifest.json"} <= names
    assert not leftovers(out.parent, out.name)
    on_disk = files.read_json(out / "manifest.json")
    assert on_disk == json.loads(json.dumps(manifest))
    assert manifest["files"] == {n: files.sha256(out / n) for n in names - {"manifest.json"}}
    assert manifest["kind"] == "merged" and manifest["model"] == "tiny" and manifest["variant"] == "M1-DS-cosine"
    assert manifest["parent"]["dir"] == str(base) and manifest["parent"]["model"] == "tiny"
    assert manifest["parent"]["manifest_sha256"] == files.sha256(base / "manifest.json")
    assert manifest["adapter"]["dir"] == str(adapter["dir"]) and manifest["adapter"]["r"] == 4
    assert manifest["adapter"]["weights_sha256"] == files.sha256(adapter["dir"] / "adapter_model.safetensors")
    assert manifest["hyperparameters"] == CARD["hyperparameters"] and manifest["parameters"] > 0
    assert manifest["tokenizer_from"] == str(adapter["dir"])  # the adapter's tokenizer wins over the base's
    assert {"torch", "transformers", "peft"} <= set(manifest["versions"])

    card = (out / "README.md").read_text()
    front = card.split("---\n")[1]
    assert "base_model: tiny" in front and "library_name: transformers" in front and "- sft" in front
    for needle in ("# tiny M1-DS-cosine", "## Base model", "rev-1234", "scratch", "## Adapter", str(adapter["dir"]),
                   "q_proj, v_proj", "| rank r | 4 |", "## Training data", "| mixture | D_S |", "## Hyperparameters",
                   "| learning_rate | 0.0002 |", "| lr_scheduler_type | cosine |", "| lora.r | 4 |", "zephyr-test",
                   "## Training run", "| steps | 12 |"):
        assert needle in card, needle


@pytest.mark.parametrize("weights", ["bfloat16", "float32"])
def test_a_merge_is_stored_in_the_study_precision_each_update_rounded_once(work, weights):
    """Merged in float32 and stored in the study precision's dtype, whatever the parent's (here bf16):
    every weight is round(W + s·B·A), exactly, so small LoRA updates are not rounded away twice before
    M2 trains on M1; in float32 nothing is rounded at all."""
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    parent = work / "resources" / f"bf16-{weights}"
    tinymodels.qwen2(parent)
    AutoModelForCausalLM.from_pretrained(parent, dtype=torch.float32).to(torch.bfloat16).save_pretrained(parent)
    write_base_manifest(parent)
    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(parent.resolve(), dtype=torch.float32),
                          LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], lora_dropout=0.0,
                                     task_type="CAUSAL_LM"))
    torch.manual_seed(3)
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.02)  # updates of the size of a bf16 weight's last bits
    adapter = work / "adapters" / f"bf16-{weights}"
    peft.save_pretrained(adapter)
    AutoTokenizer.from_pretrained(parent).save_pretrained(adapter)
    out = work / "models" / "tiny" / f"bf16-M1-{weights}"
    manifest = merge.merge_adapter(parent, adapter, out, card=CARD, precision={"weights": weights})
    dtype = getattr(torch, weights)
    assert manifest["dtype"] == weights and manifest["card"]["precision"] == {"weights": weights, "compute": "plain"}
    assert f"| weights dtype | {weights} |" in (out / "README.md").read_text()
    weights, lora = load_file(parent / "model.safetensors"), load_file(adapter / "adapter_model.safetensors")
    merged = load_file(out / "model.safetensors")
    key = "model.layers.0.self_attn.q_proj.weight"
    a = lora["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]
    b = lora["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"]
    expected = (weights[key].float() + (8 / 4) * (b.float() @ a.float())).to(dtype)
    assert merged[key].dtype == dtype
    assert torch.equal(merged[key], expected)
    assert not torch.equal(merged[key], weights[key])  # the updates survived


def test_merge_refuses_an_adapter_of_another_base_before_loading(work, other_base, adapter, monkeypatch):
    from transformers import AutoModelForCausalLM

    def no_heavy_work(*args, **kwargs):
        raise AssertionError("weights loaded before the adapter was checked")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", no_heavy_work)
    out = work / "models" / "tiny" / "wrong"
    with pytest.raises(ModelDirError, match=r"trained on '.*M0', not on base .*other.*'other'"):
        merge.merge_adapter(other_base, adapter["dir"], out, card=CARD)
    assert not out.exists() and not leftovers(out.parent, out.name)


def test_adapter_check_targets_and_shapes(work, base, other_base, adapter):
    broken = work / "adapters" / "broken"
    shutil.copytree(adapter["dir"], broken)
    config = files.read_json(broken / "adapter_config.json")

    files.write_json(broken / "adapter_config.json", {**config, "target_modules": ["query_key_value"]})
    with pytest.raises(ModelDirError, match=r"targets \['query_key_value'\].*does not have.*q_proj"):
        merge.check_adapter(base, broken)

    # the right module names but another model's sizes (its recorded base rewritten to pass the name check)
    files.write_json(broken / "adapter_config.json", {**config, "base_model_name_or_path": str(other_base)})
    with pytest.raises(ModelDirError, match=r"does not fit base .*other.*shape \[4, 64\].*Linear\(128"):
        merge.check_adapter(other_base, broken)

    files.write_json(broken / "adapter_config.json", {**config, "base_model_name_or_path": None})
    with pytest.raises(ModelDirError, match="trained on None"):
        merge.check_adapter(base, broken)


def test_adapter_check_accepts_manifest_name_and_relative_path(work, base, adapter, monkeypatch):
    renamed = work / "adapters" / "renamed"
    shutil.copytree(adapter["dir"], renamed)
    config = files.read_json(renamed / "adapter_config.json")
    files.write_json(renamed / "adapter_config.json", {**config, "base_model_name_or_path": "tiny"})
    assert merge.check_adapter(base, renamed)["r"] == 4
    files.write_json(renamed / "adapter_config.json", {**config, "base_model_name_or_path": "resources/M0"})
    monkeypatch.chdir(work)  # a relative path means what it meant to from_pretrained: from the working dir
    assert merge.check_adapter("resources/M0", renamed)["r"] == 4
    monkeypatch.chdir(work / "adapters")
    with pytest.raises(ModelDirError, match="trained on 'resources/M0'"):
        merge.check_adapter(base, renamed)


# ---- quantizing ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exports(work, merged):
    src, _ = merged
    return {f: (work / "models" / "tiny" / f"M1-DS-cosine-{f}", quantize.quantize(src, work / "models" / "tiny" /
                                                                                f"M1-DS-cosine-{f}", f))
            for f in QUANTIZED}


@pytest.mark.parametrize("format", QUANTIZED)
def test_quantized_exports_reload_smaller_and_close(format, exports, merged, adapter):
    from transformers import AutoModelForCausalLM

    src, _ = merged
    out, manifest = exports[format]
    assert files.read_json(out / "manifest.json") == json.loads(json.dumps(manifest))
    assert manifest["format"] == format and manifest["parent"]["dir"] == str(src)
    assert manifest["parent_weights_bytes"] == files.weights_size(src)
    assert manifest["weights_bytes"] == files.weights_size(out) < files.weights_size(src)
    assert manifest["quantized_modules"] == 2 * 7  # q, k, v, o, gate, up, down in each of 2 layers
    assert manifest["variant"] == "M1-DS-cosine" and manifest["model"] == "tiny"  # the format apart
    assert "bitsandbytes" in manifest["versions"] and (out / "tokenizer.json").is_file()
    qconfig = files.read_json(out / "config.json")["quantization_config"]
    assert qconfig.get("load_in_8bit" if format == "int8" else "load_in_4bit") is True
    if format != "int8":
        assert qconfig["bnb_4bit_quant_type"] == "nf4"
        assert qconfig["bnb_4bit_use_double_quant"] is (format == "nf4-dq")

    model = modeldir.load(out)[0]
    assert not model.training
    got = logits(model, adapter["ids"])
    reference = logits(AutoModelForCausalLM.from_pretrained(src).eval(), adapter["ids"])
    assert torch.isfinite(got).all()
    top1 = (got.argmax(-1) == reference.argmax(-1)).float().mean().item()
    relative = ((got - reference).abs().mean() / reference.abs().mean()).item()
    min_top1, max_relative = CLOSENESS[format]
    print(f"{format}: top-1 agreement {top1:.3f}, relative mean abs diff {relative:.4f}")
    assert top1 >= min_top1 and relative <= max_relative, (format, top1, relative)
    # a second forward (after the CPU kernels may have repacked the weights) gives the same answer
    assert torch.equal(logits(model, adapter["ids"]), got)
    # what evaluation reads: each continuation's log-likelihood, close to the dense model's per token
    tokenizer = modeldir.load_tokenizer(out)
    dense = scoring.loglikelihoods(modeldir.load(src)[0], tokenizer, CONTINUATIONS)
    quantized = scoring.loglikelihoods(model, tokenizer, CONTINUATIONS)
    lengths = [n for _, n in scoring.encode_requests(tokenizer, CONTINUATIONS)]
    per_token = sum(abs(q - d) for q, d in zip(quantized, dense)) / sum(lengths)
    print(f"{format}: log-likelihood difference {per_token:.4f} nats a token")
    assert per_token <= LOGLIKELIHOOD_TOLERANCE[format], (format, per_token)
    if format != "int8":  # 4-bit layers compute in the study precision's dtype (float32 by default)
        assert qconfig["bnb_4bit_compute_dtype"] == "float32" and manifest["study_precision"]["weights"] == "float32"


def test_quantize_refuses_unknown_and_already_quantized(work, merged, exports):
    src, _ = merged
    out = work / "models" / "tiny" / "bad"
    with pytest.raises(ModelDirError, match=r"unknown quantized format 'int4'.*'nf4', 'nf4-dq', 'int8'"):
        quantize.quantize(src, out, "int4")
    with pytest.raises(ModelDirError, match="already quantized"):
        quantize.quantize(exports["nf4"][0], out, "int8")
    assert not out.exists() and not leftovers(out.parent, out.name)


def test_cpu_4bit_sizes_are_checked_up_front(work):
    odd = qwen2_sized(work / "resources" / "odd", hidden=64, intermediate=100)
    with pytest.raises(ModelDirError, match=r"multiples of 64.*mlp\.gate_proj \(Linear 64 → 100\)"):
        quantize.check_cpu_4bit(odd)
    quantize.check_cpu_4bit(work / "resources" / "M0")  # the output head (vocab not a multiple of 64) is not quantized
    if devices.device() == "cpu":
        out = work / "models" / "odd-nf4"
        with pytest.raises(ModelDirError, match=r"mlp\.down_proj \(Linear 100 → 64\)"):
            quantize.quantize(odd, out, "nf4")
        assert not out.exists()


# ---- bitsandbytes only in the jobs that quantize (zephyr/model/bnb.py) -----------------------------------

#: What a job's imports are checked for: bitsandbytes, and the torch.compile machinery it imports.
HEAVY = ["peft", "bitsandbytes", "torch._inductor.compile_fx"]


def test_a_merge_job_runs_without_bitsandbytes_and_writes_the_same_weights(work, base, adapter, merged):
    """The merge job (its script, its own process) imports peft but not bitsandbytes, nor inductor, and
    writes the weights, to the byte, of the merge this test process ran with bitsandbytes imported."""
    out = work / "job" / "merged"
    imported = run_script("merge_adapter", {
        "input": {"base": str(base / "manifest.json"), "adapter": str(adapter["dir"] / "adapter_config.json")},
        "output": {"manifest": str(out / "manifest.json")}, "log": {"log": str(work / "job" / "merge.log")},
        "params": {"card": CARD, "precision": None}}, HEAVY)
    assert imported == {"peft": True, "bitsandbytes": False, "torch._inductor.compile_fx": False}
    assert "bitsandbytes" in sys.modules and sys.modules["bitsandbytes"] is not None  # here it was imported
    for name in ("model.safetensors", "config.json"):
        assert files.sha256(out / name) == files.sha256(merged[0] / name), name


def test_an_export_job_imports_bitsandbytes_and_quantizes_as_before(work, merged, exports):
    """The NF4 export job (its script, its own process) imports bitsandbytes and writes the NF4 weights,
    to the byte, of the export this test process ran."""
    out = work / "job" / "nf4"
    imported = run_script("export_quantized", {
        "input": {"model": str(merged[0] / "manifest.json")}, "output": {"manifest": str(out / "manifest.json")},
        "log": {"log": str(work / "job" / "export.log")}, "wildcards": {"format": "nf4"},
        "params": {"precision": None}}, HEAVY)
    assert imported["bitsandbytes"] and imported["torch._inductor.compile_fx"]
    assert files.sha256(out / "model.safetensors") == files.sha256(exports["nf4"][0] / "model.safetensors")
    assert files.read_json(out / "config.json")["quantization_config"]["bnb_4bit_quant_type"] == "nf4"


def test_what_needs_bitsandbytes(merged, exports):
    """A quantized format, a bitsandbytes folder or optimizer needs it; dense folders and formats do not."""
    assert bnb.needed(formats=["nf4"]) and bnb.needed(formats=[None, "int8"]) and bnb.needed(optim="paged_adamw_8bit")
    assert bnb.needed(model_dirs=[merged[0], exports["nf4-dq"][0]])
    assert not bnb.needed() and not bnb.needed(formats=[None, DENSE, AS_TRAINED], model_dirs=[merged[0]])
    assert not bnb.needed(optim="adamw_torch")


def test_a_job_started_without_bitsandbytes_refuses_what_needs_it(work, merged, exports, monkeypatch):
    """In a process started without bitsandbytes, quantizing or loading a bitsandbytes folder fails before
    any weights are read, naming what needs it; a dense folder loads."""
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # what bnb.for_job(False) leaves
    out = work / "models" / "tiny" / "no-bnb"
    with pytest.raises(bnb.BitsandbytesError, match="the nf4 format needs bitsandbytes, but this process"):
        quantize.quantize(merged[0], out, "nf4")
    assert not out.exists() and not leftovers(out.parent, out.name)
    with pytest.raises(bnb.BitsandbytesError, match=r"M1-DS-cosine-int8 \(bitsandbytes weights\) needs bitsandbytes"):
        modeldir.load(exports["int8"][0])
    with pytest.raises(bnb.BitsandbytesError, match="this job needs bitsandbytes"):
        bnb.for_job(True)
    assert modeldir.load(merged[0])[0] is not None


# ---- helpers ---------------------------------------------------------------------------------------


def test_staged_dir_replaces_whole_or_not_at_all(tmp_path):
    out = tmp_path / "results" / "model"
    with pytest.raises(RuntimeError):
        with files.staged_dir(out) as staged:
            (staged / "half.bin").write_bytes(b"x")
            raise RuntimeError("killed halfway")
    assert not out.exists() and not leftovers(out.parent, "model")

    with files.staged_dir(out) as staged:
        (staged / "a.txt").write_text("first")
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]
    assert stat.S_IMODE(out.stat().st_mode) != 0o700  # follows the umask, not mkdtemp's 0700

    with pytest.raises(KeyboardInterrupt):
        with files.staged_dir(out) as staged:
            (staged / "b.txt").write_text("second")
            raise KeyboardInterrupt
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]  # the earlier complete folder stays

    with files.staged_dir(out) as staged:
        (staged / "b.txt").write_text("second")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]  # replaced whole, not merged
    assert not leftovers(out.parent, "model")


def test_device_helpers(tmp_path, monkeypatch):
    for visible, expected in ((True, "cuda"), (False, "cpu")):
        monkeypatch.setattr(torch.cuda, "is_available", lambda visible=visible: visible)
        assert devices.device() == expected
    # the weight files' bytes, and only theirs: not other files, not a folder named like one, not subfolders
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"w" * 1000)
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"w" * 234)
    (tmp_path / "tokenizer.json").write_bytes(b"t" * 5000)
    (tmp_path / "odd.safetensors").mkdir()
    (tmp_path / "odd.safetensors" / "inner.safetensors").write_bytes(b"x" * 77)
    assert files.weights_size(tmp_path) == 1000 + 234
    assert files.weights_size(tmp_path / "odd.safetensors") == 77
    assert files.weights_size(tmp_path / "missing") == 0
