"""DPO's and SFT's math as pure tensor functions (no models, no state).

Shapes: B sequences (or pairs), T answer tokens, V vocabulary. A `mask` is 1.0 on an answer's
real tokens (up to and including its EOS) and 0.0 on the padding after them.
"""

import torch.nn.functional as F
from torch import Tensor

from trainer.rlhf.ppo_math import logprobs_from_logits, masked_sum


def sequence_logps(logits: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    """log π(answer | prompt): the sum of the answer tokens' log-probs.

    logits [B, T, V] (position t predicts labels[:, t]), labels [B, T], mask [B, T] -> [B].
    """
    return masked_sum(logprobs_from_logits(logits, labels), mask, dim=1)


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float,
    label_smoothing: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """The sigmoid DPO loss (Rafailov et al., 2023) per pair, with conservative label
    smoothing (cDPO, Mitchell 2023: each label is wrong with probability ε).

    With the implicit rewards r = β · (log π − log π_ref) of each answer and Δ = r_chosen −
    r_rejected: loss = −(1 − ε) · log σ(Δ) − ε · log σ(−Δ).

    Every input is a sequence log-prob sum, [B] -> (loss [B], chosen rewards [B], rejected
    rewards [B]); the rewards are detached (for logging: their difference is the margin).
    """
    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps)
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps)
    margin = chosen_rewards - rejected_rewards
    loss = -(1.0 - label_smoothing) * F.logsigmoid(margin) - label_smoothing * F.logsigmoid(-margin)
    return loss, chosen_rewards.detach(), rejected_rewards.detach()


def weighted_mean(values: Tensor, weights: Tensor | None = None) -> Tensor:
    """Σ w·x / Σ w over a batch, [B], [B] or None -> [] (the plain mean without weights)."""
    if weights is None:
        return values.mean()
    return (values * weights).sum() / weights.sum().clamp_min(1e-8)


def sft_loss(logprobs: Tensor, mask: Tensor, weights: Tensor | None = None) -> Tensor:
    """The supervised loss: the mean negative log-likelihood per answer token, each example's
    tokens weighted by its weight (a longer answer counts for more tokens, as in TRL's SFT).

    logprobs [B, T] (of the answer tokens; the prompt is not in them), mask [B, T],
    weights [B] or None -> [].
    """
    token_weights = mask if weights is None else mask * weights[:, None]
    return masked_sum(-logprobs, token_weights) / token_weights.sum().clamp_min(1e-8)
