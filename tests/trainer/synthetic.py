"""A synthetic preference for learning tests: answers that use words of `GOOD_WORDS`
beat answers that do not. `true_reward` is the hidden scorer; PPO tests reuse it."""

import random

from trainer.data import Pair

GOOD_WORDS = ("wonderful", "helpful", "kind", "great", "happy", "thanks")
BAD_WORDS = ("awful", "rude", "terrible", "stupid", "angry", "boring")
TOPICS = ("the weather", "my garden", "a recipe", "the train", "a book", "the news",
          "my cat", "a song", "the exam", "a holiday")


def synthetic_prompt(rng: random.Random) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Tell me about {rng.choice(TOPICS)}."}]


def synthetic_answer(rng: random.Random, *, good: bool) -> str:
    words = rng.sample(GOOD_WORDS if good else BAD_WORDS, 2)
    return f"It is {words[0]} and {words[1]}, that is what I think about {rng.choice(TOPICS)}."


def true_reward(text: str) -> float:
    """The hidden preference: good words count +1, bad words −1."""
    tokens = text.lower().replace(",", " ").replace(".", " ").split()
    return float(sum(t in GOOD_WORDS for t in tokens) - sum(t in BAD_WORDS for t in tokens))


def synthetic_pairs(n: int, *, seed: int = 0, first_id: int = 0) -> list[Pair]:
    """`n` pairs, each its own conversation (ids first_id, first_id + 1, …)."""
    rng = random.Random(seed)
    return [Pair(synthetic_prompt(rng), synthetic_answer(rng, good=True),
                 synthetic_answer(rng, good=False), conversation_id=first_id + i)
            for i in range(n)]


def synthetic_rows(n: int, *, seed: int = 0) -> list[dict]:
    """The same pairs as TRL preference rows (for data files)."""
    return [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}
            for p in synthetic_pairs(n, seed=seed)]
