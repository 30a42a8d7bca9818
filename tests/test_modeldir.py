"""zephyr.model.modeldir: what a model folder is, its manifest, which files say which weights it holds,
and loading it (dense or quantized)."""

import hashlib
import json
import math

import pytest
import torch

import tinymodels
from test_scoring import REQUESTS
from zephyr.evaluation import scoring
from zephyr.model import modeldir
from zephyr.model.modeldir import ModelDirError


@pytest.fixture
def folder(tmp_path):
    return tinymodels.qwen2(tmp_path / "m")


def test_a_folder_without_config_is_not_a_model_folder(tmp_path, folder):
    assert modeldir.check(folder) == folder
    with pytest.raises(ModelDirError, match="no config.json; not a model folder"):
        modeldir.check(tmp_path)


def test_quantization_of_reads_the_config(folder):
    assert modeldir.quantization_of(folder) is None
    config = json.loads((folder / "config.json").read_text())
    nf4 = {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}
    (folder / "config.json").write_text(json.dumps({**config, "quantization_config": nf4}))
    assert modeldir.quantization_of(folder) == nf4


def test_load_manifest_of_a_folder_without_one_is_an_error(tmp_path):
    with pytest.raises(ModelDirError, match="no manifest.json"):
        modeldir.read_manifest(tmp_path)
    assert modeldir.read_manifest(tmp_path, required=False) == {}


def test_write_manifest_records_each_file_s_checksum_and_size(folder):
    names = sorted(p.name for p in folder.iterdir())
    manifest = modeldir.write_manifest(folder, {"kind": "merged"})
    assert modeldir.read_manifest(folder) == manifest
    recorded = manifest["files"]
    assert sorted(recorded) == names
    for name in names:
        data = (folder / name).read_bytes()
        assert recorded[name] == hashlib.sha256(data).hexdigest()
        assert manifest["sizes"][name] == len(data)


def test_identity_files_are_the_manifest_else_config_and_weights(folder):
    (folder / "model-2.safetensors").write_bytes(b"x")
    assert modeldir.identity_files(folder) == [folder / "config.json", folder / "model-2.safetensors",
                                               folder / "model.safetensors"]
    modeldir.write_manifest(folder, {})
    assert modeldir.identity_files(folder) == [folder / "manifest.json"]


def test_provenance_names_the_parent_and_its_checksums(folder):
    manifest = modeldir.write_manifest(folder, {"model": "tiny", "source": {"kind": "scratch"}})
    got = modeldir.provenance(folder, manifest)
    assert got["variant"] == "M0" and got["kind"] == "base" and got["model"] == "tiny"
    assert got["manifest_sha256"] == hashlib.sha256((folder / "manifest.json").read_bytes()).hexdigest()
    assert got["weights_sha256"] == {"model.safetensors": hashlib.sha256(
        (folder / "model.safetensors").read_bytes()).hexdigest()}


def test_a_tokenizer_without_pad_gets_its_eos(folder):
    tokenizer = modeldir.load_tokenizer(folder)
    assert modeldir.ensure_pad_token(tokenizer) == "tokenizer"  # load_tokenizer already gave it one
    tokenizer.pad_token = None
    assert modeldir.ensure_pad_token(tokenizer) == "eos" and tokenizer.pad_token == tokenizer.eos_token
    tokenizer.pad_token = tokenizer.eos_token = None
    with pytest.raises(ModelDirError, match="neither a pad nor an eos token"):
        modeldir.ensure_pad_token(tokenizer)
    assert modeldir.has_tokenizer(folder)
    assert not modeldir.has_tokenizer(folder / "nowhere")


def test_load_model_reads_a_quantized_folder(lively_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    quantized = tmp_path / "nf4"
    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=torch.float32)
    nf4 = AutoModelForCausalLM.from_pretrained(lively_dir, quantization_config=config, device_map={"": "cpu"})
    nf4.save_pretrained(quantized)  # saved before any forward pass (STACK-NOTES)
    AutoTokenizer.from_pretrained(lively_dir).save_pretrained(quantized)
    model, tok = modeldir.load(quantized, "cpu")
    assert getattr(model, "is_loaded_in_4bit", False)
    got = scoring.loglikelihoods(model, tok, REQUESTS[:3], batch_size=2)
    assert got == pytest.approx(scoring.loglikelihoods(model, tok, REQUESTS[:3], batch_size=1), abs=1e-4)
    assert all(math.isfinite(v) for v in got)
