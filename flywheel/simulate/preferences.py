"""Preference functions: what a simulated user likes.

A preference is any function `score(prompt: str, answer: str) -> float` (higher is
better), named as `module:function` (e.g. `flywheel.simulate.preferences:kindness`, or
`mypackage.prefs:helpfulness` for your own). The same module may offer, by name:

* `<function>_rewrite(prompt, answer) -> str | None`: a better answer, which users post
  as a rewrite of answers they dislike (None: no rewrite);
* `<function>_flag(prompt, answer) -> str | None`: a flag category (`harmful`,
  `hateful`, ..., `other`) for an answer bad enough to flag (None: no flag);
* `<function>_prompt(rng: random.Random) -> str`: what users ask (default: the demo
  corpus's "Tell me about the weather." questions).

Without them, users only vote. The built-ins speak the demo model's little language
(`flywheel.demo_corpus`): `kindness` (kind words minus unkind words, with a rewrite that
swaps unkind words for kind ones and a `harmful` flag for an answer with two unkind
words), `contrast` (a taste that cuts across kind, unkind and neutral words), `topical`
(the wanted words depend on the topic asked about), `length` (more words) and `brevity`
(fewer words).
"""

import importlib
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from flywheel import demo_corpus
from flywheel.errors import import_function

Score = Callable[[str, str], float]


@dataclass(frozen=True)
class Preference:
    """A loaded preference: its score and the optional helpers (module doc)."""

    name: str
    score: Score
    rewrite: Callable[[str, str], str | None] | None = None
    flag: Callable[[str, str], str | None] | None = None
    prompt: Callable[[random.Random], str] = demo_corpus.user_prompt


def load_preference(spec: str | Score) -> Preference:
    """`module:function` (or a function) as a Preference, with the helpers its module
    offers. Raises FlywheelError for a spec that names nothing callable."""
    if callable(spec):
        module, name = importlib.import_module(spec.__module__), spec.__name__
        score = spec
    else:
        module, name, score = import_function(spec, what="a preference")
    helpers = {kind: getattr(module, f"{name}_{kind}", None)
               for kind in ("rewrite", "flag", "prompt")}
    return Preference(name=f"{module.__name__}:{name}", score=score,
                      rewrite=helpers["rewrite"], flag=helpers["flag"],
                      prompt=helpers["prompt"] or demo_corpus.user_prompt)


# -- the built-ins ---------------------------------------------------------------------


def kindness(prompt: str, answer: str) -> float:
    """Kind words minus unkind words (the demo corpus's preference)."""
    return float(demo_corpus.kindness(answer))


def kindness_rewrite(prompt: str, answer: str) -> str | None:
    """The answer with each unkind word swapped for a kind one (None if it has none)."""
    kind = iter(demo_corpus.KIND_WORDS * 4)
    pattern = r"\b(" + "|".join(demo_corpus.UNKIND_WORDS) + r")\b"
    better = re.sub(pattern, lambda _: next(kind), answer, flags=re.IGNORECASE)
    return better if better != answer else None


def kindness_flag(prompt: str, answer: str) -> str | None:
    return "harmful" if demo_corpus.kindness(answer) <= -2 else None


def length(prompt: str, answer: str) -> float:
    """More words is better."""
    return float(len(answer.split()))


def brevity(prompt: str, answer: str) -> float:
    """Fewer words is better (an empty answer is not)."""
    words = len(answer.split())
    return -float(words) if words else -100.0


# A taste that ignores the kind/unkind/neutral split: some of each are liked, some disliked.
CONTRAST_LIKED = ("wonderful", "happy", "angry", "stupid", "quiet", "odd")
CONTRAST_DISLIKED = ("helpful", "great", "rude", "boring", "busy", "late")


def contrast(prompt: str, answer: str) -> float:
    """Liked words minus disliked words, each set a mix of kind, unkind and neutral ones."""
    words = demo_corpus.words(answer)
    return float(sum(w in CONTRAST_LIKED for w in words)
                 - sum(w in CONTRAST_DISLIKED for w in words))


def contrast_rewrite(prompt: str, answer: str) -> str | None:
    return _swap(answer, CONTRAST_DISLIKED, CONTRAST_LIKED)


def topical_words(prompt: str) -> tuple[str, ...]:
    """The four adjectives wanted for the topic the prompt asks about (any four of the
    demo's adjectives, fixed per topic; none for a prompt about no known topic)."""
    topic = next((t for t in demo_corpus.TOPICS if t in prompt.lower()), None)
    if topic is None:
        return ()
    return tuple(random.Random(f"topical:{topic}").sample(demo_corpus.ADJECTIVES, 4))


def topical(prompt: str, answer: str) -> float:
    """How many of the answer's words are the ones wanted for the prompt's topic."""
    wanted = topical_words(prompt)
    return float(sum(w in wanted for w in demo_corpus.words(answer)))


def topical_rewrite(prompt: str, answer: str) -> str | None:
    wanted = topical_words(prompt)
    unwanted = tuple(w for w in demo_corpus.ADJECTIVES if w not in wanted)
    return _swap(answer, unwanted, wanted) if wanted else None


def _swap(answer: str, unwanted: tuple[str, ...], wanted: tuple[str, ...]) -> str | None:
    """The answer with each unwanted word swapped for a wanted one (None if it has none)."""
    replacement = iter(wanted * 4)
    pattern = r"\b(" + "|".join(unwanted) + r")\b"
    better = re.sub(pattern, lambda _: next(replacement), answer, flags=re.IGNORECASE)
    return better if better != answer else None
