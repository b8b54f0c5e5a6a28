"""The cycle's policy stage: SFT on rewrites first when there are enough of them, then the
recipe's method; every method ends in one result the cycle evaluates the same way."""

import pytest
import torch

from tests.trainer.word_model import word_model, word_tokenizer
from trainer.data import Pair
from trainer.demonstrations import Demonstration
from trainer.dpo import DPOConfig
from trainer.policy_stage import PolicyRecipe, train_policy
from trainer.ppo import PPOConfig, prepare_policy
from trainer.sft import SFTConfig

PROMPT = [{"role": "user", "content": "tell me about cats"}]
PAIRS = [Pair(PROMPT, "yes, cats is a good thing.", "no, cats is a bad thing.")] * 4
DEMOS = [Demonstration(PROMPT, "yes, cats is a good thing.")] * 4
SMALL = dict(sft=SFTConfig(epochs=1, batch_size=4),
             ppo=PPOConfig(steps=2, batch_size=4, minibatch_size=4, ppo_epochs=1,
                           max_new_tokens=4, lora_r=4),
             dpo=DPOConfig(epochs=1, steps=2, prompts_per_step=2, answers_per_prompt=2,
                           batch_size=4, max_new_tokens=4, max_length=64))


def yes_reward(prompts, completions):
    return torch.tensor([c.split().count("yes") for c in completions], dtype=torch.float32)


@pytest.fixture(scope="module")
def tokenizer():
    return word_tokenizer()


def run(tokenizer, method, *, demos=(), min_demonstrations=4):
    stages = {}
    recipe = PolicyRecipe(method=method, min_demonstrations=min_demonstrations, **SMALL)
    policy = prepare_policy(word_model(tokenizer), SMALL["ppo"])
    result = train_policy(policy, tokenizer, recipe, prompts=[PROMPT] * 4, pairs=PAIRS,
                          demonstrations=list(demos), reward_fn=yes_reward,
                          progress=lambda stage, figures: stages.update({stage: figures}))
    return result, stages


@pytest.mark.parametrize("method", ["ppo", "dpo", "online_dpo"])
def test_each_method_trains_and_reports_under_its_name(tokenizer, method):
    result, stages = run(tokenizer, method)
    assert result.method == method and result.sft_steps == 0 and "sft" not in stages
    assert len(stages[method]["steps"]) == 2 or method == "dpo"
    assert stages[method]["stop_reason"] == result.stop_reason
    assert (result.state is not None) == (method == "ppo")  # PPO's state: the next warm start


def test_sft_on_rewrites_comes_first_once_there_are_enough(tokenizer):
    result, stages = run(tokenizer, "dpo", demos=DEMOS)
    assert result.sft_steps == 1 and len(stages["sft"]["steps"]) == 1
    fewer, stages = run(tokenizer, "dpo", demos=DEMOS[:3])
    assert fewer.sft_steps == 0 and "sft" not in stages


def test_an_unknown_method_is_refused(tokenizer):
    with pytest.raises(ValueError, match="unknown method 'reinforce'"):
        run(tokenizer, "reinforce")
