"""A model without a chat template or ChatML markers (BLOOM) gets LlamaFactory's `default` template:
SFT trains the EOS after each answer, and generation stops there."""

import json

import pytest
import torch

from zephyr.evaluation import scoring
from zephyr.model import fetch, modeldir, prompts, training

TEMPLATE = "default"


@pytest.fixture(scope="module")
def plain_bloom(tmp_path_factory):
    """A tiny pretrained-style BLOOM folder, fetched as a local source the way bigscience/bloom-560m is
    fetched from the hub: its tokenizer has an EOS (`</s>`), no chat template and no ChatML markers
    (a pretrained tokenizer gets no tokens added)."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
    from tokenizers import models as bpe
    from transformers import BloomConfig, BloomForCausalLM, PreTrainedTokenizerFast

    texts = [f"Human: What is {a} plus {a % 5}? Assistant: The answer is {a + a % 5}." for a in range(60)]
    backend = Tokenizer(bpe.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=320, special_tokens=["</s>", "<pad>"],
                                                           initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    folder = tmp_path_factory.mktemp("bloom_hub")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>", pad_token="<pad>")
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    BloomForCausalLM(BloomConfig(vocab_size=320, hidden_size=64, n_layer=2, n_head=4, eos_token_id=0,
                                 pad_token_id=1)).save_pretrained(folder)
    out = tmp_path_factory.mktemp("bloom") / "M0"
    fetch.fetch_model("bloom", {"kind": "local", "path": str(folder)}, out, chat_template=TEMPLATE)
    return out


def records(n, offset=0):
    return [{"instruction": f"What is {a} plus {a % 5}?", "input": "", "output": f"The answer is {a + a % 5}."}
            for a in range(offset, offset + n)]


def test_the_default_template_ends_every_turn_with_eos(plain_bloom):
    tokenizer = modeldir.load_tokenizer(plain_bloom)
    assert "<|im_start|>" not in tokenizer.get_vocab() and tokenizer.eos_token == "</s>"
    assert modeldir.read_manifest(plain_bloom)["chat_template_source"] == "builtin:default"
    record = {**records(1)[0], "system": "Be brief."}
    prompt = tokenizer.apply_chat_template(prompts.messages(record), add_generation_prompt=True, tokenize=False)
    example = prompts.examples("sft", [record])[0]
    whole = tokenizer.apply_chat_template(example["prompt"] + example["completion"], tokenize=False)
    # LlamaFactory 0.9.5's `default`: "System: {s}</s>\n", "Human: {q}</s>\nAssistant:", "{a}</s>\n"
    assert prompt == "System: Be brief.</s>\nHuman: What is 0 plus 0?</s>\nAssistant:"
    assert whole == prompt + "The answer is 0.</s>\n"
    completion = tokenizer(whole[len(prompt):], add_special_tokens=False)["input_ids"]
    assert tokenizer.eos_token_id in completion  # the stop is part of what SFT trains


def test_sft_learns_the_stop_and_generation_stops_there(tmp_path, plain_bloom):
    train = tmp_path / "train.json"
    train.write_text(json.dumps(records(48)))
    hyper = {"trainer": "sft", "learning_rate": 2e-2, "lr_scheduler_type": "constant", "per_device_train_batch_size": 8,
             "num_train_epochs": 8, "max_length": 64, "logging_steps": 6, "save_steps": 6 * 10**5,
             "lora": {"r": 8, "alpha": 16, "dropout": 0.0}}
    training.train("bloom/sft", hyper, plain_bloom, train, None, tmp_path / "adapter", tmp_path / "ckpt",
                   lora_targets=["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"])
    from peft import PeftModel

    model, tokenizer = modeldir.load(plain_bloom, "cpu")
    model = PeftModel.from_pretrained(model, tmp_path / "adapter").eval()
    torch.manual_seed(0)
    questions = records(4, offset=100)
    stats = {}
    answers = scoring.generate(model, tokenizer, questions, max_new_tokens=40, batch_size=4, stats=stats)
    assert all(a.startswith("The answer is") for a in answers), answers
    # every answer, each on its own, ended with the EOS well before the 40-token budget (counts include it)
    assert stats["stopped"] == [True] * 4 and max(stats["answer_tokens"]) < 20, (stats, answers)
    assert stats["new_tokens"] == sum(stats["answer_tokens"])
