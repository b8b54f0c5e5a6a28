"""The reward model: data in, a trained scorer out (DESIGN §5).

    model, metrics = train_reward_model(split.train, split.heldout, RewardConfig())
    model.save(path); RewardModel.load(path).score(prompts, completions)
"""

from trainer.reward.model import RewardModel
from trainer.reward.store import (
    Registration,
    current_reward_model,
    model_files,
    register_reward_model,
    registered_version,
    reward_models_dir,
)
from trainer.reward.train import RewardConfig, evaluate_reward_model, train_reward_model

__all__ = [
    "Registration",
    "RewardConfig",
    "RewardModel",
    "current_reward_model",
    "evaluate_reward_model",
    "model_files",
    "register_reward_model",
    "registered_version",
    "reward_models_dir",
    "train_reward_model",
]
