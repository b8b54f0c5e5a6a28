"""The reward model: data in, a trained scorer out (DESIGN §5).

    model, metrics = train_reward_model(split.train, split.heldout, RewardConfig())
    model.save(path); RewardModel.load(path).score(prompts, completions)
"""

from trainer.reward.model import RewardModel
from trainer.reward.store import (
    current_reward_model,
    new_version_dir,
    promote_if_not_worse,
    reward_models_dir,
    set_current,
)
from trainer.reward.train import RewardConfig, evaluate_reward_model, train_reward_model

__all__ = [
    "RewardConfig",
    "RewardModel",
    "current_reward_model",
    "evaluate_reward_model",
    "new_version_dir",
    "promote_if_not_worse",
    "reward_models_dir",
    "set_current",
    "train_reward_model",
]
