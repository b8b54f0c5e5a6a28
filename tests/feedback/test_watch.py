"""The watch's statistics on hand-computed cases: degenerate answers, the z-tests, the
alarm's and the rollback's verdicts, and the score file."""

import math
import os

import pytest

from feedback.watch import (
    ALARM_MIN_SAMPLES,
    append_scores,
    is_empty_or_degenerate,
    read_scores,
    reward_hacking,
    rollback_due,
    scores_path,
    two_proportion_z,
    upper_tail,
    welch_z,
    win_share_z,
)


@pytest.mark.parametrize(("text", "degenerate"), [
    ("", True), ("   \n", True),
    ("it is kind and odd, that is what i think about my cat.", False),
    ("cat cat cat", False),  # short: not called degenerate
    ("the the the the the the the cat", True),  # 2 distinct of 8 words
    ("a b a b a b a b a b", True),  # 2 of 10
    ("a b c a b c a b", False),  # 3 of 8 = 37.5%
])
def test_empty_or_degenerate(text, degenerate):
    assert is_empty_or_degenerate(text) is degenerate


def test_the_z_statistics():
    # 30/100 against 50/100: pooled 0.4, se = sqrt(0.4 · 0.6 · 0.02) = 0.069282.
    assert two_proportion_z(30, 100, 50, 100) == pytest.approx(-0.2 / math.sqrt(0.0048))
    assert two_proportion_z(0, 0, 5, 10) == 0.0 and two_proportion_z(5, 5, 3, 3) == 0.0
    # Means 2 and 1, variances 1 and 1, n = 3 each: se = sqrt(2/3).
    assert welch_z([1, 2, 3], [0, 1, 2]) == pytest.approx(1 / math.sqrt(2 / 3))
    assert welch_z([1.0, 1.0], [0.0, 0.0]) == math.inf and welch_z([1.0], [0.0, 1.0]) == 0
    assert win_share_z(60, 40, 0) == pytest.approx(2.0)  # (0.6 − 0.5) / sqrt(0.25 / 100)
    assert win_share_z(50, 30, 20) == pytest.approx(2.0)  # ties half: 60 of 100
    assert upper_tail(0.0) == 0.5 and upper_tail(1.6448536) == pytest.approx(0.05)


HIGH = [1.0 + 0.1 * (i % 5) for i in range(40)]  # mean 1.2
LOW = [0.0 + 0.1 * (i % 5) for i in range(40)]  # mean 0.2


def test_the_alarm_rings_when_the_reward_rises_and_people_do_not_agree():
    verdict = reward_hacking(scores=HIGH, predecessor_scores=LOW, thumbs=(20, 50),
                             predecessor_thumbs=(30, 50), battle=(10, 20, 5))
    assert verdict.raised and verdict.p_value < 1e-6
    assert "thumbs-up rate p = " in verdict.reason and "side-by-side win rate" in verdict.reason


def test_no_alarm_when_people_agree_or_the_reward_did_not_rise_or_too_few_votes():
    agreed = reward_hacking(scores=HIGH, predecessor_scores=LOW, thumbs=(45, 50),
                            predecessor_thumbs=(25, 50), battle=None)
    assert not agreed.raised and "so do people (thumbs-up rate" in agreed.reason
    won = reward_hacking(scores=HIGH, predecessor_scores=LOW, thumbs=(0, 0),
                         predecessor_thumbs=(0, 0), battle=(30, 10, 0))
    assert not won.raised and "side-by-side win rate" in won.reason
    flat = reward_hacking(scores=LOW, predecessor_scores=LOW, thumbs=(5, 50),
                          predecessor_thumbs=(45, 50), battle=None)
    assert not flat.raised and "does not score it higher" in flat.reason
    unheard = reward_hacking(scores=HIGH, predecessor_scores=LOW, thumbs=(1, 5),
                             predecessor_thumbs=(4, 5), battle=(1, 2, 0))
    assert not unheard.raised and "too few votes" in unheard.reason
    unscored = reward_hacking(scores=HIGH[:ALARM_MIN_SAMPLES - 1], predecessor_scores=LOW,
                              thumbs=(0, 50), predecessor_thumbs=(50, 50), battle=None)
    assert not unscored.raised and "too few scored answers" in unscored.reason


def test_rollback_is_due_only_on_a_significant_fall_with_enough_votes():
    fell = rollback_due(thumbs=(30, 100), predecessor_thumbs=(50, 100), min_votes=50,
                        alpha=0.01)
    assert fell.raised and fell.p_value == pytest.approx(upper_tail(0.2 / math.sqrt(0.0048)))
    assert "30.0% of 100 against 50.0% of 100" in fell.reason
    slight = rollback_due(thumbs=(45, 100), predecessor_thumbs=(50, 100), min_votes=50,
                          alpha=0.01)
    assert not slight.raised and "not significantly lower" in slight.reason
    few = rollback_due(thumbs=(0, 20), predecessor_thumbs=(50, 100), min_votes=50, alpha=0.01)
    assert not few.raised and "too few rated answers" in few.reason


def test_scores_append_and_read_back_privately(tmp_path):
    path = scores_path(tmp_path, "rm-0002")
    assert path == tmp_path / "watch" / "scores-rm-0002.jsonl" and read_scores(path) == {}
    append_scores(path, {3: 0.25, 4: -1.5})
    append_scores(path, [(5, 2.0)])
    with path.open("a") as f:
        f.write('{"message_id": 6, "sco')  # a write cut short
    assert read_scores(path) == {3: 0.25, 4: -1.5, 5: 2.0}
    assert os.stat(path).st_mode & 0o777 == 0o600
