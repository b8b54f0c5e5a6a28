"""The built-in judge functions have the quality they claim."""

import pytest

from flywheel.errors import FlywheelError
from flywheel.judge.functions import FunctionJudge, agreeing, always_a, coin, kindness_80
from flywheel.judge.verdicts import JudgeStats, Verdict, judge_pair

KIND = "it is kind and wonderful, that is what i think about my cat."
UNKIND = "it is rude and stupid, that is what i think about my cat."


def _pairs(n):
    return [(f"Tell me about thing {i}.", f"{KIND} {i}", f"{UNKIND} {i}") for i in range(n)]


def test_an_agreeing_judge_agrees_as_often_as_told():
    said = [kindness_80(q, kind, unkind) for q, kind, unkind in _pairs(1000)]
    assert 0.76 < said.count("a") / len(said) < 0.84
    assert set(said) == {"a", "b"}
    assert kindness_80("q", "same", "same") == "tie"
    assert kindness_80("q", KIND, KIND) == kindness_80("q", KIND, KIND)  # deterministic
    perfect = agreeing("flywheel.simulate.preferences:kindness", 1.0)
    assert perfect("q", KIND) == "good" and perfect("q", UNKIND) == "bad"


def test_swapping_orders_turns_a_biased_judge_into_ties():
    judge, stats = FunctionJudge(always_a), JudgeStats()
    verdicts = [judge_pair(judge, q, a, b, stats) for q, a, b in _pairs(20)]
    assert verdicts == [Verdict.tie] * 20 and stats.flips == 20
    judge, stats = FunctionJudge("flywheel.judge.functions:kindness_80"), JudgeStats()
    verdicts = [judge_pair(judge, q, a, b, stats) for q, a, b in _pairs(500)]
    # Right in both orders 0.64, wrong in both 0.04, a flip (tie) otherwise.
    assert 0.58 < verdicts.count(Verdict.a) / 500 < 0.70
    assert verdicts.count(Verdict.b) / 500 < 0.08
    assert 0.26 < stats.flips / stats.pairs < 0.38


def test_a_coin_is_fair():
    said = [coin(q, a, b) for q, a, b in _pairs(1000)]
    assert 0.45 < said.count("a") / 1000 < 0.55
    assert {coin("q", str(i)) for i in range(20)} == {"good", "bad"}


def test_a_function_that_answers_nonsense_is_a_parse_failure():
    judge, stats = FunctionJudge(lambda prompt, a, b=None: "maybe"), JudgeStats()
    assert judge_pair(judge, "q", "one", "two", stats) is None
    assert FunctionJudge(lambda prompt, a, b=None: 7).ask_single("q", "one").verdict is None
    assert stats.parse_failures == 1


@pytest.mark.parametrize(("spec", "message"), [
    ("nocolon", "module:function"), ("no.such.module:x", "cannot import"),
    ("flywheel.judge.functions:missing", "has no function"),
])
def test_bad_judge_names_are_refused(spec, message):
    with pytest.raises(FlywheelError, match=message):
        FunctionJudge(spec)
