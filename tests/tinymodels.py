"""Tiny offline models for tests: a byte-level BPE tokenizer trained on a few sentences, with a ChatML
template, and a randomly initialised Qwen2 (sizes multiples of 64, as bitsandbytes' CPU kernels need)."""

from pathlib import Path

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tokenizer(texts=None, vocab_size=384):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = texts or [f"What is {a} plus {b}? The answer is {a + b}. Correct wrong yes no"
                      for a in range(20) for b in range(5)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHATML
    return fast


def qwen2(path: Path, seed: int = 0, layers: int = 2) -> Path:
    """Save a tiny Qwen2 chat model with its tokenizer at `path`."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = tokenizer()
    config = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=4, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(seed)
    Qwen2ForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def shake(path: Path, scale: float = 0.15, seed: int = 0) -> Path:
    """Add scaled Gaussian noise to every weight of the model saved at `path`: a fresh init only repeats
    its last token, which tests nothing."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    model.save_pretrained(path)
    return path


def manual_logprob(model, tokens, n):
    """log P(tokens[-n:] | tokens[:-n]) from one unpadded forward pass."""
    import torch

    with torch.no_grad():
        logits = model(torch.tensor([tokens[:-1]])).logits[0].log_softmax(-1)
    return sum(logits[i - 1, tokens[i]].item() for i in range(len(tokens) - n, len(tokens)))
