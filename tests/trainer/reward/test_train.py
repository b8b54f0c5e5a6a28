"""Training: the reward model learns a synthetic preference quickly; labels train too;
a retrained model replaces the current one only if it is not worse."""

import math
import random

import pytest

from tests.trainer.synthetic import synthetic_answer, synthetic_pairs, synthetic_prompt
from trainer.data import Label
from trainer.reward import (
    RewardConfig,
    RewardModel,
    current_reward_model,
    evaluate_reward_model,
    new_version_dir,
    promote_if_not_worse,
    set_current,
    train_reward_model,
)

FAST = RewardConfig(max_length=32, batch_size=8, epochs=2, lr=2e-4, device="cpu")


@pytest.fixture(scope="module")
def trained():
    """A reward model trained on 48 synthetic pairs, and 32 fresh held-out ones."""
    heldout = synthetic_pairs(32, seed=1, first_id=1000)
    model, metrics = train_reward_model(synthetic_pairs(48, seed=0), heldout, FAST)
    return model, metrics, heldout


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


def test_a_worse_model_does_not_replace_the_current_one(trained, tmp_path):
    model, _, heldout = trained
    root = tmp_path / "reward_models"
    assert current_reward_model(root) is None
    good = model.save(new_version_dir(root))
    assert good.name == "rm-0001" and new_version_dir(root).name == "rm-0002"
    assert promote_if_not_worse(good, None, heldout)
    assert current_reward_model(root) == good
    untrained = RewardModel.create(max_length=32, device="cpu")
    assert evaluate_reward_model(untrained, heldout)["accuracy"] < 0.9
    worse = untrained.save(new_version_dir(root))
    assert not promote_if_not_worse(worse, good, heldout)
    assert current_reward_model(root) == good
    assert promote_if_not_worse(worse, good, heldout, tolerance=1.0)  # anything goes
    assert current_reward_model(root) == worse
    set_current(root, good)
    assert current_reward_model(root) == good
