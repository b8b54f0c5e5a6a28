"""The training jobs' configurations: every knob of each, with its default, in one place
that imports nothing heavy, so that the CLI takes its options' defaults from here (and
`flywheel --help` does not load torch).
"""

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# How the store's preferences are split (trainer.data): the most of them one user may
# contribute, and the share of conversations held out for evaluation.
DEFAULT_MAX_USER_SHARE = 0.25
DEFAULT_HELDOUT_FRACTION = 0.1
DEFAULT_PROMPT_LIMIT = 512  # user turns read from the store for policy training


@dataclass
class RewardConfig:
    """How to train a reward model. The defaults are the recipe tuned on MiniLM with
    held-out HH harmless pairs (`bench/reward.py`); a LoRA backbone usually wants ~1e-4."""

    backbone: str = "minilm"  # "minilm" (the packaged encoder) or "policy-lora"
    base_model: str | None = None  # the policy, for policy-lora (path, hub id or "demo")
    models_dir: Path | None = None  # where the demo model lives (default: the settings')
    max_length: int = 256  # tokens per conversation, truncated from the left
    epochs: int = 1  # passes over the training pairs
    batch_size: int = 8  # pairs per step (both answers of each go in one forward pass)
    lr: float = 3e-4  # peak AdamW learning rate (high: only the top layers and head train)
    warmup_ratio: float = 0.1  # share of the steps spent warming the rate up linearly
    weight_decay: float = 0.01  # AdamW decoupled weight decay
    max_grad_norm: float = 1.0  # gradient clipping
    margin: float = 0.0  # Bradley–Terry margin: chosen must beat rejected by this much
    center_coef: float = 0.01  # weight of mean((r_c + r_r)²): keeps rewards near zero
    pointwise_coef: float = 0.5  # weight of the thumbs/flags term (labels, if any)
    freeze_embeddings: bool = True  # MiniLM: keep the embeddings (half its weights) fixed
    frozen_layers: int = 3  # MiniLM: also keep its lowest N of 6 transformer layers fixed
    lora_r: int = 16  # LoRA rank, for policy-lora
    eval_batch_size: int = 64  # sequences per batch when scoring
    seed: int = 0
    device: str | None = None  # default: CUDA when present, else CPU

    def to_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


@dataclass
class PPOConfig:
    """Every knob of a PPO run, with its default."""

    steps: int = 50  # PPO steps: one rollout of `batch_size` answers, then its updates
    batch_size: int = 16  # answers per rollout
    # > 1: answers per prompt, in groups; each answer's advantage is its reward minus the
    # mean of its group's others (RLOO), and the critic is not used. 1: GAE with the critic.
    answers_per_prompt: int = 1
    minibatch_size: int = 8  # answers per gradient step
    ppo_epochs: int = 4  # passes over each rollout
    learning_rate: float = 1e-4  # AdamW, for the LoRA weights and the value head
    max_prompt_tokens: int = 512  # longer prompts lose their beginning (the end is kept)
    max_new_tokens: int = 64  # answer length; an answer cut here gets the missing-EOS penalty
    temperature: float = 1.0  # sampling temperature (log-probs are taken at it too)
    beta: float = 0.05  # KL coefficient: reward −= β · (log π − log π_ref) per token
    kl_target: float | None = None  # set to adapt β (Ziegler et al.) towards this KL (k3, nats)
    kl_horizon: int = 10_000  # the adaptive controller's horizon, in answers
    kl_cap: float = 8.0  # hard cap on the mean per-answer KL (k3, nats): stop before it
    gamma: float = 1.0  # discount
    lam: float = 0.95  # GAE λ
    clip_range: float = 0.2  # policy ratio clipped to 1 ± this
    clip_range_value: float = 0.2  # values move at most this far from the rollout's per update
    vf_coef: float = 0.1  # weight of the value loss
    missing_eos_penalty: float = 1.0  # subtracted from the score of an answer without EOS
    max_grad_norm: float = 1.0  # gradient clipping
    lora_r: int = 16  # rank of a fresh adapter (a warm-started one keeps its own)
    lora_alpha: int = 32
    lora_dropout: float = 0.0  # ignored while training: dropout is off throughout
    lora_head: bool = True  # a fresh adapter adapts the LM head too (model_loading.lora_config)
    seed: int = 0  # seeds sampling, prompt order and initialisation: same seed, same run
    checkpoint_every: int = 10  # steps between checkpoints (when the caller keeps them)


@dataclass
class DPOConfig:
    """Every knob of a DPO run (offline and online), with its default."""

    beta: float = 0.1  # strength of the implicit KL penalty: rewards are β · log(π / π_ref)
    label_smoothing: float = 0.0  # cDPO: the share of labels assumed flipped (0 ≤ ε < 0.5)
    learning_rate: float = 1e-4  # AdamW, for the LoRA weights
    batch_size: int = 8  # pairs per gradient step
    max_length: int = 512  # prompt + answer tokens; the prompt loses its beginning first
    max_grad_norm: float = 1.0  # gradient clipping
    seed: int = 0  # seeds the batches' order (and online, prompts and sampling)
    epochs: int = 1  # offline: passes over the pairs
    steps: int = 20  # online: rounds of sampling, ranking and updating
    prompts_per_step: int = 8  # online: prompts sampled per step (one pair each at most)
    answers_per_prompt: int = 4  # online: ≥ 2; the best and the worst make the pair
    max_new_tokens: int = 64  # online: answer length
    temperature: float = 1.0  # online: sampling temperature (the KL is measured at it too)
    missing_eos_penalty: float = 1.0  # online: ranks down an answer cut at max_new_tokens
    kl_cap: float = 8.0  # online: hard cap on the mean per-answer KL (k3, nats): stop before it
