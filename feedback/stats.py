"""Small statistics shared by the trainer (offline evaluation) and the server (the live
win rate operators see): win rates with bootstrap confidence intervals."""

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class WinRate:
    rate: float | None  # None when nothing was decided
    low: float | None
    high: float | None
    n: int


def win_rate(wins: int, losses: int, ties: int = 0, *, level: float = 0.95,
             resamples: int = 2000, seed: int = 0) -> WinRate:
    """Bradley–Terry win probability of A over B with a percentile bootstrap interval.

    For two models the Bradley–Terry maximum-likelihood estimate of P(A beats B) is the
    share of wins, a tie counting half to each. The interval resamples the n outcomes.
    """
    n = wins + losses + ties
    if n == 0:
        return WinRate(None, None, None, 0)
    outcomes = [1.0] * wins + [0.0] * losses + [0.5] * ties
    rng = random.Random(seed)
    estimates = sorted(sum(rng.choices(outcomes, k=n)) / n for _ in range(resamples))
    tail = (1 - level) / 2
    low = estimates[int(tail * (resamples - 1))]
    high = estimates[int((1 - tail) * (resamples - 1))]
    return WinRate((wins + 0.5 * ties) / n, low, high, n)


def paired_mean_ci(deltas: list[float], *, level: float = 0.95, resamples: int = 2000,
                   seed: int = 0) -> tuple[float, float, float]:
    """Mean of paired differences with a percentile bootstrap interval: (mean, low, high)."""
    if not deltas:
        raise ValueError("no differences to summarise")
    rng = random.Random(seed)
    n = len(deltas)
    means = sorted(sum(rng.choices(deltas, k=n)) / n for _ in range(resamples))
    tail = (1 - level) / 2
    return (sum(deltas) / n, means[int(tail * (resamples - 1))],
            means[int((1 - tail) * (resamples - 1))])
