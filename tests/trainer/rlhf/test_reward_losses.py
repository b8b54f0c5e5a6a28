"""The reward-model math against small hand-computed cases."""

import math

import pytest
import torch

from trainer.rlhf.reward_losses import (
    bradley_terry_loss,
    expected_calibration_error,
    pairwise_accuracy,
    pointwise_loss,
)

LOG2 = math.log(2)


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def test_bradley_terry_is_minus_logsigmoid_of_the_difference():
    # -logsigmoid(1) = log(1 + e^-1); -logsigmoid(0) = log 2
    expected = (math.log1p(math.exp(-1)) + LOG2) / 2
    assert bradley_terry_loss(t(1, 0), t(0, 0)).item() == pytest.approx(expected)


def test_margin_shifts_the_difference():
    assert bradley_terry_loss(t(1), t(0), margin=1.0).item() == pytest.approx(LOG2)
    per_pair = bradley_terry_loss(t(1, 3), t(0, 0), margin=t(1, 3))
    assert per_pair.item() == pytest.approx(LOG2)


def test_centering_adds_the_mean_squared_sum():
    # diff 0 → log 2; (1 + 1)² = 4, times 0.5
    assert bradley_terry_loss(t(1), t(1), center_coef=0.5).item() == pytest.approx(LOG2 + 2)


def test_weights_average_the_pairs():
    # pair 1: log 2 (weight 3), pair 2: -logsigmoid(-1) = log(1 + e) (weight 1)
    expected = (3 * LOG2 + math.log1p(math.e)) / 4
    loss = bradley_terry_loss(t(0, 0), t(0, 1), weight=t(3, 1))
    assert loss.item() == pytest.approx(expected)


def test_bradley_terry_has_gradients_that_separate_the_answers():
    chosen, rejected = t(0.0).requires_grad_(), t(0.0).requires_grad_()
    bradley_terry_loss(chosen, rejected).backward()
    assert chosen.grad.item() == pytest.approx(-0.5) and rejected.grad.item() == pytest.approx(0.5)


def test_pointwise_loss_is_binary_cross_entropy():
    assert pointwise_loss(t(0, 0), t(1, 0)).item() == pytest.approx(LOG2)
    # label 1 with reward log 3: -log(3/4)
    assert pointwise_loss(t(math.log(3)), t(1)).item() == pytest.approx(-math.log(0.75))
    assert pointwise_loss(t(0, 100), t(1, 1), weight=t(1, 0)).item() == pytest.approx(LOG2)


def test_accuracy_counts_ties_as_half():
    assert pairwise_accuracy(t(1, 0, 2, 5), t(0, 1, 2, 1)).item() == pytest.approx(2.5 / 4)


def test_calibration_error_on_hand_cases():
    # p = 0.75: confidence 0.75, right → gap 0.25
    assert expected_calibration_error(t(math.log(3)), t(0)).item() == pytest.approx(0.25)
    # sure of both, right once: accuracy 0.5 at confidence ~1 → 0.5
    assert expected_calibration_error(t(20, 0), t(0, 20)).item() == pytest.approx(0.5, abs=1e-6)
    # p = 0.75 once right, once wrong (the model favours rejected with p = 0.25 …)
    ece = expected_calibration_error(t(math.log(3), 0), t(0, math.log(3)))
    assert ece.item() == pytest.approx(0.25)  # one bin: accuracy 0.5, confidence 0.75
    # a well calibrated set: 3 right, 1 wrong at confidence 0.75
    ece = expected_calibration_error(t(*[math.log(3)] * 3, 0), t(0, 0, 0, math.log(3)))
    assert ece.item() == pytest.approx(0.0, abs=1e-6)
    assert expected_calibration_error(t(), t()).item() == 0.0
