"""PPO's tensor functions against small cases worked out by hand."""

import math

import pytest
import torch

from trainer.rlhf.ppo_math import (
    KLController,
    clipped_policy_loss,
    clipped_value_loss,
    entropy_from_logits,
    gae,
    kl_k1,
    kl_k3,
    leave_one_out_advantages,
    logprobs_from_logits,
    masked_mean,
    token_rewards,
    whiten,
)


def t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_logprobs_pick_the_labels_log_softmax():
    logits = torch.tensor([[[0.0, math.log(3.0)], [5.0, 5.0]]])  # [1, 2, 2]
    got = logprobs_from_logits(logits, torch.tensor([[1, 0]]))
    assert torch.allclose(got, torch.log(t([0.75, 0.5])))


def test_entropy_of_uniform_and_of_certain():
    logits = torch.tensor([[[1.0, 1.0, 1.0, 1.0], [0.0, -1e4, -1e4, -1e4]]])
    assert torch.allclose(entropy_from_logits(logits), t([math.log(4.0), 0.0]), atol=1e-6)


def test_kl_estimators():
    logp, ref = torch.log(t([0.5, 0.3])), torch.log(t([0.25, 0.3]))
    assert torch.allclose(kl_k1(logp, ref), t([math.log(2.0), 0.0]))
    # k3 = (r - 1) - log r with r = ref / p = 0.5
    assert torch.allclose(kl_k3(logp, ref), t([-0.5 + math.log(2.0), 0.0]), atol=1e-6)
    assert (kl_k3(ref, logp) >= 0).all()


def test_masked_mean_and_whiten_ignore_padding():
    values, mask = t([1.0, 2.0, 3.0, 100.0]), t([1.0, 1.0, 1.0, 0.0])
    assert masked_mean(values, mask).item() == pytest.approx(2.0)
    # mean 2, unbiased variance (1 + 0 + 1) / 2 = 1
    assert torch.allclose(whiten(values, mask), t([-1.0, 0.0, 1.0, 0.0]), atol=1e-6)
    assert torch.allclose(whiten(values, mask, shift_mean=False), t([1.0, 2.0, 3.0, 0.0]),
                          atol=1e-6)


def test_token_rewards_put_the_score_on_the_last_real_token():
    kl = t([0.1, 0.2, 0.3], [0.5, 0.5, 0.5])
    mask = t([1, 1, 1], [1, 0, 0])
    got = token_rewards(t(1.0, 2.0), kl, mask, beta=0.5)
    assert torch.allclose(got, t([-0.05, -0.1, 0.85], [1.75, 0.0, 0.0]))


def test_gae_with_gamma_and_lambda_one_is_the_monte_carlo_return():
    advantages, returns = gae(t([0.0, 0.0, 1.0]), t([0.5, 0.5, 0.5]), t([1, 1, 1]),
                              gamma=1.0, lam=1.0)
    assert torch.allclose(advantages, t([0.5, 0.5, 0.5]))
    assert torch.allclose(returns, t([1.0, 1.0, 1.0]))


def test_gae_discounted():
    advantages, _ = gae(t([0.0, 0.0, 1.0]), t([0.5, 0.5, 0.5]), t([1, 1, 1]),
                        gamma=0.9, lam=0.5)
    # δ = (-0.05, -0.05, 0.5);  A2 = 0.5,  A1 = -0.05 + 0.45·0.5,  A0 = -0.05 + 0.45·A1
    assert torch.allclose(advantages, t([0.02875, 0.175, 0.5]))


def test_gae_ends_the_episode_at_the_mask():
    advantages, returns = gae(t([0.0, 1.0, 9.0]), t([0.5, 0.5, 7.0]), t([1, 1, 0]),
                              gamma=1.0, lam=1.0)
    assert torch.allclose(advantages, t([0.5, 0.5, 0.0]))
    assert torch.allclose(returns, t([1.0, 1.0, 0.0]))


def test_leave_one_out_subtracts_the_mean_of_the_other_answers():
    rewards = torch.tensor([[1.0, 2.0, 6.0], [0.0, 0.0, 0.0]])
    # 1 - (2 + 6) / 2 = -3; 2 - (1 + 6) / 2 = -1.5; 6 - (1 + 2) / 2 = 4.5
    expected = torch.tensor([[-3.0, -1.5, 4.5], [0.0, 0.0, 0.0]])
    assert torch.allclose(leave_one_out_advantages(rewards), expected)
    with pytest.raises(ValueError, match="two answers"):
        leave_one_out_advantages(torch.ones(3, 1))


def test_clipped_policy_loss():
    logprobs = torch.log(t([1.5, 0.5, 0.5]))
    old = torch.zeros(3)
    advantages, mask = t([1.0, 1.0, -1.0]), t([1, 1, 1])
    loss, clip_fraction = clipped_policy_loss(logprobs, old, advantages, mask, clip_range=0.2)
    # token 0: max(-1.5, -1.2) = -1.2 (clipped); token 1: max(-0.5, -0.8) = -0.5;
    # token 2: max(0.5, 0.8) = 0.8 (clipped)
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 0.8) / 3, abs=1e-6)
    assert clip_fraction.item() == pytest.approx(2 / 3)


def test_policy_loss_at_ratio_one_is_minus_the_mean_advantage():
    logprobs = t([-1.0, -2.0, -3.0])
    loss, clip_fraction = clipped_policy_loss(logprobs, logprobs, t([1.0, 3.0, 100.0]),
                                              t([1, 1, 0]), clip_range=0.2)
    assert loss.item() == pytest.approx(-2.0)
    assert clip_fraction.item() == 0.0


def test_clipped_value_loss():
    values, old, returns = t([2.0, 0.1, 0.0]), t([1.0, 0.0, 1.0]), t([0.0, 1.0, 0.0])
    loss, clip_fraction = clipped_value_loss(values, old, returns, t([1, 1, 1]), clip_range=0.5)
    # token 0: max(4, 1.5²) = 4; token 1: 0.81 both ways; token 2: max(0, 0.5²) = 0.25 (clipped)
    assert loss.item() == pytest.approx(0.5 * (4 + 0.81 + 0.25) / 3, abs=1e-6)
    assert clip_fraction.item() == pytest.approx(1 / 3)


def test_fixed_kl_controller_never_moves():
    controller = KLController(0.1)
    assert controller.update(50.0, 1000) == 0.1


def test_adaptive_kl_controller():
    controller = KLController(0.1, target=1.0, horizon=100)
    assert controller.update(2.0, 10) == pytest.approx(0.1 * 1.02)  # error clipped to +0.2
    controller.beta = 0.1
    assert controller.update(0.9, 10) == pytest.approx(0.1 * 0.99)  # error -0.1
