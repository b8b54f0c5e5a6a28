"""What tests/trainer/test_distributed.py runs on 1 process and, through
`trainer.launch.launch`, on 2: the collectives on hand-made rows, and small runs of the
reward model, PPO and DPO. Every function returns its figures (rank 0's on 2 processes)."""

from dataclasses import replace
from unittest import mock

import torch

from flywheel.errors import FlywheelError
from tests.fixtures.tiny_models import build_tiny_model, tiny_tokenizer
from tests.trainer.synthetic import synthetic_pairs
from trainer.data import Label, Pair
from trainer.distributed import data_parallel, on_main
from trainer.dpo import DPOConfig, train_dpo
from trainer.ppo import PPOConfig, prepare_policy, train_ppo
from trainer.reward import RewardConfig, train_reward_model

# Rows of a global batch: 5 answers of 2 to 4 tokens (the ranks' parts are 2 and 3 rows).
VALUES = torch.tensor([[1.0, 2.0, 0.0, 0.0], [3.0, -1.0, 4.0, 0.0], [0.5, 0.0, 0.0, 0.0],
                       [2.0, 2.0, 2.0, 7.0], [-3.0, 1.0, 0.0, 0.0]])
MASK = torch.tensor([[1.0, 1, 0, 0], [1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0]])
MINIBATCHES = [torch.tensor([4, 0]), torch.tensor([1, 3]), torch.tensor([2])]

REWARD = RewardConfig(max_length=32, batch_size=8, epochs=2, lr=2e-4, device="cpu")
PPO = PPOConfig(steps=3, batch_size=4, minibatch_size=2, ppo_epochs=2, max_new_tokens=5,
                learning_rate=1e-2, lora_r=4)
DPO = DPOConfig(epochs=2, batch_size=4, learning_rate=1e-2, max_length=48)
PROMPTS = [[{"role": "user", "content": f"tell me about thing number {i}"}] for i in range(6)]


def collectives(**_) -> dict:
    """The global figures of VALUES/MASK, from each rank's part of the rows; what each rank
    sees of work done on rank 0 alone, and of an error there."""
    dp = data_parallel()

    def fail():
        raise FlywheelError("no pairs")

    try:
        on_main(dp, fail)
        failure = "returned"
    except FlywheelError as e:
        failure = f"raised: {e}"
    except SystemExit as e:
        failure = f"exit {e.code}"
    part = dp.part(len(VALUES))
    values, mask = VALUES[part], MASK[part]
    shares = [(mine.tolist(), share) for mine, share in
              dp.minibatches(MINIBATCHES, mask.sum(1))]
    return {"whitened": dp.gather_rows(dp.whiten(values, mask)).tolist(),
            "masked_mean": dp.masked_mean(values, mask), "mean": dp.mean(values[:, 0]),
            "shares": dp.gather([shares]), "sum": dp.sum(torch.tensor(1.0)).item(),
            "on_main": dp.gather([on_main(dp, lambda: f"from rank {dp.rank}")]),
            "failure": dp.gather([failure])}


def reward_run(**_) -> dict:
    """21 pairs of uneven weights in batches of 8 (the last, 5, splits 2 and 3) and 6
    labels, 2 epochs; then the held-out figures and the weights of the head."""
    pairs = [replace(p, weight=0.5 + (i % 3) / 2) for i, p in enumerate(synthetic_pairs(21))]
    labels = [Label(p.prompt, p.chosen if i % 2 else p.rejected, bool(i % 2))
              for i, p in enumerate(synthetic_pairs(6, seed=2))]
    model, metrics = train_reward_model(pairs, synthetic_pairs(9, seed=1, first_id=100),
                                        REWARD, train_labels=labels)
    keys = ("accuracy", "loss", "ece", "reward_mean", "reward_std", "steps")
    return {**{k: metrics[k] for k in keys}, "head": model.head.weight.flatten().tolist()}


def greedy(logits, temperature, generator=None):
    """`trainer.rollout.draw` without its random draw: the likeliest token, so the answers
    do not depend on which rank samples them."""
    logprobs = torch.log_softmax(logits / temperature, -1)
    token = logprobs.argmax(-1)
    entropy = -(logprobs.exp() * logprobs).sum(-1)
    return token, logprobs.gather(1, token[:, None]).squeeze(1), entropy


def ppo_run(**_) -> list[dict]:
    """Three PPO steps of 4 answers (2 per rank), minibatches of 2; PPO's logs."""
    tokenizer = tiny_tokenizer()
    policy = prepare_policy(build_tiny_model("llama", tokenizer=tokenizer), PPO)

    def reward(prompts, completions):
        return torch.tensor([len(set(c.split())) / 3.0 for c in completions])

    with mock.patch("trainer.rollout.draw", greedy):
        return train_ppo(policy, tokenizer, PROMPTS, reward, PPO).metrics


def dpo_run(**_) -> list[dict]:
    """Two epochs of DPO on 7 weighted pairs in batches of 4 (the last, 3, splits 1 and 2)."""
    tokenizer = tiny_tokenizer()
    policy = prepare_policy(build_tiny_model("llama", tokenizer=tokenizer), PPO)
    pairs = [Pair(p.prompt, p.chosen, p.rejected, weight=1.0 + (i % 2))
             for i, p in enumerate(synthetic_pairs(7, seed=3))]
    return train_dpo(policy, tokenizer, pairs, DPO).metrics


def everything(**_) -> dict:
    return {"collectives": collectives(), "reward": reward_run(), "ppo": ppo_run(),
            "dpo": dpo_run()}
