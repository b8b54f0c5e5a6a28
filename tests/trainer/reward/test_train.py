"""Training: the reward model learns a synthetic preference quickly; labels train too. The
held-out figures tell a model that agrees with the voters from one that does not."""

import math
import random

import pytest
import torch

from tests.trainer.synthetic import synthetic_answer, synthetic_pairs, synthetic_prompt
from trainer.data import Label, Pair
from trainer.reward import RewardConfig, evaluate_reward_model, train_reward_model


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
    assert 0 < metrics["margin_low"] < metrics["margin"] < metrics["margin_high"]


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


class FixedRewards:
    """A reward model that gives each answer a fixed reward."""

    def __init__(self, rewards: dict[str, float]):
        self.rewards = rewards

    def score(self, prompts, completions, *, normalized=True, batch_size=32):
        return torch.tensor([self.rewards[c] for c in completions])


def _pairs(*chosen_rejected: tuple[str, str]) -> list[Pair]:
    return [Pair([{"role": "user", "content": "hi"}], c, r) for c, r in chosen_rejected]


def test_the_margin_is_the_mean_reward_difference_in_reward_std_units():
    model = FixedRewards({"good": 1.0, "bad": 0.0})
    pairs = _pairs(("good", "bad"), ("good", "bad"), ("bad", "good"), ("good", "bad"))
    figures = evaluate_reward_model(model, pairs)
    spread = math.sqrt(8 * 0.25 / 7)  # rewards 1,1,0,1 and 0,0,1,0: std 0.5345
    assert figures["accuracy"] == 0.75
    assert figures["margin"] == pytest.approx((1 + 1 - 1 + 1) / 4 / spread)
    assert figures["margin_low"] <= 0 < figures["margin_high"]  # four pairs prove nothing
    assert evaluate_reward_model(model, pairs * 10)["margin_low"] > 0  # forty do


def test_ties_in_the_votes_cost_a_good_model_accuracy_but_not_its_margin():
    # Half the pairs the voters liked alike (their labels are coin flips); a good model
    # scores those alike, so its accuracy falls to 0.75 but its margin stays clear of 0.
    # A model that learned nothing is as accurate on pairs like these by luck, not margin.
    good = FixedRewards({"kind": 1.0, "rude": 0.0, "plain": 0.5, "dull": 0.5})
    pairs = _pairs(*[("kind", "rude")] * 20, *[("plain", "dull")] * 10,
                   *[("dull", "plain")] * 10)
    figures = evaluate_reward_model(good, pairs)
    assert figures["accuracy"] == 0.75 and figures["margin_low"] > 0.3

    lucky = FixedRewards({"kind": 0.0, "rude": 1.0, "plain": 1.0, "dull": 0.0})
    noise = _pairs(*[("kind", "rude")] * 15, *[("plain", "dull")] * 25)
    figures = evaluate_reward_model(lucky, noise)
    assert figures["accuracy"] == 0.625 and figures["margin_low"] <= 0


def test_no_heldout_pairs_give_no_figures():
    figures = evaluate_reward_model(FixedRewards({}), [])
    assert figures["pairs"] == 0
    assert all(math.isnan(figures[k]) for k in ("accuracy", "margin", "margin_low"))
