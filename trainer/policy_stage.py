"""The cycle's policy stage: SFT on rewrites when there are enough of them (the classic
stage 1), then the recipe's method — PPO against the reward model, DPO on the collected
pairs, or online DPO on the policy's own answers ranked by the reward model. Every method
starts from the live adapter, keeps the base model (adapter off) as its reference, and ends
in one `PolicyResult` that the cycle evaluates, gates and registers the same way.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from peft import PeftModel
from sqlmodel import Session
from transformers import PreTrainedTokenizerBase

from feedback.queries import adapters as registry
from flywheel.adapter_store import AdapterStore, StoredAdapter
from trainer.data import Pair
from trainer.demonstrations import Demonstration
from trainer.dpo import DPOConfig, train_dpo, train_online_dpo
from trainer.ppo import PPOConfig, PPOState, train_ppo
from trainer.rollout import Messages, RewardFn
from trainer.sft import SFTConfig, train_sft

METHODS = ("ppo", "dpo", "online_dpo")
Progress = Callable[[str, dict], None]  # (stage, its figures so far)


@dataclass
class PolicyRecipe:
    method: str = "ppo"  # "ppo", "dpo" or "online_dpo"
    min_demonstrations: int = 20  # rewrites needed before a cycle starts with SFT on them
    sft: SFTConfig = field(default_factory=SFTConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)


@dataclass
class PolicyResult:
    model: PeftModel  # the policy, adapter "default" trained
    method: str
    stop_reason: str
    timings: dict[str, float]
    state: PPOState | None = None  # PPO's final state: the next cycle's warm start
    sft_steps: int = 0  # 0: no SFT this cycle


def train_policy(policy: PeftModel, tokenizer: PreTrainedTokenizerBase, recipe: PolicyRecipe, *,
                 prompts: list[Messages], pairs: list[Pair],
                 demonstrations: list[Demonstration], reward_fn: RewardFn,
                 progress: Progress, ppo_state: PPOState | None = None,
                 checkpoint: Callable[[PPOState], None] | None = None) -> PolicyResult:
    """Train the policy's "default" adapter as `recipe` says; `progress` gets each stage's
    logs as they come ("sft", then "ppo", "dpo" or "online_dpo"). `ppo_state` and
    `checkpoint` are PPO's warm start or resume, and its checkpoints."""
    if recipe.method not in METHODS:
        raise ValueError(f"unknown method {recipe.method!r} (expected one of {METHODS})")
    sft_steps = 0
    resuming = ppo_state is not None and bool(ppo_state.generators)
    if demonstrations and len(demonstrations) >= recipe.min_demonstrations and not resuming:
        # Stage 1: imitate what users wrote, on the answer's tokens only. A resumed PPO
        # run already did this before its checkpoint.
        sft_logs: list[dict[str, Any]] = []
        train_sft(policy, tokenizer, demonstrations, recipe.sft,
                  on_step=_collect(sft_logs, "sft", progress))
        sft_steps = len(sft_logs)

    logs: list[dict[str, Any]] = list(ppo_state.metrics) if resuming else []
    on_step = _collect(logs, recipe.method, progress)
    if recipe.method == "ppo":
        result = train_ppo(policy, tokenizer, prompts, reward_fn, recipe.ppo, on_step=on_step,
                           state=ppo_state, checkpoint=checkpoint)
        state = result.state
    elif recipe.method == "dpo":
        result, state = train_dpo(policy, tokenizer, pairs, recipe.dpo, on_step=on_step), None
    else:
        result = train_online_dpo(policy, tokenizer, prompts, reward_fn, recipe.dpo,
                                  on_step=on_step)
        state = None
    progress(recipe.method, {"steps": logs, "stop_reason": result.stop_reason,
                             "timings": result.timings})
    return PolicyResult(result.model, recipe.method, result.stop_reason, result.timings,
                        state, sft_steps)


def register_policy_adapter(session: Session, store: AdapterStore, model: PeftModel, *,
                            version: str, parent: str | None, base_model: str, status: str,
                            reward_model_version: str | None = None) -> StoredAdapter:
    """Save the policy's "default" adapter as `version` (atomically: a half-written one is
    never visible) and register it with its parent and the reward model that trained it
    (None for DPO on collected pairs). The cycle registers candidates, `flywheel train`
    adapters in training."""
    stored = store.save(model, version, adapter_name="default", parent=parent,
                        base_model=base_model)
    registry.register_adapter(session, version=version, base_model=base_model,
                              path=str(stored.path.resolve()), sha256=stored.sha256,
                              parent_version=parent, status=status,
                              reward_model_version=reward_model_version)
    return stored


def _collect(logs: list[dict[str, Any]], stage: str, progress: Progress
             ) -> Callable[[dict[str, Any]], None]:
    def on_step(log: dict[str, Any]) -> None:
        logs.append(log)
        progress(stage, {"steps": logs})
    return on_step
