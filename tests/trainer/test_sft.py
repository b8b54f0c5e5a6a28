"""The SFT recipe on a tiny model: it learns the rewrites, the same seed gives the same run,
and it leaves the process-wide RNG alone."""

import random

import pytest
import torch

from tests.fixtures.tiny_models import build_tiny_model, tiny_tokenizer
from tests.trainer.word_model import word_model, word_tokenizer
from trainer.demonstrations import Demonstration
from trainer.ppo import PPOConfig, prepare_policy
from trainer.sft import SFTConfig, train_sft

EXAMPLES = [Demonstration([{"role": "user", "content": f"tell me about {animal}"}],
                          f"yes, {animal} is a good thing.", weight=1.0 - i / 10)
            for i, animal in enumerate(["cats", "dogs", "birds", "fish"])]
SMALL = dict(epochs=10, batch_size=4, learning_rate=1e-2, max_length=64)


@pytest.fixture(scope="module")
def tokenizer():
    return word_tokenizer()


def run(tokenizer, examples=EXAMPLES, **overrides):
    policy = prepare_policy(word_model(tokenizer), PPOConfig(lora_r=4))
    torch_state, python_state = torch.random.get_rng_state(), random.getstate()
    result = train_sft(policy, tokenizer, examples, SFTConfig(**{**SMALL, **overrides}))
    # no process-wide random state is drawn from or reseeded
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert random.getstate() == python_state
    return result


def test_sft_lowers_the_loss_on_the_rewrites(tokenizer):
    result = run(tokenizer)
    metrics = result.metrics
    assert len(metrics) == 10 and [m["epoch"] for m in metrics] == list(range(10))
    assert set(metrics[0]) == {"step", "epoch", "loss", "tokens"}
    # one batch of all four, 9 answer tokens each: "yes , cats is a good thing . [SEP]"
    assert metrics[0]["tokens"] == 36
    assert metrics[0]["loss"] > 2.5  # about log(27): the random model knows nothing yet
    assert metrics[-1]["loss"] < 0.5 * metrics[0]["loss"], metrics
    assert set(result.timings) == {"encoding", "update"}


def test_the_same_seed_reproduces_the_run(tokenizer):
    first = run(tokenizer, epochs=2, batch_size=2, seed=3)
    second = run(tokenizer, epochs=2, batch_size=2, seed=3)
    other = run(tokenizer, epochs=2, batch_size=2, seed=4)
    assert first.metrics == second.metrics
    assert [m["loss"] for m in first.metrics] != [m["loss"] for m in other.metrics]


def test_on_step_sees_every_log_with_the_demo_tokenizer():
    tokenizer = tiny_tokenizer()
    policy = prepare_policy(build_tiny_model("gpt2", tokenizer=tokenizer), PPOConfig(lora_r=4))
    logs = []
    result = train_sft(policy, tokenizer, EXAMPLES, SFTConfig(epochs=1, batch_size=3),
                       on_step=logs.append)
    assert logs == result.metrics and len(logs) == 2  # 4 examples in batches of 3


def test_sft_needs_a_demonstration(tokenizer):
    with pytest.raises(ValueError, match="at least one demonstration"):
        run(tokenizer, examples=[])
