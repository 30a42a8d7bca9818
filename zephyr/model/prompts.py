"""Chat prompts, one home for training and evaluation: how a record becomes chat messages, the
built-in chat templates that render them, and the token ids of a prompt as TRL tokenizes it.

A model is evaluated on the prompts it was tuned on: SFT and DPO examples and the evaluation tasks
all build their messages here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

#: Letters of multiple-choice options in the MCQA prompt.

CHAT_TEMPLATES = {
    # ChatML with no default system message.
    "chatml": (
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    ),
    # Qwen1.5-Chat's own template: ChatML with a default system message.
    "qwen": (
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\nYou are a helpful assistant<|im_end|>\n' }}{% endif %}"
        "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    ),
    # LlamaFactory's `default` template, what the study's framework gives a model without a chat template
    # (llamafactory/data/template.py, 0.9.5): plain-text roles, and every turn ends with the tokenizer's
    # EOS, so SFT trains the answer's stop and generation stops there. No marker tokens needed (BLOOM).
    "default": (
        "{% for message in messages %}"
        "{% if message['role'] == 'system' %}{{ 'System: ' + message['content'] + eos_token + '\n' }}"
        "{% elif message['role'] == 'user' %}{{ 'Human: ' + message['content'] + eos_token + '\nAssistant:' }}"
        "{% else %}{{ message['content'] + eos_token + '\n' }}{% endif %}{% endfor %}"
    ),
    # Zephyr's (HuggingFaceH4/zephyr-7b-beta) template.
    "zephyr": (
        "{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
    ),
}
# Markers a built-in template needs as single tokens; added to a scratch model's tokenizer when missing.
TEMPLATE_TOKENS = {"chatml": ["<|im_start|>", "<|im_end|>"], "qwen": ["<|im_start|>", "<|im_end|>"], "default": [],
                   "zephyr": []}


#: Between an Alpaca record's instruction and its input: LlamaFactory's alpaca converter's "\n" (v0.5.3 to
#: v0.9.5, data/aligner.py then data/converter.py; docs/llamafactory-defaults.md): §4, "Our training
#: pipeline relies on LlamaFactory".
INPUT_JOINER = "\n"


def messages(record: dict) -> list[dict]:
    """The chat prompt of a record: system, earlier turns, then the instruction (and its input)."""
    turns = [{"role": "system", "content": record["system"]}] if record.get("system") else []
    for user, assistant in record.get("history") or []:
        turns += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    content = record["instruction"] + (f"{INPUT_JOINER}{record['input']}" if record.get("input") else "")
    return turns + [{"role": "user", "content": content}]


def examples(trainer: str, records: Iterable[dict]) -> list[dict]:
    """Conversational examples: TRL masks the prompt from the SFT loss and scores DPO answers alone."""
    if trainer == "sft":
        return [{"prompt": messages(r), "completion": [{"role": "assistant", "content": r["output"]}]} for r in records]
    return [
        {
            "prompt": messages(r),
            "chosen": [{"role": "assistant", "content": r["chosen"]}],
            "rejected": [{"role": "assistant", "content": r["rejected"]}],
        }
        for r in records
    ]


def chat_messages(item: str | dict) -> list[dict]:
    """The chat prompt of a question string, a GSM8K record ({question}) or an instruction record."""
    if isinstance(item, str):
        return [{"role": "user", "content": item}]
    if "instruction" in item:
        return messages(item)
    if "question" in item:
        return messages({"instruction": item["question"]})
    raise ValueError(f"cannot build a prompt from a record with fields {sorted(item)}")


def mcqa_prompt(record: dict) -> str:
    """lm-evaluation-harness' ARC context, 'Question: ...\nAnswer:': each choice's own text is then scored
    as the continuation ' ' + choice (its `arc_easy` task: doc_to_text, doc_to_choice choices.text)."""
    return f"Question: {record['question']}\nAnswer:"


def prompt_ids(tokenizer, chat: list[dict]) -> list[int]:
    """Token ids of a chat prompt with the generation prompt, tokenized as TRL tokenizes prompts."""
    return list(tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True,
                                              return_dict=True)["input_ids"])


def _common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def preference_sequences(tokenizer, records: Sequence[dict], max_length: int | None = None
                         ) -> tuple[list[tuple[list[int], int]], list[tuple[list[int], int]]]:
    """(tokens, response length) of the chosen and of the rejected side of each preference record.

    trl 1.16 trainer/dpo_trainer.py, DPOTrainer._prepare_dataset.tokenize_fn (conversational):
    prompt_ids = apply_chat_template(prompt, add_generation_prompt=True); prompt_chosen_ids =
    apply_chat_template(prompt + chosen) (likewise rejected); prompt_len = the shorter common prefix
    of prompt_ids with either; chosen_ids = prompt_chosen_ids[prompt_len:]. The prompt is
    `prompts.messages(record)` and each side one assistant turn, as `prompts.examples` builds them.
    `max_length` truncates prompt + response to its first tokens, as DataCollatorForPreference does
    (TRL's default truncation keeps the start).
    """
    chosen, rejected = [], []
    for r in records:
        prompt = messages(r)
        p_ids = prompt_ids(tokenizer, prompt)
        sides = []
        for text in (r["chosen"], r["rejected"]):
            full = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": text}], tokenize=True,
                                                 return_dict=True)["input_ids"]
            sides.append(list(full))
        prompt_len = min(_common_prefix_length(p_ids, s) for s in sides)
        for full, out in zip(sides, (chosen, rejected)):
            tokens = p_ids[:prompt_len] + full[prompt_len:]
            if max_length is not None:
                tokens = tokens[:max_length]
            out.append((tokens, max(0, len(tokens) - prompt_len)))
    return chosen, rejected


def pairs_cut_equal(tokenizer, records: Sequence[dict], max_length: int | None) -> tuple[int, int]:
    """How many pairs `max_length` cuts before their two sides differ (DPO sees two identical sequences:
    no gradient, a tied reward), and the length the longest pair needs."""
    _, equal, need = pairs_cut(tokenizer, records, max_length)
    return equal, need


def pairs_cut(tokenizer, records: Sequence[dict], max_length: int | None) -> tuple[int, int, int]:
    """How many pairs `max_length` cuts at all (either answer loses its end and its EOS), how many of those
    before their two sides differ (`pairs_cut_equal`), and the length the longest pair needs."""
    full_c, full_r = preference_sequences(tokenizer, records)
    need = max((len(t) for t, _ in full_c + full_r), default=0)
    if max_length is None or need <= max_length:
        return 0, 0, need
    cut = sum(max(len(a[0]), len(b[0])) > max_length for a, b in zip(full_c, full_r))
    equal = sum(a[0] != b[0] and a[0][:max_length] == b[0][:max_length] for a, b in zip(full_c, full_r))
    return cut, equal, need
