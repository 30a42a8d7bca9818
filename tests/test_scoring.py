"""zephyr.evaluation.scoring, the engine under every evaluation task, on a tiny offline Qwen2: the
harness's tokenization, scores equal to a forward pass by hand, and batching, shared prefixes and left
padding change nothing."""

import pytest
import torch

import tinymodels
from zephyr.evaluation import scoring
from zephyr.model import prompts

pytestmark = pytest.mark.usefixtures("one_thread")

QUESTIONS = ["What is 3 plus 4?", "What is 11 plus 2? Correct", "yes", "What is 19 plus 4? The answer is wrong no",
             "What is 0 plus 1?"]
REQUESTS = [
    ("What is 3 plus 4?", " The answer is 7."),
    ("What is 3 plus 4? ", "The answer"),  # trailing space moves to the continuation
    ("What is 3 pl", "us 4"),  # a BPE merge across the boundary
    ("", "hello"),  # empty context: the prefix token
    ("What is 12 plus 3? The answer is", " 15. Correct"),
    ("no", " yes"),
    ("What is 7 plus 0? The answer is 7. What is 8 plus 1? The answer is", " 9."),
]


def test_encode_requests_as_the_harness(lm):
    _, tok = lm

    def enc(s):
        return tok.encode(s, add_special_tokens=False)

    (whole, n), (whole2, n2), (whole3, n3) = scoring.encode_requests(tok, REQUESTS[1:4])
    assert whole == enc("What is 3 plus 4? The answer") and n == len(whole) - len(enc("What is 3 plus 4?"))
    # a merge across the boundary ("pl" + "us" -> " plus"): the harness reads
    # context_enc + whole_enc[len(context_enc):]
    ctx, whole = enc("What is 3 pl"), enc("What is 3 plus 4")
    assert whole[:len(ctx)] != ctx
    assert whole2 == ctx + whole[len(ctx):] and n2 == len(whole) - len(ctx)
    assert whole3 == [tok.eos_token_id] + enc("hello") and n3 == len(enc("hello"))  # no BOS in this tokenizer
    # an empty context whose continuation starts with the prefix token gets no second one (TemplateLM.loglikelihood)
    tokens = [tok.eos_token_id] + enc("hello")
    assert scoring.encode_requests(tok, [("", tok.eos_token + "hello")]) == [(tokens, len(tokens) - 1)]


def test_loglikelihood_equals_a_manual_forward(lm):
    model, tok = lm
    got = scoring.loglikelihoods(model, tok, REQUESTS, batch_size=3)
    for value, (tokens, n) in zip(got, scoring.encode_requests(tok, REQUESTS)):
        assert value == pytest.approx(tinymodels.manual_logprob(model, tokens, n), abs=1e-4)
    ctx = tok.encode("What is 3 plus 4?", add_special_tokens=False)
    whole = tok.encode("What is 3 plus 4? The answer is 7.", add_special_tokens=False)
    assert whole[:len(ctx)] == ctx
    assert got[0] == pytest.approx(tinymodels.manual_logprob(model, whole, len(whole) - len(ctx)), abs=1e-4)


def test_batching_does_not_change_loglikelihoods(lm):
    model, tok = lm
    one = scoring.loglikelihoods(model, tok, REQUESTS, batch_size=1)
    four = scoring.loglikelihoods(model, tok, REQUESTS, batch_size=4)
    assert four == pytest.approx(one, abs=1e-5)


SHARED = [  # contexts repeated with continuations of different lengths, one a single token
    ("What is 3 plus 4? The answer", c) for c in (" is 7.", " is 8. wrong", " no", " yes yes yes Correct")
] + [("Correct", c) for c in (" yes", " no no", "!")] + [("What is 19 plus 0?", " 19")] + [
    ("yes no", c) for c in (" What is 1 plus 1? The answer is 2.", " no", " yes", " wrong", " plus")]


def test_shared_prefix_scoring_equals_plain_scoring(lm):
    model, tok = lm
    sequences = scoring.encode_requests(tok, SHARED)
    assert any(n == 1 for _, n in sequences)
    plain = scoring.score_sequences(model, sequences, tok.pad_token_id, 1, share_prefix=False)
    for (tokens, n), value in zip(sequences, plain):
        assert value == pytest.approx(tinymodels.manual_logprob(model, tokens, n), abs=1e-4)
    for batch_size in (1, 3, 8, 32):
        # sums over up to ~30 tokens: 1e-5 absolute or 1e-6 relative, whichever is larger
        shared = scoring.score_sequences(model, sequences, tok.pad_token_id, batch_size, share_prefix=True)
        assert shared == pytest.approx(plain, rel=1e-6, abs=1e-5)
    assert scoring.loglikelihoods(model, tok, SHARED, 4) == pytest.approx(plain, rel=1e-6, abs=1e-5)


@pytest.mark.parametrize("share_prefix", [False, True])
def test_score_sequences_without_logits_to_keep(lm, monkeypatch, share_prefix):
    model, tok = lm
    sequences = scoring.encode_requests(tok, REQUESTS + SHARED)
    kept = scoring.score_sequences(model, sequences, tok.pad_token_id, 4, share_prefix=share_prefix)
    monkeypatch.setattr(scoring, "_accepts_logits_to_keep", lambda model: False)
    assert scoring.score_sequences(model, sequences, tok.pad_token_id, 4, share_prefix=share_prefix) == (
        pytest.approx(kept, rel=1e-6, abs=1e-5))


def test_generation_is_deterministic_and_left_padding_changes_nothing(lm):
    model, tok = lm
    one = scoring.generate(model, tok, QUESTIONS, max_new_tokens=12, batch_size=1)
    batched = scoring.generate(model, tok, QUESTIONS, max_new_tokens=12, batch_size=4)
    again = scoring.generate(model, tok, QUESTIONS, max_new_tokens=12, batch_size=4)
    assert one == batched == again
    assert all(one) and len(set(one)) > 1
    # only the new tokens: the output is what greedy decoding appends to the chat prompt
    ids = prompts.prompt_ids(tok, [{"role": "user", "content": QUESTIONS[0]}])
    assert tok.decode(ids) == "<|im_start|>user\nWhat is 3 plus 4?<|im_end|>\n<|im_start|>assistant\n"
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False)
    assert one[0] == tok.decode(out[0, len(ids):], skip_special_tokens=True).strip()


def test_windows_cut_the_tokens_in_order_the_last_shorter():
    assert scoring.windows(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert scoring.windows(list(range(6)), 2) == [[0, 1], [2, 3], [4, 5]]
    assert scoring.windows([], 4) == []
    with pytest.raises(ValueError, match="at least 2 tokens"):
        scoring.windows([1, 2, 3], 1)  # a 1-token window has nothing to predict


def test_left_padding_ends_every_row_at_the_last_column():
    ids, mask, positions = scoring._left_padded([[5, 6, 7], [8], []], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8], [0, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 0]]
    assert positions.tolist() == [[0, 1, 2], [0, 0, 0], [0, 0, 0]]  # each row's tokens count from 0


class Tok:
    def __init__(self, pad=None, eos=None, bos=None):
        self.pad_token_id, self.eos_token_id, self.bos_token_id = pad, eos, bos


def test_pad_and_prefix_token_fall_back_to_eos():
    assert scoring.pad_token_id(Tok(pad=3, eos=2)) == 3
    assert scoring.pad_token_id(Tok(eos=2)) == 2
    assert scoring.prefix_token_id(Tok(bos=1, eos=2)) == 1  # the harness's prefix: BOS, else EOS
    assert scoring.prefix_token_id(Tok(eos=2)) == 2


def test_context_length_is_the_model_s_positions(lm):
    model, _ = lm
    assert scoring.context_length(model) == model.config.max_position_embeddings
