"""A reward model trained once for the tests of this folder."""

import pytest

from tests.trainer.synthetic import synthetic_pairs
from trainer.reward import RewardConfig, train_reward_model

FAST = RewardConfig(max_length=32, batch_size=8, epochs=2, lr=2e-4, device="cpu")


@pytest.fixture(scope="session")
def trained():
    """A reward model trained on 48 synthetic pairs, and 32 fresh held-out ones."""
    heldout = synthetic_pairs(32, seed=1, first_id=1000)
    model, metrics = train_reward_model(synthetic_pairs(48, seed=0), heldout, FAST)
    return model, metrics, heldout
