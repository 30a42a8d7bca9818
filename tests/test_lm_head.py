"""The plain LM head equals TRL's fused one, and trained through the patch it scores only labelled positions."""

import pytest
import torch

import tinymodels
from test_speed import COMMON, FAST, uneven
from test_training import sft_records, write
from zephyr.model import lm_head, training


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tinymodels.qwen2(tmp_path_factory.mktemp("base") / "M0")


@pytest.mark.parametrize("softcap, scale, temperature", [(None, 1.0, 1.0), (30.0, 0.5, 0.7)])
def test_plain_head_equals_trl_s_fused_head(softcap, scale, temperature):
    from trl.kernels import ChunkedLogProbFunction

    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(300, 32, generator=gen, dtype=torch.float64).float()
    bias = torch.randn(300, generator=gen)
    labels = torch.randint(0, 300, (40,), generator=gen)
    hidden = torch.randn(40, 32, generator=gen)
    outputs = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")
    got = {}
    for name, fn in (("fused", ChunkedLogProbFunction), ("plain", lm_head.PlainLogProb)):
        x, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        result = fn.apply(x, w, bias, labels, temperature, 128, softcap, scale, outputs)
        (result[0].sum() + 0.3 * result[1].sum()).backward()
        got[name] = [*result, x.grad, w.grad]
    for fused, plain in zip(got["fused"], got["plain"]):
        if fused.dtype == torch.bool:
            assert torch.equal(fused, plain)
        else:
            torch.testing.assert_close(plain, fused, rtol=1e-4, atol=1e-5)


def test_the_plain_head_scores_only_labelled_positions(tmp_path, base, monkeypatch):
    """Prompt and padding positions have no label: the plain head leaves them out (their log-probs are
    zeroed afterwards either way), so it scores fewer rows than the batch has positions."""
    scored, positions = [], []
    apply = lm_head.PlainLogProb.apply

    def spy(hidden, weight, bias, targets, *args):
        scored.append(hidden.shape[0])
        return apply(hidden, weight, bias, targets, *args)

    from trl.trainer import sft_trainer

    collate = sft_trainer.DataCollatorForLanguageModeling.torch_call

    def spy_collate(self, examples):
        batch = collate(self, examples)
        rows, width = batch["input_ids"].shape
        positions.append(rows * (width - 1))  # every position that predicts a next token
        return batch

    monkeypatch.setattr(lm_head.PlainLogProb, "apply", staticmethod(spy))
    monkeypatch.setattr(sft_trainer.DataCollatorForLanguageModeling, "torch_call", spy_collate)
    train = write(tmp_path / "train.json", uneven(sft_records(8)))
    hyper = {"trainer": "sft", **COMMON, "max_steps": 2, "speed": {**FAST, "padding_free": False}}
    training.train("t/compact", hyper, base, train, None, tmp_path / "out", tmp_path / "ckpt")
    assert len(scored) == len(positions) == 2
    assert all(0 < rows < total for rows, total in zip(scored, positions))
