"""A local model as judge, by the log-probabilities of its verdicts (the demo model, its
logits steered to the verdict wanted)."""

from pathlib import Path

import pytest

from flywheel.judge.local import LogprobJudge
from flywheel.judge.rubric import load_rubric
from flywheel.judge.verdicts import JudgeStats, Verdict, judge_pair, judge_single
from flywheel.model_loading import load_model
from tests.flywheel.judge.steering import Steering, kind_verdict

KIND = "it is kind and wonderful, that is what i think about my cat."
UNKIND = "it is rude and stupid, that is what i think about my cat."


@pytest.fixture(scope="module")
def judged(models_dir: Path):
    loaded = load_model("demo", models_dir=models_dir)
    return LogprobJudge(loaded.model, loaded.tokenizer, rubric=load_rubric(),
                        name="demo"), Steering(loaded)


def test_the_likelier_verdict_wins(judged):
    judge, steering = judged
    steering.decide = kind_verdict
    stats = JudgeStats()
    assert judge_pair(judge, "Tell me about my cat.", KIND, UNKIND, stats) == Verdict.a
    assert judge_pair(judge, "Tell me about my cat.", UNKIND, KIND, stats) == Verdict.b
    assert judge_single(judge, "Tell me about my cat.", KIND, stats) == Verdict.good
    assert judge_single(judge, "Tell me about my cat.", UNKIND, stats) == Verdict.bad
    assert (stats.flips, stats.parse_failures, stats.completion_tokens) == (0, 0, 0)
    assert stats.prompt_tokens > 6 * 50
    reply = judge.ask_pair("Tell me about my cat.", KIND, UNKIND)
    assert reply.text.startswith("a: ") and ", b: " in reply.text


def test_a_model_that_favours_a_position_ties(judged):
    judge, steering = judged
    steering.decide = lambda text: "a" if "[ answer a ]" in text else "good"
    stats = JudgeStats()
    assert judge_pair(judge, "Tell me about my cat.", KIND, UNKIND, stats) == Verdict.tie
    assert stats.flips == 1


def test_within_the_margin_it_is_a_tie(judged):
    judge, steering = judged
    steering.decide = kind_verdict
    wide = LogprobJudge(judge.model, judge.tokenizer, rubric=judge.rubric, tie_margin=1e6)
    assert wide.ask_pair("q", KIND, UNKIND).verdict == Verdict.tie
    assert wide.ask_single("q", KIND).verdict == Verdict.good  # one answer never ties
