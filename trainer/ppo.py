"""PPO on a LoRA adapter, as DESIGN §5 describes: one readable recipe, `train_ppo`.

Each step samples answers to a batch of prompts with the policy (the adapter on), scores them
with the reward function, and takes the KL reference from the same model with the adapter off
(no second copy). The value head is one linear layer on the policy's last hidden state: it
shares the backbone and its LoRA, so one forward pass gives log-probs and values; its gradient
reaches the LoRA weights scaled by `vf_coef`. Answers are sampled with a KV cache that also
yields each token's log-prob and value, so the rollout needs no second forward pass. Dropout
stays off (the model stays in eval mode) so that the update sees the policy that sampled.

The value head, the optimizer's moments and the KL controller make up a `PPOState`: the cycle
stores the final one beside the adapter and hands it to the next cycle's PPO (a warm start
no longer restarts its critic from zero), and checkpoints hold it with the step and the
generators' states, so a killed run resumes exactly where it stopped. Every random draw
comes from generators the run owns, never from the process-wide RNG that a server in the
same process samples from. The math lives in `trainer.rlhf.ppo_math`.
"""

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from peft import PeftModel, get_peft_model
from torch import Tensor, nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from flywheel.adapter_store import AdapterStore
from flywheel.model_loading import init_lora_weights, lora_config
from trainer.configs import PPOConfig
from trainer.distributed import data_parallel
from trainer.rlhf.ppo_math import (
    KLController,
    clipped_policy_loss,
    clipped_value_loss,
    gae,
    kl_k1,
    kl_k3,
    leave_one_out_advantages,
    logprobs_from_logits,
    masked_mean,
    masked_sum,
    token_rewards,
)
from trainer.rollout import (
    KLCap,
    Messages,
    RewardFn,
    decode,
    encode_prompt,
    eos_ids,
    prompt_batches,
    sample,
)

logger = logging.getLogger(__name__)


class ValueHead(nn.Module):
    """V(s) per position from the last hidden state: [B, T, H] -> [B, T]; starts at 0."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.linear(hidden.float()).squeeze(-1)


@dataclass
class PPOState:
    """All of a PPO run but the adapter's weights. Handed to the next cycle (a warm start:
    the critic, the optimizer's moments and an adaptive β go on; steps and draws start
    anew) or kept in a checkpoint (a resume: `step`, `generators` and `metrics` too, so
    the run goes on exactly where it stopped)."""

    value_head: dict[str, Tensor]
    optimizer: dict[str, Any]
    beta: float
    step: int = 0  # steps done
    generators: dict[str, Tensor] = field(default_factory=dict)  # name -> state; resume only
    metrics: list[dict[str, float]] = field(default_factory=list)  # resume only


@dataclass
class PPOResult:
    model: PeftModel  # the policy, adapter "default" trained
    value_head: ValueHead
    metrics: list[dict[str, float]]  # one log per step (see `train_ppo`)
    stop_reason: str  # "steps" or "kl_cap"
    timings: dict[str, float] = field(default_factory=dict)  # seconds: generation, scoring, update
    state: PPOState | None = None  # for the next cycle's warm start


def prepare_policy(
    model: PreTrainedModel,
    config: PPOConfig,
    *,
    store: AdapterStore | None = None,
    warm_start: str | None = None,
) -> PeftModel:
    """The trainable policy: adapter `warm_start` from `store` (e.g. the live one), else a
    fresh LoRA. Either way it is the "default" adapter; the base model stays frozen."""
    if warm_start is not None:
        if store is None:
            raise ValueError("warm_start needs an adapter store")
        logger.info("warm start from adapter %s", warm_start)
        return store.load(model, warm_start, adapter_name="default", is_trainable=True)
    lora = lora_config(model, r=config.lora_r, alpha=config.lora_alpha,
                       dropout=config.lora_dropout, head=config.lora_head)
    policy = get_peft_model(model, lora)
    init_lora_weights(policy, seed=config.seed)  # LoRA's A matrices are random
    return policy


def train_ppo(
    policy: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[Messages],
    reward_fn: RewardFn,
    config: PPOConfig,
    *,
    on_step: Callable[[dict[str, float]], None] | None = None,
    state: PPOState | None = None,
    checkpoint: Callable[[PPOState], None] | None = None,
) -> PPOResult:
    """Run PPO; returns the trained policy and one log per step. `state` warm-starts the
    critic, optimizer and β from an earlier run, or resumes one (a checkpoint's state);
    `checkpoint` is handed the state every `config.checkpoint_every` steps, after the
    update (the policy's weights are then the adapter's to save with it).

    Each log holds: step, score (reward model, mean), reward (centred score − penalty −
    β·KL, per answer), kl and kl_k3 (per answer, nats, policy vs reference), beta, entropy
    (per token), response_length, eos_fraction, policy_loss, value_loss, clip_fraction,
    value_clip_fraction, approx_kl (rollout vs updated policy). At the KL cap the step
    before it is restored and the run stops (its log has stopped = 1).
    """
    if not prompts:
        raise ValueError("PPO needs at least one prompt")
    per_prompt = config.answers_per_prompt
    if per_prompt < 1 or config.batch_size % per_prompt:
        raise ValueError(f"batch_size {config.batch_size} is not a whole number of groups of "
                         f"answers_per_prompt {per_prompt}")
    device = next(policy.parameters()).device
    policy.eval()
    value_head = ValueHead(policy.config.hidden_size).to(device)
    trainable = [p for p in policy.parameters() if p.requires_grad] + list(value_head.parameters())
    dp = data_parallel()  # on N processes: each rolls out its part of a batch (distributed.py)
    dp.sync_parameters(trainable)
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=0.0)
    controller = KLController(config.beta, target=config.kl_target, horizon=config.kl_horizon)
    generators = {"sampling": torch.Generator(device).manual_seed(config.seed),
                  "minibatches": torch.Generator().manual_seed(config.seed + 1)}
    metrics: list[dict[str, float]] = []
    if state is not None:
        value_head.load_state_dict(state.value_head)
        optimizer.load_state_dict(state.optimizer)
        for group in optimizer.param_groups:  # the recipe's rate, not the saved one
            group["lr"] = config.learning_rate
        if config.kl_target is not None:  # an adaptive β goes on; a fixed one is the recipe's
            controller.beta = state.beta
        for name, saved in state.generators.items():  # a resume: the same draws
            generators[name].set_state(saved)
        metrics = list(state.metrics)
    first_step = len(metrics) if state is not None and state.generators else 0
    prompt_ids = [encode_prompt(tokenizer, p, config.max_prompt_tokens) for p in prompts]
    order = prompt_batches(len(prompts), config.batch_size // per_prompt,
                           torch.Generator().manual_seed(config.seed))
    for _ in range(first_step):  # the batches the resumed run already trained on
        next(order)
    eos = eos_ids(policy, tokenizer)
    timings = {"generation": 0.0, "scoring": 0.0, "update": 0.0}
    stop_reason = "steps"
    kl_cap = KLCap(trainable, config.kl_cap)

    def current_state(*, resumable: bool) -> PPOState:
        return PPOState(
            value_head={k: v.detach().clone() for k, v in value_head.state_dict().items()},
            optimizer=copy.deepcopy(optimizer.state_dict()), beta=controller.beta,
            step=len(metrics),
            generators={k: g.get_state() for k, g in generators.items()} if resumable else {},
            metrics=list(metrics) if resumable else [])

    for step in range(first_step, config.steps):
        batch = [i for i in next(order) for _ in range(per_prompt)]  # each prompt per_prompt times
        groups = dp.part(len(batch) // per_prompt)  # this rank's prompts of the global batch
        part = slice(groups.start * per_prompt, groups.stop * per_prompt)
        # 1. Rollout: sample answers with the policy (adapter on), keeping each token's
        #    log-prob, entropy and value as it is sampled.
        started = time.perf_counter()
        with torch.no_grad():
            rollout = sample(policy, [prompt_ids[i] for i in batch[part]], eos=eos,
                             pad_id=tokenizer.pad_token_id, max_new_tokens=config.max_new_tokens,
                             temperature=config.temperature,
                             generator=dp.sampling_generator(generators["sampling"], step),
                             value_head=value_head)
        sequences, attention = rollout.batch.sequences, rollout.batch.attention
        prompt_len, mask = rollout.batch.prompt_len, rollout.batch.mask
        logprobs, values, entropy = rollout.logprobs, rollout.values, rollout.entropy
        scoring_started = time.perf_counter()
        timings["generation"] += scoring_started - started

        # 2. Score: reference log-probs (the same model, adapter off) and the reward.
        with torch.no_grad():
            with policy.disable_adapter():
                ref_logprobs, _ = _forward(policy, None, sequences, attention, prompt_len,
                                           config)
            responses = rollout.batch.answers
            completions = decode(tokenizer, rollout.batch, eos)
            scores = reward_fn([prompts[i] for i in batch[part]], completions).to(device).float()
        has_eos = torch.isin(responses.gather(1, mask.sum(1, keepdim=True).long() - 1),
                             eos).squeeze(1)
        # Scores centred on the batch's mean: the critic starts at zero, and a reward whose
        # mean sits far from it (a raw preference, a reward model without normalisation)
        # would otherwise flood the shared LoRA with value-loss gradients and wreck the
        # policy in a few steps. A shift of every score by one constant now changes nothing.
        centred = scores - dp.mean(scores)
        penalised = centred - config.missing_eos_penalty * (~has_eos).float()
        kl = kl_k1(logprobs, ref_logprobs) * mask
        seq_kl = dp.mean(kl.sum(1))  # figures over every rank's answers
        seq_k3 = dp.mean(masked_sum(kl_k3(logprobs, ref_logprobs), mask, dim=1))
        rewards = token_rewards(penalised, kl, mask, controller.beta)
        if per_prompt > 1:  # the whole answer's return, less its group's others': every token
            baselined = leave_one_out_advantages(rewards.sum(1).view(-1, per_prompt)).view(-1)
            advantages, returns = baselined[:, None] * mask, values
        else:
            advantages, returns = gae(rewards, values, mask, gamma=config.gamma, lam=config.lam)
        advantages = dp.whiten(advantages, mask)
        log = {"step": step, "score": dp.mean(scores), "reward": dp.mean(rewards.sum(1)),
               "kl": seq_kl, "kl_k3": seq_k3, "beta": controller.beta,
               "entropy": dp.masked_mean(entropy, mask),
               "response_length": dp.mean(mask.sum(1)),
               "eos_fraction": dp.mean(has_eos.float())}
        timings["scoring"] += time.perf_counter() - scoring_started

        # 3. Hard KL cap: this policy went too far; go back to the last one within the cap.
        if kl_cap.went_over(seq_k3, step):
            metrics.append({**log, "stopped": 1.0})
            if on_step:
                on_step(metrics[-1])
            stop_reason = "kl_cap"
            break

        # 4. Update: several epochs of clipped policy + value losses over shuffled minibatches.
        update_started = time.perf_counter()
        stats: dict[str, list[float]] = {k: [] for k in (
            "policy_loss", "value_loss", "clip_fraction", "value_clip_fraction", "approx_kl")}
        for _ in range(config.ppo_epochs):
            splits = torch.randperm(len(batch), generator=generators["minibatches"]
                                    ).split(config.minibatch_size)
            for mb, share in dp.minibatches(splits, mask.sum(1)):  # share: of the token mean
                new_logprobs, new_values = _forward(policy, value_head, sequences[mb],
                                                    attention[mb], prompt_len, config)
                m = mask[mb]
                pg_loss, clip_fraction = clipped_policy_loss(
                    new_logprobs, logprobs[mb], advantages[mb], m, config.clip_range)
                vf_loss, value_clip_fraction = clipped_value_loss(
                    new_values, values[mb], returns[mb], m, config.clip_range_value)
                optimizer.zero_grad(set_to_none=True)
                vf_weight = config.vf_coef if per_prompt == 1 else 0.0  # RLOO needs no critic
                (share * (pg_loss + vf_weight * vf_loss)).backward()
                dp.sync_gradients(trainable)
                torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
                optimizer.step()
                approx_kl = masked_mean(0.5 * (new_logprobs - logprobs[mb]) ** 2, m)
                for key, value in zip(stats, dp.shares(share, (pg_loss, vf_loss, clip_fraction,
                                              value_clip_fraction, approx_kl)), strict=True):
                    stats[key].append(value)
        controller.update(seq_k3, len(batch))
        timings["update"] += time.perf_counter() - update_started
        metrics.append({**log, **{k: sum(v) / len(v) for k, v in stats.items()}})
        if on_step:
            on_step(metrics[-1])
        if checkpoint and (step + 1) % config.checkpoint_every == 0 and step + 1 < config.steps:
            checkpoint(current_state(resumable=True))
    return PPOResult(policy, value_head, metrics, stop_reason, timings,
                     current_state(resumable=False))


# -- the pieces -----------------------------------------------------------------------------


def _forward(policy, value_head, sequences, attention, prompt_len, config):
    """Answer-token log-probs [B, T] and values [B, T] (None without a value head)."""
    positions = (attention.cumsum(1) - 1).clamp(min=0)
    answer_len = sequences.shape[1] - prompt_len
    out = policy(input_ids=sequences, attention_mask=attention, position_ids=positions,
                 output_hidden_states=value_head is not None, logits_to_keep=answer_len + 1,
                 use_cache=False)
    logits = out.logits[:, :-1] / config.temperature
    logprobs = logprobs_from_logits(logits, sequences[:, prompt_len:])
    values = None
    if value_head is not None:
        values = value_head(out.hidden_states[-1][:, prompt_len - 1 : -1])
    return logprobs, values
