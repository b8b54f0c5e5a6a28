"""The Bradley–Terry model of side-by-side battles, fitted by maximum likelihood, with
bootstrap intervals (as Chatbot Arena ranks models).

Each version i has a strength θ_i and P(i beats j) = sigmoid(θ_i − θ_j). A tie (and a
"both bad" verdict, which says nothing about which was better) counts half a win to each
side. Strengths are shown on the Elo scale, `rating = anchor + 400 · θ / ln 10`, so that 400
points mean 10-to-1 odds; the anchor version (the base model) is fixed at θ = 0, i.e. at
`anchor` points. A weak Gaussian prior (θ ~ N(0, prior_sd²), on the logit scale) keeps a
version that won or lost every battle (or every battle of a resample) finite; with
`prior_sd=None` the fit is the plain maximum likelihood, which then does not exist.

Intervals: resample the battles with replacement (as many as there were), refit, and
take the percentile interval of each version's rating over the resamples.
"""

import math
from dataclasses import dataclass

import numpy as np

ELO_PER_LOGIT = 400 / math.log(10)


@dataclass(frozen=True)
class Ratings:
    versions: list[str]
    rating: np.ndarray  # (k,) Elo points, the anchor at `anchor_rating`
    low: np.ndarray  # (k,) the interval's bounds
    high: np.ndarray  # (k,)
    level: float  # e.g. 0.95
    resamples: int


def fit_strengths(wins: np.ndarray, *, anchor: int = 0, prior_sd: float | None = 4.0,
                  iterations: int = 100, tolerance: float = 1e-10) -> np.ndarray:
    """Maximum-likelihood (MAP with the prior) Bradley–Terry strengths.

    wins: (k, k) wins[i, j] = how often i beat j (ties already split half and half).
    Returns θ: (k,) in logits, θ[anchor] = 0. Newton's method on the other k − 1
    strengths; the log-likelihood Σ wins[i, j] · log sigmoid(θ_i − θ_j) is concave, so it
    converges from θ = 0. A version with no battles (and no prior) is left at 0.
    """
    wins = np.asarray(wins, dtype=float)
    k = wins.shape[0]
    games = wins + wins.T  # (k, k)
    free = np.array([i != anchor and (prior_sd is not None or games[i].sum() > 0)
                     for i in range(k)])
    precision = 0.0 if prior_sd is None else 1.0 / prior_sd**2
    theta = np.zeros(k)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(theta[None, :] - theta[:, None]))  # (k, k) P(i beats j)
        gradient = (wins - games * p).sum(axis=1) - precision * theta  # (k,)
        weight = games * p * (1 - p)  # (k, k)
        hessian = weight - np.diag(weight.sum(axis=1) + precision)  # (k, k), negative def.
        step = np.linalg.solve(hessian[np.ix_(free, free)], gradient[free])
        theta[free] -= step
        if np.abs(step).max(initial=0.0) < tolerance:
            break
    return theta


def win_matrix(pairs: np.ndarray, outcomes: np.ndarray, k: int,
               counts: np.ndarray | None = None) -> np.ndarray:
    """Battles to a win matrix.

    pairs: (n, 2) indices of the two versions in each battle; outcomes: (n,) the first's
    score, 1 (won), 0 (lost) or 0.5 (tie); counts: (n,) how many times each battle
    counts (a bootstrap draw), 1 by default. Returns wins: (k, k)."""
    counts = np.ones(len(pairs)) if counts is None else counts
    wins = np.zeros((k, k))
    np.add.at(wins, (pairs[:, 0], pairs[:, 1]), counts * outcomes)
    np.add.at(wins, (pairs[:, 1], pairs[:, 0]), counts * (1 - outcomes))
    return wins


def rate(versions: list[str], pairs: np.ndarray, outcomes: np.ndarray, *, anchor: int = 0,
         anchor_rating: float = 1000.0, level: float = 0.95, resamples: int = 1000,
         prior_sd: float | None = 4.0, seed: int = 0) -> Ratings:
    """Elo-scale ratings of `versions` from n battles, with `level` bootstrap intervals
    over `resamples` resamples of the battles (see the module doc).

    pairs: (n, 2) indices into `versions`; outcomes: (n,) 1, 0 or 0.5 for the first one.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must lie between 0 and 1, not {level}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, not {resamples}")
    pairs = np.asarray(pairs, dtype=int).reshape(-1, 2)
    outcomes = np.asarray(outcomes, dtype=float)
    k, n = len(versions), len(pairs)
    to_elo = lambda theta: anchor_rating + ELO_PER_LOGIT * theta  # noqa: E731
    point = to_elo(fit_strengths(win_matrix(pairs, outcomes, k), anchor=anchor,
                                 prior_sd=prior_sd))
    # Resampling n battles is drawing n from the distinct (pair, outcome) cells in
    # proportion to their counts: the same law, at the cost of the cells, not the battles.
    cells, weights = np.unique(np.column_stack([pairs, outcomes]), axis=0, return_counts=True)
    rng = np.random.default_rng(seed)
    draws = np.empty((resamples, k))
    for r in range(resamples):
        counts = rng.multinomial(n, weights / n) if n else np.zeros(0)
        draws[r] = to_elo(fit_strengths(
            win_matrix(cells[:, :2].astype(int), cells[:, 2], k, counts),
            anchor=anchor, prior_sd=prior_sd))
    tail = (1 - level) / 2
    low, high = np.quantile(draws, [tail, 1 - tail], axis=0)  # (k,) each
    return Ratings(list(versions), point, low, high, level, resamples)
