"""The DPO recipes on a tiny model. Offline: the reference is the adapter switched off, the
chosen-over-rejected margin rises, pair weights count. Online: the reward model's score rises,
ties make no pair, the hard KL cap stops the run. Both: the same seed gives the same run, and
the process-wide RNG is left alone."""

import math
import random

import pytest
import torch

from tests.fixtures.tiny_models import build_tiny_model, tiny_tokenizer
from tests.trainer.word_model import word_model, word_tokenizer
from trainer.data import Pair
from trainer.dpo import DPOConfig, train_dpo, train_online_dpo
from trainer.ppo import PPOConfig, prepare_policy

ANIMALS = ("cats", "dogs", "birds", "fish")
PROMPTS = [[{"role": "user", "content": f"tell me about {animal}"}] for animal in ANIMALS]
PAIRS = [Pair(prompt, f"yes, {animal} is a good thing.", f"no, {animal} is a bad thing.")
         for prompt, animal in zip(PROMPTS, ANIMALS, strict=True)]
OFFLINE = dict(epochs=8, batch_size=4, learning_rate=1e-2, beta=0.1, max_length=64)
ONLINE = dict(steps=10, prompts_per_step=8, answers_per_prompt=4, batch_size=8,
              max_new_tokens=8, learning_rate=1e-2, beta=0.1, kl_cap=100.0)
OFFLINE_KEYS = {"step", "epoch", "loss", "margin", "accuracy", "chosen_reward",
                "rejected_reward"}
ONLINE_KEYS = {"step", "score", "kl", "kl_k3", "entropy", "response_length", "eos_fraction",
               "pairs", "loss", "margin", "accuracy", "chosen_reward", "rejected_reward"}


@pytest.fixture(scope="module")
def tokenizer():
    return word_tokenizer()


def yes_reward(prompts, completions):
    """Each "yes" in the answer scores 1."""
    return torch.tensor([c.split().count("yes") for c in completions], dtype=torch.float32)


def length_reward(prompts, completions):
    """Longer answers score more: answers almost never tie."""
    return torch.tensor([len(c) for c in completions], dtype=torch.float32)


def untouched_global_rng(train):
    """Run `train()` and check it neither drew from nor reseeded the process-wide RNGs."""
    torch_state, python_state = torch.random.get_rng_state(), random.getstate()
    result = train()
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert random.getstate() == python_state
    return result


def offline(tokenizer, pairs=PAIRS, model=None, **overrides):
    policy = prepare_policy(model or word_model(tokenizer), PPOConfig(lora_r=4))
    config = DPOConfig(**{**OFFLINE, **overrides})
    return untouched_global_rng(lambda: train_dpo(policy, tokenizer, pairs, config))


def online(tokenizer, reward=yes_reward, **overrides):
    policy = prepare_policy(word_model(tokenizer), PPOConfig(lora_r=4))
    config = DPOConfig(**{**ONLINE, **overrides})
    return untouched_global_rng(lambda: train_online_dpo(policy, tokenizer, PROMPTS, reward,
                                                         config))


def lora_b(model):
    return [p for n, p in model.named_parameters() if "lora_B" in n]


# -- offline ----------------------------------------------------------------------------


def test_dpo_raises_the_chosen_over_rejected_margin(tokenizer):
    result = offline(tokenizer)
    first, last = result.metrics[0], result.metrics[-1]
    assert len(result.metrics) == 8 and all(set(m) == OFFLINE_KEYS for m in result.metrics)
    # a fresh adapter is the reference: every implicit reward is 0, the loss log 2
    assert first["margin"] == 0.0 and first["loss"] == pytest.approx(math.log(2.0))
    assert last["margin"] > 0.5 and last["accuracy"] == 1.0, result.metrics
    assert last["loss"] < 0.5 * first["loss"]
    assert last["chosen_reward"] > first["chosen_reward"]
    assert set(result.timings) == {"reference", "update"}


def test_the_reference_is_the_base_model_with_the_adapter_off():
    tokenizer = tiny_tokenizer()
    result = offline(tokenizer, model=build_tiny_model("llama", tokenizer=tokenizer), epochs=1)
    base = build_tiny_model("llama", tokenizer=tokenizer)
    ids = torch.tensor([tokenizer.apply_chat_template(PROMPTS[0], tokenize=True,
                                                      add_generation_prompt=True)["input_ids"]])
    with torch.no_grad():
        with result.model.disable_adapter():
            assert torch.equal(result.model(input_ids=ids).logits, base(input_ids=ids).logits)
        assert not torch.allclose(result.model(input_ids=ids).logits, base(input_ids=ids).logits)


def test_a_pair_of_weight_zero_changes_nothing(tokenizer):
    alone = offline(tokenizer, pairs=PAIRS[:1], epochs=2)
    weightless = Pair(PAIRS[1].prompt, PAIRS[1].chosen, PAIRS[1].rejected, weight=0.0)
    with_it = offline(tokenizer, pairs=[PAIRS[0], weightless], epochs=2)
    for a, b in zip(lora_b(alone.model), lora_b(with_it.model), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_the_same_seed_reproduces_an_offline_run(tokenizer):
    first, second = (offline(tokenizer, epochs=1, batch_size=2, seed=5) for _ in range(2))
    other = offline(tokenizer, epochs=1, batch_size=2, seed=6)
    assert first.metrics == second.metrics and first.metrics != other.metrics


def test_dpo_needs_pairs(tokenizer):
    with pytest.raises(ValueError, match="at least one pair"):
        offline(tokenizer, pairs=[])


# -- online -----------------------------------------------------------------------------


def test_online_dpo_raises_the_reward_model_score(tokenizer):
    result = online(tokenizer)
    assert result.stop_reason == "steps" and len(result.metrics) == 10
    assert all(set(m) == ONLINE_KEYS for m in result.metrics)
    first = result.metrics[0]
    assert first["kl"] == pytest.approx(0.0, abs=1e-5) and first["kl_k3"] == pytest.approx(
        0.0, abs=1e-5)  # a fresh adapter samples like the reference
    assert 0 < first["pairs"] <= 8 and first["loss"] == pytest.approx(math.log(2.0))
    scores = [m["score"] for m in result.metrics]
    assert sum(scores[-3:]) / 3 > 2 * sum(scores[:3]) / 3, scores
    assert result.metrics[-1]["kl_k3"] > 0
    assert set(result.timings) == {"generation", "scoring", "update"}


def test_ties_make_no_pair_and_no_update(tokenizer):
    result = online(tokenizer, steps=2, prompts_per_step=2, max_new_tokens=4,
                    missing_eos_penalty=0.0, reward=lambda p, c: torch.zeros(len(c)))
    assert [m["pairs"] for m in result.metrics] == [0.0, 0.0]
    assert all(m["loss"] == 0.0 for m in result.metrics)
    assert all(torch.count_nonzero(p) == 0 for p in lora_b(result.model))


def test_an_answer_without_eos_ranks_below_one_with_it(tokenizer):
    result = online(tokenizer, steps=4, prompts_per_step=4, max_new_tokens=8,
                    reward=lambda p, c: torch.zeros(len(c)))
    assert 0 < result.metrics[0]["eos_fraction"] < 1, result.metrics
    assert sum(m["pairs"] for m in result.metrics) > 0  # ties broken by the EOS penalty
    # The answers that end are now likelier (each step's margin is on fresh pairs: noisy).
    assert result.metrics[-1]["eos_fraction"] > result.metrics[0]["eos_fraction"] + 0.3


def test_the_hard_kl_cap_stops_and_restores_the_last_policy_within_it(tokenizer):
    result = online(tokenizer, steps=5, kl_cap=1e-3, prompts_per_step=4, max_new_tokens=4,
                    reward=length_reward)
    # step 0 samples from the fresh adapter (KL 0) and updates; step 1 is over the cap
    assert result.stop_reason == "kl_cap" and len(result.metrics) == 2
    assert result.metrics[-1]["stopped"] == 1.0 and result.metrics[-1]["kl_k3"] > 1e-3
    assert all(torch.count_nonzero(p) == 0 for p in lora_b(result.model))  # back to step 0


def test_the_same_seed_reproduces_an_online_run(tokenizer):
    small = dict(steps=2, prompts_per_step=2, answers_per_prompt=3, max_new_tokens=4,
                 reward=length_reward)
    first, second = (online(tokenizer, **small, seed=5) for _ in range(2))
    other = online(tokenizer, **small, seed=6)
    assert all(m["pairs"] > 0 for m in first.metrics)
    assert first.metrics == second.metrics and first.metrics != other.metrics


def test_online_dpo_needs_two_answers_per_prompt(tokenizer):
    with pytest.raises(ValueError, match="at least 2 answers"):
        online(tokenizer, answers_per_prompt=1)
