"""Training: the reward model learns a synthetic preference quickly; labels train too."""

import math
import random

import pytest

from tests.trainer.synthetic import synthetic_answer, synthetic_pairs, synthetic_prompt
from trainer.data import Label
from trainer.reward import RewardConfig, train_reward_model


def test_learns_a_synthetic_preference(trained):
    model, metrics, heldout = trained
    assert metrics["accuracy"] >= 0.9, metrics
    assert metrics["pairs"] == 32 and metrics["steps"] == 12
    assert 0 <= metrics["ece"] <= 1 and math.isfinite(metrics["loss"])
    # normalised on held-out answers: about mean 0, std 1
    scores = model.score([p.prompt for p in heldout] * 2,
                         [p.chosen for p in heldout] + [p.rejected for p in heldout])
    assert abs(float(scores.mean())) < 1e-3 and abs(float(scores.std()) - 1) < 1e-3
    assert model.metrics["heldout"]["accuracy"] == metrics["accuracy"]


def test_labels_add_a_pointwise_term():
    rng = random.Random(5)
    labels = [Label(synthetic_prompt(rng), synthetic_answer(rng, good=i % 2 == 0), i % 2 == 0)
              for i in range(16)]
    config = RewardConfig(max_length=32, batch_size=8, epochs=1, device="cpu")
    model, metrics = train_reward_model(synthetic_pairs(8), [], config, train_labels=labels)
    assert metrics["steps"] == 1 + 1 and metrics["train_labels"] == 16
    assert math.isnan(metrics["accuracy"]) and model.reward_std > 0
    with pytest.raises(ValueError, match="no training pairs"):
        train_reward_model([], [], config)
