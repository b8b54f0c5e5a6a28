"""DPO's and SFT's tensor functions against small cases worked out by hand."""

import math

import pytest
import torch

from trainer.rlhf.dpo_math import dpo_loss, sequence_logps, sft_loss, weighted_mean


def t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_sequence_logps_sum_the_answer_tokens_only():
    logits = torch.tensor([[[0.0, math.log(3.0)], [5.0, 5.0], [9.0, 0.0]]])  # [1, 3, 2]
    got = sequence_logps(logits, torch.tensor([[1, 0, 1]]), t([1.0, 1.0, 0.0]))
    assert torch.allclose(got, torch.log(t(0.75 * 0.5)))


def test_dpo_loss_is_minus_log_sigmoid_of_the_reward_margin():
    # implicit rewards: 0.5 · (−1 − (−2)) = 0.5 and 0.5 · (−3 − (−2)) = −0.5; margin 1
    loss, chosen, rejected = dpo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.0), beta=0.5)
    assert torch.allclose(chosen, t(0.5)) and torch.allclose(rejected, t(-0.5))
    assert loss.item() == pytest.approx(math.log1p(math.exp(-1.0)))


def test_dpo_loss_with_label_smoothing_mixes_in_the_flipped_label():
    loss, _, _ = dpo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.0), beta=0.5, label_smoothing=0.1)
    expected = 0.9 * math.log1p(math.exp(-1.0)) + 0.1 * math.log1p(math.exp(1.0))
    assert loss.item() == pytest.approx(expected)


def test_dpo_loss_at_the_reference_is_log_two_per_pair():
    same = t(-4.0, -7.0)
    loss, chosen, rejected = dpo_loss(same, same - 1.0, same, same - 1.0, beta=0.1,
                                      label_smoothing=0.2)
    assert torch.allclose(loss, t(math.log(2.0), math.log(2.0)))
    assert torch.equal(chosen, t(0.0, 0.0)) and torch.equal(rejected, t(0.0, 0.0))


def test_dpo_gradient_raises_the_chosen_and_lowers_the_rejected():
    chosen, rejected = t(-2.0).requires_grad_(), t(-2.0).requires_grad_()
    loss, chosen_reward, _ = dpo_loss(chosen, rejected, t(-2.0), t(-2.0), beta=0.1)
    loss.sum().backward()
    # d/dx −log σ(β(x − y)) at x = y: −β/2
    assert chosen.grad.item() == pytest.approx(-0.05)
    assert rejected.grad.item() == pytest.approx(0.05)
    assert not chosen_reward.requires_grad  # for logging only


def test_sft_loss_is_the_weighted_mean_nll_over_answer_tokens():
    logprobs = torch.log(t([0.5, 0.25, 0.01], [0.5, 0.01, 0.01]))
    mask = t([1, 1, 0], [1, 0, 0])
    # unweighted: (log 2 + log 4 + log 2) / 3 tokens
    assert sft_loss(logprobs, mask).item() == pytest.approx(4 / 3 * math.log(2.0))
    # weights 1 and 3: (log 2 + log 4 + 3 · log 2) / (2 + 3)
    assert sft_loss(logprobs, mask, t(1.0, 3.0)).item() == pytest.approx(1.2 * math.log(2.0))


def test_weighted_mean():
    assert weighted_mean(t(1.0, 4.0)).item() == pytest.approx(2.5)
    assert weighted_mean(t(1.0, 4.0), t(3.0, 1.0)).item() == pytest.approx(1.75)
