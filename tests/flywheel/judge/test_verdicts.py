"""Reading verdicts from judges' replies, and every pair judged in both orders."""

import pytest

from flywheel.judge.verdicts import (
    JudgeStats,
    Reply,
    Verdict,
    judge_pair,
    judge_single,
    parse_verdict,
)


@pytest.mark.parametrize(("reply", "verdict"), [
    ("A", Verdict.a), ("b", Verdict.b), (" [[B]] ", Verdict.b), ("**Answer A**", Verdict.a),
    ("Verdict: tie", Verdict.tie), ("A. It is kinder.", Verdict.a),
    ("The better answer is B, because A is rude.", Verdict.b),
    ("Answer B is better.", Verdict.b), ("Tie", Verdict.tie),
])
def test_verdicts_judges_write_are_read(reply, verdict):
    assert parse_verdict(reply) == verdict


@pytest.mark.parametrize("reply", [
    "", "   ", "it is kind and odd, that is what i think about my cat.", "a a b a",
    "Answer A or answer B", "good", "I cannot decide between them", "A and B are both",
])
def test_nonsense_is_no_verdict(reply):
    assert parse_verdict(reply) is None


def test_single_answers_are_good_or_bad():
    assert parse_verdict("Good.", single=True) == Verdict.good
    assert parse_verdict("rating: bad", single=True) == Verdict.bad
    assert parse_verdict("yes", single=True) == Verdict.good
    assert parse_verdict("A", single=True) is None
    assert parse_verdict("good", single=False) is None


class Scripted:
    """A judge that says, call after call, what it is told to."""

    def __init__(self, *said: str | None, tokens: int = 3) -> None:
        self.said, self.calls, self.tokens = list(said), [], tokens

    def ask_pair(self, prompt, first, second):
        self.calls.append((first, second))
        said = self.said.pop(0)
        return Reply(None if said is None else Verdict(said), said or "???", self.tokens, 1)

    def ask_single(self, prompt, answer):
        return self.ask_pair(prompt, answer, "")


@pytest.mark.parametrize(("shown", "swapped", "verdict", "flips"), [
    ("a", "b", Verdict.a, 0),  # the first answer wins in both orders
    ("b", "a", Verdict.b, 0),
    ("a", "a", Verdict.tie, 1),  # it picks whatever is shown first: a position flip
    ("b", "b", Verdict.tie, 1),
    ("tie", "tie", Verdict.tie, 0),
    ("a", "tie", Verdict.tie, 1),
])
def test_each_pair_is_judged_in_both_orders(shown, swapped, verdict, flips):
    judge, stats = Scripted(shown, swapped), JudgeStats()
    assert judge_pair(judge, "q", "one", "two", stats) == verdict
    assert judge.calls == [("one", "two"), ("two", "one")]
    assert (stats.pairs, stats.flips, stats.calls) == (1, flips, 2)
    assert (stats.prompt_tokens, stats.completion_tokens) == (6, 2)


def test_a_parse_failure_is_no_vote():
    stats = JudgeStats()
    assert judge_pair(Scripted(None), "q", "one", "two", stats) is None
    assert judge_pair(Scripted("a", None), "q", "one", "two", stats) is None
    assert judge_single(Scripted(None), "q", "one", stats) is None
    assert (stats.parse_failures, stats.pairs, stats.calls, stats.singles) == (3, 0, 4, 0)
    assert judge_single(Scripted("good"), "q", "one", stats) == Verdict.good
    summary = stats.summary()
    assert summary["parse_failures"] == 3 and summary["singles"] == 1
    assert summary["position_flip_rate"] is None and summary["calls"] == 5
