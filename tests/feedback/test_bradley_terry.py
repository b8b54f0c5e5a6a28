"""The Bradley–Terry fit: hand-computed cases, and intervals that cover known strengths on
simulated battles."""

import math

import numpy as np
import pytest

from feedback.bradley_terry import ELO_PER_LOGIT, fit_strengths, rate, win_matrix


def test_two_versions_fit_the_log_odds_of_their_record():
    # 3 wins to 1: P(1 beats 0) = 3/4, so θ1 − θ0 = ln 3, i.e. 400·log10(3) = 190.8 points.
    theta = fit_strengths(np.array([[0, 1], [3, 0]]), prior_sd=None)
    assert theta == pytest.approx([0.0, math.log(3)])
    # A prior this weak changes nothing visible; resamples where v1 won every battle
    # stay finite.
    ratings = rate(["base", "v1"], [(1, 0)] * 3 + [(0, 1)], [1, 1, 1, 1], prior_sd=1e3,
                   resamples=50)
    assert ratings.rating == pytest.approx([1000.0, 1000 + 400 * math.log10(3)], abs=0.01)
    assert np.isfinite(ratings.high).all()


def test_ties_count_half_to_each_side_and_the_anchor_is_fixed():
    # v1 vs base: one win, two ties → 2 wins to 1 in half-wins: θ1 = ln 2.
    pairs = np.array([(1, 0), (1, 0), (0, 1)])
    wins = win_matrix(pairs, np.array([1.0, 0.5, 0.5]), 2)
    assert wins.tolist() == [[0.0, 1.0], [2.0, 0.0]]  # wins[i, j]: i beat j
    theta = fit_strengths(wins, anchor=0, prior_sd=None)
    assert theta == pytest.approx([0.0, math.log(2)])
    anchored_on_v1 = fit_strengths(wins, anchor=1, prior_sd=None)
    assert anchored_on_v1 == pytest.approx([-math.log(2), 0.0])


def test_three_versions_in_a_cycle_of_equal_records_are_equal():
    wins = np.array([[0, 2, 1], [1, 0, 2], [2, 1, 0]])  # each beats the next 2 to 1
    assert fit_strengths(wins, prior_sd=None) == pytest.approx([0, 0, 0], abs=1e-9)


def test_a_perfect_record_stays_finite_with_the_prior():
    theta = fit_strengths(np.array([[0, 0], [5, 0]]))
    assert 0 < theta[1] < 20 and np.isfinite(theta).all()


def test_a_version_without_battles_and_no_prior_stays_at_zero():
    theta = fit_strengths(np.array([[0, 1, 0], [2, 0, 0], [0, 0, 0]]), prior_sd=None)
    assert theta[2] == 0 and theta[1] == pytest.approx(math.log(2))


def _simulate(true_elo: np.ndarray, battles: int, rng: np.random.Generator):
    k = len(true_elo)
    pairs = np.array([rng.choice(k, 2, replace=False) for _ in range(battles)])
    p_first = 1 / (1 + np.exp(-(true_elo[pairs[:, 0]] - true_elo[pairs[:, 1]]) / ELO_PER_LOGIT))
    draw = rng.random(battles)
    outcomes = np.where(draw < 0.1, 0.5, (draw - 0.1 < 0.9 * p_first).astype(float))
    return pairs, outcomes


def test_bootstrap_intervals_cover_the_true_strengths():
    """Five versions, the base (index 0) at 1000; 10 simulated leaderboards of 1200
    battles each (10% ties). Each 95% interval should cover the truth about 95% of the
    time: over the 40 intervals of the non-anchor versions at least 34 do (a binomial
    lower tail of < 1% at 95%), and every estimate is within 80 points."""
    true_elo = np.array([1000.0, 1080.0, 1150.0, 930.0, 1000.0])
    rng = np.random.default_rng(7)
    covered, total = 0, 0
    for trial in range(10):
        pairs, outcomes = _simulate(true_elo, 1200, rng)
        ratings = rate(list("abcde"), pairs, outcomes, resamples=200, seed=trial)
        assert ratings.rating[0] == 1000 and ratings.low[0] == ratings.high[0] == 1000
        assert np.abs(ratings.rating - true_elo).max() < 80
        assert (ratings.low <= ratings.rating).all() and (ratings.rating <= ratings.high).all()
        inside = (ratings.low[1:] <= true_elo[1:]) & (true_elo[1:] <= ratings.high[1:])
        covered += int(inside.sum())
        total += 4
    assert covered >= 34, f"{covered} of {total} intervals covered the truth"


def test_wider_levels_give_wider_intervals_and_bad_arguments_are_refused():
    pairs, outcomes = _simulate(np.array([1000.0, 1100.0]), 200, np.random.default_rng(0))
    narrow = rate(["a", "b"], pairs, outcomes, level=0.5, resamples=300)
    wide = rate(["a", "b"], pairs, outcomes, level=0.99, resamples=300)
    assert wide.high[1] - wide.low[1] > narrow.high[1] - narrow.low[1] > 0
    with pytest.raises(ValueError, match="level"):
        rate(["a", "b"], pairs, outcomes, level=1.0)
    with pytest.raises(ValueError, match="resamples"):
        rate(["a", "b"], pairs, outcomes, resamples=0)
