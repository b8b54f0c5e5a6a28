"""DPO on a LoRA adapter (Rafailov et al., 2023), offline and online: two readable recipes,
`train_dpo` and `train_online_dpo`.

Offline DPO trains on the collected preference pairs. Online DPO (Guo et al., 2024) makes its
own: each step samples several answers to each prompt from the current policy, ranks them with
the reward model and trains on the best against the worst.

The reference is the same model with the adapter switched off (no second copy). Offline, it is
frozen and the pairs are fixed, so its log-probs are computed once, up front, and each step
needs only the policy's forward and backward pass. Online, the reference scores each step's
fresh answers in one pass that also measures the policy's KL to it, so the cycle's hard KL cap
applies as it does to PPO. Dropout stays off (the model stays in eval mode); every random draw
comes from generators the run owns, never from the process-wide RNG. The loss is
`trainer.rlhf.dpo_math.dpo_loss`.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from peft import PeftModel
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from trainer.configs import DPOConfig
from trainer.data import Pair
from trainer.distributed import ONE_PROCESS, DataParallel, data_parallel
from trainer.rlhf.dpo_math import dpo_loss, weighted_mean
from trainer.rlhf.ppo_math import kl_k1, kl_k3, masked_mean, masked_sum
from trainer.rollout import (
    Batch,
    KLCap,
    Messages,
    RewardFn,
    answer_logprobs,
    decode,
    encode_exchange,
    encode_prompt,
    eos_ids,
    fit,
    make_batch,
    prompt_batches,
    sample,
)


@dataclass
class DPOResult:
    model: PeftModel  # the policy, adapter "default" trained
    metrics: list[dict[str, float]]  # one log per step (see the recipes)
    stop_reason: str = "steps"  # "steps", or online "kl_cap"
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase


def train_dpo(
    policy: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: list[Pair],
    config: DPOConfig,
    *,
    on_step: Callable[[dict[str, float]], None] | None = None,
) -> DPOResult:
    """DPO on fixed pairs, weighted by `Pair.weight`; returns the policy and one log per step.

    Each log holds: step, epoch, loss (weighted, before the step's update), margin (chosen −
    rejected implicit reward, mean), accuracy (share of pairs with a positive margin),
    chosen_reward and rejected_reward (means).
    """
    if not pairs:
        raise ValueError("DPO needs at least one pair")
    started = time.perf_counter()
    device = next(policy.parameters()).device
    policy.eval()
    eos = eos_ids(policy, tokenizer)
    encoded = [_encode_pair(tokenizer, pair, eos, config.max_length) for pair in pairs]
    weights = torch.tensor([pair.weight for pair in pairs], device=device)

    def pair_batch(rows: list[int]) -> Batch:  # the chosen answers, then the rejected ones
        prompts = [encoded[i][0] for i in rows]
        return make_batch(prompts * 2, [encoded[i][1] for i in rows] +
                          [encoded[i][2] for i in rows], tokenizer.pad_token_id, device)

    # 1. The reference's log-probs, once: it is frozen and the pairs are fixed. On N
    #    processes each rank takes its part of the pairs, and they swap results.
    dp = data_parallel()
    mine = torch.arange(len(pairs))[dp.part(len(pairs), allow_empty=True)]
    ref_chosen, ref_rejected = torch.empty(len(mine)), torch.empty(len(mine))
    with torch.no_grad(), policy.disable_adapter():
        for rows in torch.arange(len(mine)).split(config.batch_size):
            chosen, rejected = _logps(policy, pair_batch(mine[rows].tolist())).cpu().chunk(2)
            ref_chosen[rows], ref_rejected[rows] = chosen, rejected
    ref_chosen, ref_rejected = dp.gather_rows(ref_chosen), dp.gather_rows(ref_rejected)
    ref_chosen, ref_rejected = ref_chosen.to(device), ref_rejected.to(device)
    timings = {"reference": time.perf_counter() - started, "update": 0.0}

    # 2. Epochs of shuffled batches: the policy's log-probs (adapter on), the loss, a step.
    #    On N processes each rank trains on its part of every batch (trainer/distributed.py).
    trainable = [p for p in policy.parameters() if p.requires_grad]
    dp.sync_parameters(trainable)
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=0.0)
    order = torch.Generator().manual_seed(config.seed)
    metrics: list[dict[str, float]] = []
    for epoch in range(config.epochs):
        for batch in torch.randperm(len(pairs), generator=order).split(config.batch_size):
            update_started = time.perf_counter()
            mine = batch[dp.part(len(batch), allow_empty=True)]
            share = (dp.world_size * weights[mine.to(device)].sum()
                     / weights[batch.to(device)].sum().clamp_min(1e-8)).item()
            rows = mine if len(mine) else batch[:1]  # a rank without rows runs one, share 0
            chosen, rejected = _logps(policy, pair_batch(rows.tolist())).chunk(2)
            rows = rows.to(device)
            log = _update(optimizer, trainable, config, chosen, rejected, ref_chosen[rows],
                          ref_rejected[rows], weights[rows], share=share, dp=dp,
                          counted=len(mine) > 0)
            timings["update"] += time.perf_counter() - update_started
            metrics.append({"step": len(metrics), "epoch": epoch, **log})
            if on_step:
                on_step(metrics[-1])
    return DPOResult(policy, metrics, "steps", timings)


def train_online_dpo(
    policy: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[Messages],
    reward_fn: RewardFn,
    config: DPOConfig,
    *,
    on_step: Callable[[dict[str, float]], None] | None = None,
) -> DPOResult:
    """Online DPO: per step, `answers_per_prompt` answers to each of `prompts_per_step`
    prompts, sampled from the current policy and scored by `reward_fn`; the best and the
    worst answer to each prompt make a pair (unless they score the same), then DPO updates
    the policy on those pairs (in batches of `batch_size`).

    Each log holds: step, score (reward model, mean over all sampled answers), kl and kl_k3
    (per answer, nats, policy vs reference on the sampled answers at the sampling
    temperature: k1 and k3, as PPO logs them; k3 drives the cap), entropy (per token),
    response_length, eos_fraction, pairs (made this step), loss, margin, accuracy, chosen_reward and
    rejected_reward (as in `train_dpo`; 0 when every prompt's answers tied). At the KL cap
    the policy of the step before is restored and the run stops (its log has stopped = 1).
    """
    if not prompts:
        raise ValueError("online DPO needs at least one prompt")
    if config.answers_per_prompt < 2:
        raise ValueError("online DPO needs at least 2 answers per prompt to make a pair")
    if data_parallel().world_size > 1:
        raise ValueError("online DPO runs on one process (PPO, DPO and the reward model run "
                         "on several)")
    device = next(policy.parameters()).device
    policy.eval()
    eos = eos_ids(policy, tokenizer)
    prompt_ids = [encode_prompt(tokenizer, p, max(1, config.max_length - config.max_new_tokens))
                  for p in prompts]
    trainable = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=0.0)
    order = prompt_batches(len(prompts), config.prompts_per_step,
                           torch.Generator().manual_seed(config.seed))
    generators = {"sampling": torch.Generator(device).manual_seed(config.seed + 1),
                  "batches": torch.Generator().manual_seed(config.seed + 2)}
    k = config.answers_per_prompt
    timings = {"generation": 0.0, "scoring": 0.0, "update": 0.0}
    metrics: list[dict[str, float]] = []
    stop_reason = "steps"
    kl_cap = KLCap(trainable, config.kl_cap)
    for step in range(config.steps):
        batch_prompts = next(order)
        # 1. Sample k answers to each prompt with the policy (adapter on).
        started = time.perf_counter()
        with torch.no_grad():
            rollout = sample(policy, [prompt_ids[i] for i in batch_prompts for _ in range(k)],
                             eos=eos, pad_id=tokenizer.pad_token_id,
                             max_new_tokens=config.max_new_tokens,
                             temperature=config.temperature, generator=generators["sampling"])
        answers = rollout.batch
        scoring_started = time.perf_counter()
        timings["generation"] += scoring_started - started

        # 2. Score them, and take the reference's log-probs (adapter off): at temperature 1
        #    for DPO, at the sampling temperature for the KL (the same pass when they agree).
        with torch.no_grad():
            completions = decode(tokenizer, answers, eos)
            scores = reward_fn([prompts[i] for i in batch_prompts for _ in range(k)],
                               completions).to(device).float()
            with policy.disable_adapter():
                ref_logprobs = answer_logprobs(policy, answers)
                ref_sampled = (ref_logprobs if config.temperature == 1.0 else
                               answer_logprobs(policy, answers, config.temperature))
        has_eos = torch.isin(answers.answers, eos).any(1)
        kl = masked_sum(kl_k3(rollout.logprobs, ref_sampled), answers.mask, dim=1).mean().item()
        log = {"step": step, "score": scores.mean().item(),
               "kl": masked_sum(kl_k1(rollout.logprobs, ref_sampled), answers.mask, dim=1
                                ).mean().item(), "kl_k3": kl,
               "entropy": masked_mean(rollout.entropy, answers.mask).item(),
               "response_length": answers.mask.sum(1).mean().item(),
               "eos_fraction": has_eos.float().mean().item()}
        timings["scoring"] += time.perf_counter() - scoring_started

        # 3. Hard KL cap: this policy went too far; go back to the last one within the cap.
        if kl_cap.went_over(kl, step):
            metrics.append({**log, "stopped": 1.0})
            if on_step:
                on_step(metrics[-1])
            stop_reason = "kl_cap"
            break

        # 4. Pairs: the best against the worst answer to each prompt, unless they tie (an
        #    answer without EOS ranks as if it scored `missing_eos_penalty` less).
        update_started = time.perf_counter()
        grouped = (scores - config.missing_eos_penalty * (~has_eos).float()).view(-1, k)
        best, worst = grouped.argmax(1), grouped.argmin(1)
        untied = (grouped.amax(1) > grouped.amin(1)).nonzero().squeeze(1)
        offsets = untied * k
        chosen_rows, rejected_rows = offsets + best[untied], offsets + worst[untied]
        ref_seq = masked_sum(ref_logprobs, answers.mask, dim=1)
        updates: list[dict[str, float]] = []
        parts = torch.randperm(len(untied), generator=generators["batches"]
                               ).split(config.batch_size) if len(untied) else ()
        for part in parts:
            part = part.to(device)
            rows = torch.cat([chosen_rows[part], rejected_rows[part]])
            chosen, rejected = _logps(policy, answers[rows]).chunk(2)
            updates.append(_update(optimizer, trainable, config, chosen, rejected,
                                   ref_seq[chosen_rows[part]], ref_seq[rejected_rows[part]]))
        timings["update"] += time.perf_counter() - update_started
        log["pairs"] = float(len(untied))
        for key in ("loss", "margin", "accuracy", "chosen_reward", "rejected_reward"):
            log[key] = sum(u[key] for u in updates) / len(updates) if updates else 0.0
        metrics.append(log)
        if on_step:
            on_step(log)
    return DPOResult(policy, metrics, stop_reason, timings)


# -- the pieces -----------------------------------------------------------------------------


def _encode_pair(tokenizer, pair: Pair, eos: Tensor, max_length: int
                 ) -> tuple[list[int], list[int], list[int]]:
    """(prompt, chosen, rejected) token ids, cut to `max_length` with one shared prompt."""
    prompt, chosen = encode_exchange(tokenizer, pair.prompt, pair.chosen, eos)
    _, rejected = encode_exchange(tokenizer, pair.prompt, pair.rejected, eos)
    prompt, (chosen, rejected) = fit(prompt, [chosen, rejected], max_length)
    return prompt, chosen, rejected


def _logps(policy: PeftModel, batch: Batch) -> Tensor:
    """log π(answer | prompt) per sequence, [B]."""
    return masked_sum(answer_logprobs(policy, batch), batch.mask, dim=1)


def _update(optimizer, trainable, config: DPOConfig, chosen: Tensor, rejected: Tensor,
            ref_chosen: Tensor, ref_rejected: Tensor, weights: Tensor | None = None, *,
            share: float = 1.0, dp: DataParallel = ONE_PROCESS, counted: bool = True
            ) -> dict[str, float]:
    """One gradient step on the DPO loss of a batch of pairs; returns its figures. On N
    processes these are this rank's pairs of a global batch, `share` scales its loss (see
    `DataParallel.minibatches`), and the figures are the global batch's; a rank that only
    stands in (not `counted`) adds nothing to them."""
    losses, chosen_rewards, rejected_rewards = dpo_loss(
        chosen, rejected, ref_chosen, ref_rejected, beta=config.beta,
        label_smoothing=config.label_smoothing)
    loss = weighted_mean(losses, weights)
    optimizer.zero_grad(set_to_none=True)
    (share * loss).backward()
    dp.sync_gradients(trainable)
    torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
    optimizer.step()
    kept = slice(None) if counted else slice(0)
    chosen_rewards, rejected_rewards = chosen_rewards[kept], rejected_rewards[kept]
    margin = chosen_rewards - rejected_rewards
    return {"loss": dp.shares(share, [loss])[0], "margin": dp.mean(margin),
            "accuracy": dp.mean((margin > 0).float()),
            "chosen_reward": dp.mean(chosen_rewards),
            "rejected_reward": dp.mean(rejected_rewards)}
