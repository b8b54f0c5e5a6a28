import math

import pytest
import torch

from feedback.stats import paired_mean_ci, win_rate


def test_win_rate_counts_a_tie_as_half_a_win():
    result = win_rate(3, 1, 2)
    assert result.rate == pytest.approx((3 + 1) / 6)
    assert result.n == 6


def test_win_rate_interval_contains_the_estimate_and_narrows_with_more_battles():
    small, large = win_rate(7, 3), win_rate(700, 300)
    for r in (small, large):
        assert r.low <= r.rate <= r.high
    assert (large.high - large.low) < (small.high - small.low) / 5
    assert large.low > 0.65 and large.high < 0.75


def test_win_rate_of_one_sided_battles_has_a_degenerate_interval():
    assert win_rate(5, 0) == win_rate(5, 0, 0)
    result = win_rate(5, 0)
    assert (result.rate, result.low, result.high) == (1.0, 1.0, 1.0)


def test_win_rate_with_nothing_decided_is_unknown():
    result = win_rate(0, 0)
    assert result.rate is None and result.n == 0


def test_win_rate_is_reproducible_for_a_seed():
    assert win_rate(12, 9, 3, seed=4) == win_rate(12, 9, 3, seed=4)


def test_paired_mean_ci():
    mean, low, high = paired_mean_ci([1.0, 1.0, 1.0])
    assert (mean, low, high) == (1.0, 1.0, 1.0)
    mean, low, high = paired_mean_ci([-1.0, 1.0] * 50)
    assert mean == 0 and low < 0 < high
    with pytest.raises(ValueError):
        paired_mean_ci([])


def test_win_rate_interval_matches_the_normal_approximation_for_many_battles():
    result = win_rate(5000, 3000, 2000)  # p = 0.6; outcomes 1, 0, ½ with shares .5 .3 .2
    spread = math.sqrt((0.5 * 0.4 ** 2 + 0.3 * 0.6 ** 2 + 0.2 * 0.1 ** 2) / 10_000)
    assert result.low == pytest.approx(0.6 - 1.96 * spread, abs=0.002)
    assert result.high == pytest.approx(0.6 + 1.96 * spread, abs=0.002)


def test_paired_mean_ci_matches_the_normal_approximation_and_a_seed_repeats_it():
    deltas = [float(i % 7) for i in range(5000)]  # mean 3 (nearly), std 2
    mean, low, high = paired_mean_ci(deltas, level=0.9)
    assert low == pytest.approx(mean - 1.645 * 2 / math.sqrt(5000), abs=0.01)
    assert high == pytest.approx(mean + 1.645 * 2 / math.sqrt(5000), abs=0.01)
    assert paired_mean_ci(deltas, seed=3) == paired_mean_ci(deltas, seed=3)


def test_the_bootstraps_leave_the_global_generator_alone():
    before = torch.random.get_rng_state()
    win_rate(12, 9, 3)
    paired_mean_ci([0.5, -0.2, 1.0])
    assert torch.equal(torch.random.get_rng_state(), before)
