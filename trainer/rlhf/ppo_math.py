"""PPO's math as pure tensor functions (no models, no state but the KL controller).

Shapes: B sequences, T response tokens, V vocabulary. A `mask` is 1.0 on the response's real
tokens (up to and including its EOS) and 0.0 on the padding after them.
"""

import torch
from torch import Tensor


def logprobs_from_logits(logits: Tensor, labels: Tensor) -> Tensor:
    """log p(label) per position: logits [B, T, V], labels [B, T] -> [B, T]."""
    logits = logits.float()
    picked = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def entropy_from_logits(logits: Tensor) -> Tensor:
    """The entropy of the softmax at each position: [B, T, V] -> [B, T]."""
    logits = logits.float()
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(-1)


def kl_k1(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """Per-token k1 estimate of KL(policy || ref) on tokens sampled from the policy:
    log π − log π_ref, [B, T] -> [B, T]. Unbiased, can be negative; this one goes into the reward.
    """
    return logprobs - ref_logprobs


def kl_k3(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """Per-token k3 estimate (Schulman): (r − 1) − log r with r = π_ref / π, [B, T] -> [B, T].
    Unbiased, never negative, lower variance than k1: logged, and drives the cap and adaptive β.
    """
    log_ratio = ref_logprobs - logprobs
    return torch.expm1(log_ratio) - log_ratio


def masked_sum(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Sum of `values` where `mask` is 1 (over `dim`, else over everything)."""
    return (values * mask).sum() if dim is None else (values * mask).sum(dim)


def masked_mean(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of `values` where `mask` is 1 (over `dim`, else over everything)."""
    return masked_sum(values, mask, dim) / mask.sum(dim).clamp(min=1.0)


def masked_var(values: Tensor, mask: Tensor) -> Tensor:
    """Unbiased variance of the masked entries (a scalar); 0 for fewer than two of them."""
    mean = masked_mean(values, mask)
    count = mask.sum()
    if count < 2:
        return torch.zeros((), dtype=values.dtype, device=values.device)
    return masked_sum((values - mean) ** 2, mask) / (count - 1)


def whiten(values: Tensor, mask: Tensor, *, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """Scale the masked entries to unit variance (and zero mean unless `shift_mean` is False).

    [B, T] -> [B, T]; masked-out entries come back as 0.
    """
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def token_rewards(scores: Tensor, kl: Tensor, mask: Tensor, beta: float) -> Tensor:
    """The per-token reward: −β·kl on every response token, plus the sequence's score on its
    last real token. scores [B], kl [B, T], mask [B, T] -> [B, T]."""
    rewards = -beta * kl * mask
    last = (mask.sum(1).long() - 1).clamp(min=0)
    rows = torch.arange(len(scores), device=scores.device)
    rewards[rows, last] += scores.to(rewards.dtype)
    return rewards


def gae(
    rewards: Tensor, values: Tensor, mask: Tensor, *, gamma: float, lam: float
) -> tuple[Tensor, Tensor]:
    """Generalized advantage estimation over masked sequences.

    rewards, values, mask [B, T] -> (advantages [B, T], returns [B, T]). The value after the last
    real token is 0 (the episode ends there); returns = advantages + values. Both are 0 where
    `mask` is 0.
    """
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    next_value = torch.zeros_like(rewards[:, 0])
    next_mask = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value * next_mask - values[:, t]
        running = delta + gamma * lam * running * next_mask
        advantages[:, t] = running
        next_value, next_mask = values[:, t], mask[:, t]
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def leave_one_out_advantages(rewards: Tensor) -> Tensor:
    """RLOO (Ahmadian et al. 2024): each answer's reward minus the mean reward of the other
    answers to the same prompt, an unbiased baseline that needs no critic.

    rewards [G, K] (G prompts, K ≥ 2 answers each) -> advantages [G, K]."""
    k = rewards.shape[1]
    if k < 2:
        raise ValueError("leave-one-out needs at least two answers per prompt")
    others = (rewards.sum(1, keepdim=True) - rewards) / (k - 1)
    return rewards - others


def clipped_policy_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, clip_range: float
) -> tuple[Tensor, Tensor]:
    """PPO's clipped surrogate: mean over masked tokens of max(−A·ρ, −A·clip(ρ, 1±ε)).

    All [B, T] -> (loss [], clip fraction []: the share of tokens where the clipped term won).
    """
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clip_fraction = masked_mean((clipped > unclipped).float(), mask)
    return loss, clip_fraction


def clipped_value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip_range: float
) -> tuple[Tensor, Tensor]:
    """½ · mean over masked tokens of max((V − R)², (V_clipped − R)²), where V_clipped stays
    within ε of the rollout's values. All [B, T] -> (loss [], clip fraction [])."""
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    unclipped_error = (values - returns) ** 2
    clipped_error = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_error, clipped_error), mask)
    clip_fraction = masked_mean((clipped_error > unclipped_error).float(), mask)
    return loss, clip_fraction


class KLController:
    """The KL coefficient β: fixed, or adaptive (Ziegler et al. 2019) when `target` is set.

    The adaptive rule moves β by the proportional error e = clip(KL/target − 1, ±0.2):
    β ← β · (1 + e · n / horizon), after n more samples.
    """

    def __init__(self, beta: float, *, target: float | None = None, horizon: int = 10_000):
        self.beta = beta
        self.target = target
        self.horizon = horizon

    def update(self, kl: float, n_samples: int) -> float:
        """Feed the KL measured on the last `n_samples` sequences; returns the new β."""
        if self.target is not None:
            error = min(max(kl / self.target - 1.0, -0.2), 0.2)
            self.beta *= 1.0 + error * n_samples / self.horizon
        return self.beta
