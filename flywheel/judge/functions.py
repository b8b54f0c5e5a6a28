"""Judges as functions, for studying the loop with a judge of known quality.

A judge function is `judge(prompt: str, a: str, b: str | None = None) -> str`, named as
`module:function` (like the simulated crowd's preferences): given two answers it returns
"a", "b" or "tie"; given one (`b` is None) it returns "good" or "bad". Anything else it
returns is a parse failure, not a vote. Functions are called once per order shown (the
runner swaps the answers), so a function that favours a position is caught like a model.

The built-ins, each deterministic in its arguments (the same call, the same verdict):

* `always_a`: the first answer shown, and every single answer good;
* `coin`: a fair coin;
* `kindness_80`, `kindness_60`: agrees with the simulated crowd's `kindness` preference
  with probability 0.8 (0.6), else says the opposite; `agreeing(preference, p)` makes such
  a judge for any preference.
"""

import hashlib
import random
from collections.abc import Callable

from flywheel.errors import import_function
from flywheel.judge.verdicts import Reply, parse_verdict
from flywheel.simulate.preferences import load_preference

JudgeFunction = Callable[[str, str, str | None], str]


def always_a(prompt: str, a: str, b: str | None = None) -> str:
    return "good" if b is None else "a"


def coin(prompt: str, a: str, b: str | None = None) -> str:
    heads = _rng("coin", prompt, a, b).random() < 0.5
    if b is None:
        return "good" if heads else "bad"
    return "a" if heads else "b"


def agreeing(preference: str, p: float) -> JudgeFunction:
    """A judge that gives the verdict of `preference` (`module:function`, a score) with
    probability `p` and the opposite one otherwise. A single answer is good when its score
    is above zero."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], not {p}")
    score = load_preference(preference).score

    def judge(prompt: str, a: str, b: str | None = None) -> str:
        right = _rng(preference, p, prompt, a, b).random() < p
        if b is None:
            return "good" if (score(prompt, a) > 0) == right else "bad"
        first, second = score(prompt, a), score(prompt, b)
        if first == second:
            return "tie"
        return "a" if (first > second) == right else "b"

    judge.__name__ = f"agreeing_{p:g}"
    return judge


kindness_80 = agreeing("flywheel.simulate.preferences:kindness", 0.8)
kindness_60 = agreeing("flywheel.simulate.preferences:kindness", 0.6)


def _rng(*parts: object) -> random.Random:
    seed = hashlib.sha256(repr(parts).encode()).digest()[:8]
    return random.Random(int.from_bytes(seed, "big"))


class FunctionJudge:
    """A judge function (or `module:function`) as a judge (`flywheel.judge.verdicts`)."""

    def __init__(self, function: str | JudgeFunction) -> None:
        self.function = load_judge_function(function) if isinstance(function, str) \
            else function
        self.name = function if isinstance(function, str) else function.__name__

    def ask_pair(self, prompt: str, first: str, second: str) -> Reply:
        return self._reply(self.function(prompt, first, second), single=False)

    def ask_single(self, prompt: str, answer: str) -> Reply:
        return self._reply(self.function(prompt, answer, None), single=True)

    @staticmethod
    def _reply(said: object, *, single: bool) -> Reply:
        text = said if isinstance(said, str) else repr(said)
        return Reply(parse_verdict(text, single=single) if isinstance(said, str) else None,
                     text)


def load_judge_function(spec: str) -> JudgeFunction:
    """The function named `module:function`. Raises FlywheelError for one that names
    nothing callable."""
    return import_function(spec, what="a judge function")[2]
