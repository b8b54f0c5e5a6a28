"""Reward-model math as pure tensor functions (DESIGN §5): Bradley–Terry loss, pairwise
accuracy, a pointwise term for thumbs, and calibration.

Shapes: `B` is the number of pairs (or labelled answers) in a batch.
"""

import torch
import torch.nn.functional as F


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor, *,
                       margin: torch.Tensor | float = 0.0, center_coef: float = 0.0,
                       weight: torch.Tensor | None = None) -> torch.Tensor:
    """`-logsigmoid(r_chosen - r_rejected - margin)`, averaged over pairs (weighted by
    `weight` when given), plus `center_coef · mean((r_chosen + r_rejected)²)`, which keeps
    rewards centred on zero (Eisenstein et al., 2023).

    chosen, rejected: [B] rewards; margin: scalar or [B]; weight: [B] or None. Returns [].
    """
    per_pair = -F.logsigmoid(chosen - rejected - margin)
    if weight is None:
        loss = per_pair.mean()
    else:
        loss = (per_pair * weight).sum() / weight.sum().clamp_min(1e-8)
    if center_coef:
        loss = loss + center_coef * ((chosen + rejected) ** 2).mean()
    return loss


def pointwise_loss(rewards: torch.Tensor, labels: torch.Tensor,
                   weight: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy of `sigmoid(reward)` against good (1) / bad (0) labels: what a
    lone thumb says about one answer.

    rewards: [B]; labels: [B] in {0, 1}; weight: [B] or None. Returns [].
    """
    per_item = F.binary_cross_entropy_with_logits(rewards, labels.to(rewards.dtype),
                                                  reduction="none")
    if weight is None:
        return per_item.mean()
    return (per_item * weight).sum() / weight.sum().clamp_min(1e-8)


def pairwise_accuracy(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Share of pairs ranked right; a tie counts as half right.

    chosen, rejected: [B]. Returns [] (NaN for B = 0).
    """
    right = (chosen > rejected).float() + 0.5 * (chosen == rejected).float()
    return right.mean()


def expected_calibration_error(chosen: torch.Tensor, rejected: torch.Tensor, *,
                               bins: int = 10) -> torch.Tensor:
    """How far the Bradley–Terry probability `sigmoid(r_chosen - r_rejected)` is from the
    observed frequency. Each pair is read as a prediction for the side the model favours,
    with confidence `max(p, 1 - p)` in [0.5, 1]; the confidences are binned into `bins`
    equal-width bins and the ECE is `Σ_bins (n_bin / B) · |accuracy_bin − confidence_bin|`.

    chosen, rejected: [B]. Returns [] (0 for B = 0).
    """
    p = torch.sigmoid((chosen - rejected).float())
    confidence = torch.maximum(p, 1 - p)
    correct = (p > 0.5).float()
    # Map [0.5, 1] onto bins 0 … bins-1 (a confidence of exactly 1 goes in the last bin).
    index = ((confidence - 0.5) * 2 * bins).long().clamp(0, bins - 1)
    ece = torch.zeros((), dtype=torch.float32)
    for b in range(bins):
        members = index == b
        if members.any():
            gap = (correct[members].mean() - confidence[members].mean()).abs()
            ece = ece + members.float().mean() * gap
    return ece
