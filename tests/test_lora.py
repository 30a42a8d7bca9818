"""LoRA: the targets of each architecture, checked against the model's linear modules, and the shape a
set gets where it names none."""

import pytest
from transformers import BloomConfig, BloomForCausalLM, GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

from test_models import SIZES
from zephyr.model import lora


def test_lora_targets_are_the_attention_projections():
    bloom = BloomForCausalLM(BloomConfig(vocab_size=128, **SIZES["bloom"]))
    qwen2 = Qwen2ForCausalLM(Qwen2Config(vocab_size=128, num_key_value_heads=4, **SIZES["qwen2"]))
    assert lora.targets(bloom) == ["query_key_value", "dense"]
    assert lora.targets(qwen2) == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert lora.targets(qwen2, ["q_proj", "mlp.down_proj"]) == ["q_proj", "mlp.down_proj"]
    with pytest.raises(lora.LoraError, match=r"\['query_key_value'\] name no linear module.*'q_proj'"):
        lora.targets(qwen2, ["q_proj", "query_key_value"])


def test_an_unknown_architecture_needs_targets_and_lists_its_linear_modules():
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=128, n_embd=64, n_layer=2, n_head=4))
    with pytest.raises(lora.LoraError, match=r"model type 'gpt2'.*\['c_attn', 'c_fc', 'c_proj', 'lm_head'\]"):
        lora.targets(gpt2)
    assert lora.targets(gpt2, ["c_attn"]) == ["c_attn"]


def test_a_config_s_sets_get_the_defaults_they_lack_with_their_own_keys_in_place():
    """A set is a param of its jobs: the keys it names keep their order, the defaults follow."""
    sets = {"given": {"lora": {"alpha": 32, "r": 4}}, "none": {"lora": {}}}
    lora.complete(sets)
    assert list(sets["given"]["lora"].items()) == [("alpha", 32), ("r", 4), ("dropout", 0.05)]
    assert sets["none"]["lora"] == lora.DEFAULTS
    assert lora.shape({"trainer": "sft"}) == lora.DEFAULTS
