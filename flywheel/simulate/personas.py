"""Who the simulated users are, and how each one votes.

* **honest** users score answers with the preference plus a taste of their own (a
  per-user `shift` times a fixed, per-user hash of the answer in [−1, 1]: the same user
  always judges the same answer alike, different users disagree a little). They pick A
  over B with Bradley–Terry noise, P(better) = sigmoid(|s_A − s_B| / temperature) (equal
  scores: a coin, sometimes a tie); give a thumb up when score + Gaussian noise is above
  their threshold; rewrite some answers they dislike and flag the worst.
* **careless** users click without reading, in one of three styles: `always_a` (always
  pick A; random thumbs), `always_up` (always thumb up; random picks) or `random`.
* **adversarial** users vote like honest ones on the inverted preference (they never
  rewrite or flag).

Every draw comes from the user's own `random.Random`, so a seed fixes every decision.
"""

import hashlib
import math
import random
from dataclasses import dataclass

from flywheel.simulate.preferences import Preference

HONEST, CARELESS, ADVERSARIAL = "honest", "careless", "adversarial"
CARELESS_STYLES = ("always_a", "always_up", "random")


@dataclass(frozen=True)
class Persona:
    kind: str  # honest, careless or adversarial
    style: str | None = None  # careless only: always_a, always_up or random
    temperature: float = 0.5  # Bradley–Terry noise of picks
    shift: float = 0.3  # weight of the user's own taste against the preference
    threshold: float = 0.0  # thumbs up above this score
    noise: float = 0.5  # standard deviation of the noise on thumbs
    rewrite_rate: float = 0.3  # chance to rewrite a disliked answer (when a rewrite exists)
    flag_rate: float = 0.7  # chance to flag an answer the preference would flag
    taste_seed: int = 0

    def score(self, preference: Preference, prompt: str, answer: str) -> float:
        score = preference.score(prompt, answer) + self.shift * self._taste(answer)
        return -score if self.kind == ADVERSARIAL else score

    def pick(self, rng: random.Random, preference: Preference, prompt: str, a: str,
             b: str) -> str:
        """a, b or tie."""
        if self.kind == CARELESS:
            return "a" if self.style == "always_a" else rng.choice("ab")
        s_a, s_b = self.score(preference, prompt, a), self.score(preference, prompt, b)
        draw = rng.random()
        if s_a == s_b:  # order-free: the texts' order, not the display order, decides
            return "tie" if draw < 0.1 else ("a" if (draw < 0.55) == (a <= b) else "b")
        better, worse = ("a", "b") if s_a > s_b else ("b", "a")
        return better if draw < _sigmoid(abs(s_a - s_b) / self.temperature) else worse

    def thumb(self, rng: random.Random, preference: Preference, prompt: str,
              answer: str) -> int:
        if self.kind == CARELESS:
            return 1 if self.style == "always_up" else rng.choice((1, -1))
        noisy = self.score(preference, prompt, answer) + rng.gauss(0.0, self.noise)
        return 1 if noisy > self.threshold else -1

    def rewrite(self, rng: random.Random, preference: Preference, prompt: str,
                answer: str) -> str | None:
        if self.kind != HONEST or preference.rewrite is None or rng.random() >= self.rewrite_rate:
            return None
        return preference.rewrite(prompt, answer)

    def flag(self, rng: random.Random, preference: Preference, prompt: str,
             answer: str) -> str | None:
        if self.kind != HONEST or preference.flag is None or rng.random() >= self.flag_rate:
            return None
        return preference.flag(prompt, answer)

    def _taste(self, answer: str) -> float:
        digest = hashlib.sha256(f"{self.taste_seed}:{answer}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**63 - 1.0


def assign_personas(users: int, *, careless: float, adversarial: float,
                    rng: random.Random) -> list[Persona]:
    """`users` personas: round(users·careless) careless (styles in turn), round(users·
    adversarial) adversarial, the rest honest, shuffled; each with traits of its own."""
    if not (0 <= careless <= 1 and 0 <= adversarial <= 1 and careless + adversarial <= 1):
        raise ValueError("careless and adversarial are shares that add up to at most 1")
    n_careless, n_adversarial = round(users * careless), round(users * adversarial)
    n_adversarial = min(n_adversarial, users - n_careless)
    kinds = ([CARELESS] * n_careless + [ADVERSARIAL] * n_adversarial
             + [HONEST] * (users - n_careless - n_adversarial))
    rng.shuffle(kinds)
    personas, styles = [], 0
    for kind in kinds:
        style = None
        if kind == CARELESS:
            style, styles = CARELESS_STYLES[styles % len(CARELESS_STYLES)], styles + 1
        personas.append(Persona(kind=kind, style=style,
                                temperature=rng.uniform(0.3, 1.0),
                                shift=rng.uniform(0.0, 0.6),
                                threshold=rng.gauss(0.0, 0.3),
                                noise=rng.uniform(0.2, 0.8),
                                taste_seed=rng.randrange(2**31)))
    return personas


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))
