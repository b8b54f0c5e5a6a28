"""What a judge says, read from its reply, and every pair judged in both orders.

A judge compares two answers to a prompt (verdict `a`, `b` or `tie`) or rates one answer
(`good` or `bad`). A chat model's reply is free text: `parse_verdict` reads the verdicts
that judges actually write ("A", "[[B]]", "**Answer A**", "Verdict: tie", "Good.") and
returns None for anything else — nonsense is a parse failure, never a vote.

Judges favour whichever answer is shown first, so `judge_pair` asks twice, the second
time with the answers swapped; when the two verdicts disagree (once mapped back to the
same answers) the pair is a tie and counts as a position flip.
"""

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class Verdict(StrEnum):
    a = "a"  # the first answer shown is better
    b = "b"
    tie = "tie"
    good = "good"  # one answer, rated
    bad = "bad"


PAIR_VERDICTS = (Verdict.a, Verdict.b, Verdict.tie)
SINGLE_VERDICTS = (Verdict.good, Verdict.bad)
SWAPPED = {Verdict.a: Verdict.b, Verdict.b: Verdict.a, Verdict.tie: Verdict.tie}

_WORDS = {"a": Verdict.a, "b": Verdict.b, "tie": Verdict.tie, "draw": Verdict.tie,
          "equal": Verdict.tie, "good": Verdict.good, "bad": Verdict.bad,
          "yes": Verdict.good, "no": Verdict.bad}
_LABELLED = re.compile(
    r"\b(?:verdict|answer|winner|choice|better|rating|label)\s*(?:is|:|-|=)?\s*"
    r"(a|b|tie|good|bad)\b")


def parse_verdict(text: str, *, single: bool = False) -> Verdict | None:
    """The verdict in a judge's reply: a pair's (`a`, `b`, `tie`) or, with `single`, one
    answer's (`good`, `bad`). None when the reply says none of them plainly."""
    allowed = SINGLE_VERDICTS if single else PAIR_VERDICTS
    plain = re.sub(r"[*_`\"'\[\]()]", " ", text.lower()).strip()
    words = re.findall(r"[a-z]+", plain)
    if not words:
        return None
    if len(words) == 1 or (len(words) <= 3 and words[0] in ("answer", "verdict")):
        verdict = _WORDS.get(words[-1])
        return verdict if verdict in allowed else None
    labelled = [_WORDS[m] for m in _LABELLED.findall(plain) if _WORDS[m] in allowed]
    if labelled and len(set(labelled)) == 1:
        return labelled[0]
    # "A. It is kinder." — a verdict first, then the reasons.
    first = re.match(r"^([a-z]+)\s*[.:,;!\-]", plain)
    verdict = _WORDS.get(first.group(1)) if first else None
    return verdict if verdict in allowed and first.group(1) not in ("yes", "no") else None


@dataclass
class Reply:
    """One call to a judge: its verdict (None: a parse failure) and what it cost."""

    verdict: Verdict | None
    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class JudgeStats:
    """What a judge did: calls, tokens, time, parse failures and position flips."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    parse_failures: int = 0
    pairs: int = 0  # pairs judged in both orders
    flips: int = 0  # ... whose two verdicts disagreed (counted as a tie)
    singles: int = 0  # single answers rated

    def summary(self) -> dict:
        return {"calls": self.calls, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "mean_latency_ms": round(1000 * self.seconds / self.calls, 1)
                if self.calls else None,
                "parse_failures": self.parse_failures, "pairs": self.pairs,
                "position_flips": self.flips,
                "position_flip_rate": round(self.flips / self.pairs, 4) if self.pairs else None,
                "singles": self.singles}


def timed_call(ask: Callable[..., Reply], stats: JudgeStats, *args: str) -> Verdict | None:
    """Call a judge once, counting the call, its tokens, time and a parse failure."""
    start = time.perf_counter()
    reply = ask(*args)
    stats.seconds += time.perf_counter() - start
    stats.calls += 1
    stats.prompt_tokens += reply.prompt_tokens
    stats.completion_tokens += reply.completion_tokens
    if reply.verdict is None:
        stats.parse_failures += 1
    return reply.verdict


def judge_pair(judge, prompt: str, first: str, second: str,
               stats: JudgeStats) -> Verdict | None:
    """`a` (first is better), `b` or `tie`, from the judge asked in both orders; a tie when
    the orders disagree (a position flip); None when either reply was a parse failure."""
    shown = timed_call(judge.ask_pair, stats, prompt, first, second)
    if shown is None:
        return None
    swapped = timed_call(judge.ask_pair, stats, prompt, second, first)
    if swapped is None:
        return None
    stats.pairs += 1
    if SWAPPED[swapped] == shown:
        return shown
    stats.flips += 1
    return Verdict.tie


def judge_single(judge, prompt: str, answer: str, stats: JudgeStats) -> Verdict | None:
    """`good` or `bad` for one answer; None for a parse failure."""
    verdict = timed_call(judge.ask_single, stats, prompt, answer)
    if verdict is not None:
        stats.singles += 1
    return verdict
