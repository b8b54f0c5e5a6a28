"""The cycle's training stages on N processes of this machine (`"processes": N` in the
cycle's recipe): the cycle's process holds the lease, reads the data and registers; the
stage runs as a `trainer.launch.launch`ed job whose rank 0 hands back what the cycle
needs (the reward model's files, the adapter's weights, PPO's state) and writes PPO's
checkpoints. Its ranks never open the store.
"""

import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from peft import PeftModel, set_peft_model_state_dict

from flywheel.adapter_store import AdapterStore
from flywheel.model_loading import load_model
from trainer.checkpoints import lora_weights, save_state
from trainer.data import Label, Pair
from trainer.demonstrations import Demonstration
from trainer.distributed import data_parallel
from trainer.launch import Progress, launch
from trainer.policy_stage import PolicyRecipe, PolicyResult, train_policy
from trainer.ppo import PPOState, prepare_policy
from trainer.reward import RewardConfig, RewardModel, train_reward_model
from trainer.rollout import Messages


def train_reward_model_on(processes: int, train_pairs: Sequence[Pair],
                          heldout_pairs: Sequence[Pair], config: RewardConfig, *,
                          train_labels: Sequence[Label] = (),
                          warm_start: str | Path | None = None
                          ) -> tuple[RewardModel, dict[str, Any]]:
    """`train_reward_model` on `processes` processes."""
    if processes == 1:
        return train_reward_model(train_pairs, heldout_pairs, config, train_labels=train_labels,
                                  warm_start=warm_start)
    with tempfile.TemporaryDirectory(prefix="flywheel-rm-") as out:
        metrics = launch("trainer.parallel_stages:reward_job", {
            "train_pairs": list(train_pairs), "heldout_pairs": list(heldout_pairs),
            "config": config, "train_labels": list(train_labels),
            "warm_start": None if warm_start is None else str(warm_start), "out": out},
            processes=processes)
        model = RewardModel.load(out, device=config.device, models_dir=config.models_dir)
    return model, metrics


def reward_job(*, train_pairs: list[Pair], heldout_pairs: list[Pair], config: RewardConfig,
               train_labels: list[Label], warm_start: str | None, out: str,
               progress: Progress | None, device: str | None) -> dict[str, Any]:
    """One rank of `train_reward_model_on`: rank 0 saves the model to `out`."""
    config = replace(config, device=device or config.device)
    model, metrics = train_reward_model(train_pairs, heldout_pairs, config,
                                        train_labels=train_labels, warm_start=warm_start)
    if data_parallel().is_main:
        model.save(out)
    return metrics


def train_policy_on(processes: int, policy: PeftModel, recipe: PolicyRecipe, *, model: str,
                    models_dir: Path, adapters_dir: Path, warm_start: str | None,
                    prompts: list[Messages], pairs: list[Pair],
                    demonstrations: list[Demonstration], reward_model: Path,
                    progress: Progress, ppo_state: PPOState | None, checkpoint_path: Path,
                    resume_info: dict[str, Any], metrics: dict[str, Any]) -> PolicyResult:
    """`train_policy` on `processes` (≥ 2) processes, from `policy`'s adapter (warm-started from
    `warm_start` in the adapter store). Each rank loads `model` and scores with the reward
    model at `reward_model`; rank 0 writes PPO's checkpoints to `checkpoint_path` as the
    cycle does on one process (with `resume_info` and the `metrics` so far).
    `policy` comes back with the trained adapter."""
    done = launch("trainer.parallel_stages:policy_job", {
        "recipe": recipe, "model": model, "models_dir": models_dir,
        "adapters_dir": adapters_dir, "warm_start": warm_start,
        "adapter": lora_weights(policy), "prompts": prompts, "pairs": pairs,
        "demonstrations": demonstrations, "reward_model": reward_model,
        "ppo_state": ppo_state, "checkpoint_path": checkpoint_path,
        "resume_info": resume_info, "metrics": metrics}, processes=processes,
        progress=progress)
    set_peft_model_state_dict(policy, done.pop("adapter"))
    return PolicyResult(policy, **done)


def policy_job(*, recipe: PolicyRecipe, model: str, models_dir: Path, adapters_dir: Path,
               warm_start: str | None, adapter: dict, prompts: list[Messages],
               pairs: list[Pair], demonstrations: list[Demonstration], reward_model: Path,
               ppo_state: PPOState | None, checkpoint_path: Path, resume_info: dict[str, Any],
               metrics: dict[str, Any], progress: Progress | None, device: str | None
               ) -> dict[str, Any]:
    """One rank of `train_policy_on`: the adapter's weights and the figures, from rank 0."""
    main = data_parallel().is_main
    loaded = load_model(model, models_dir=models_dir, device=device)
    policy = prepare_policy(loaded.model, recipe.ppo, store=AdapterStore(adapters_dir),
                            warm_start=warm_start)
    set_peft_model_state_dict(policy, adapter)
    scorer = RewardModel.load(reward_model, device=device, models_dir=models_dir)

    def report(stage: str, figures: dict) -> None:
        metrics[stage] = figures
        if progress is not None:
            progress(stage, figures)

    def keep(state: PPOState) -> None:
        save_state(checkpoint_path, state, adapter=lora_weights(policy),
                   metrics=metrics, **resume_info)

    result = train_policy(policy, loaded.tokenizer, recipe, prompts=prompts, pairs=pairs,
                          demonstrations=demonstrations, reward_fn=scorer.score,
                          progress=report, ppo_state=ppo_state,
                          checkpoint=keep if main else None)
    return {"adapter": {k: v.cpu() for k, v in lora_weights(policy).items()},
            "method": result.method, "stop_reason": result.stop_reason,
            "timings": result.timings, "state": result.state, "sft_steps": result.sft_steps}
