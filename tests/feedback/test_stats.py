import pytest

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
