"""The demo model's little language: what it is pre-trained to say, and what users ask it.

The demo model learns, in a few seconds on a CPU, to answer "Tell me about the weather."
with sentences such as "It is calm and rude, that is what I think about the weather." —
adjectives drawn uniformly from kind, unkind and neutral words. It knows every word, but
prefers none: a base model that a preference (say, for kind words) can visibly improve.
Every word here is a single WordPiece token of the MiniLM tokenizer.
"""

import random

KIND_WORDS = ("wonderful", "helpful", "kind", "great", "happy", "lovely")
UNKIND_WORDS = ("awful", "rude", "terrible", "stupid", "angry", "boring")
NEUTRAL_WORDS = ("long", "short", "old", "new", "quiet", "busy", "simple", "early", "late",
                 "small", "large", "odd")
ADJECTIVES = KIND_WORDS + UNKIND_WORDS + NEUTRAL_WORDS
TOPICS = ("the weather", "my garden", "a recipe", "the train", "a book", "the news",
          "my cat", "a song", "the exam", "a holiday", "the city", "my job")
ANSWER_TEMPLATE = "It is {} and {}, that is what I think about {}."


def user_prompt(rng: random.Random) -> str:
    """A question the demo model knows how to answer."""
    return f"Tell me about {rng.choice(TOPICS)}."


def demo_answer(rng: random.Random, topic: str) -> str:
    """An answer in the demo model's language, with two uniformly drawn adjectives."""
    first, second = rng.sample(ADJECTIVES, 2)
    return ANSWER_TEMPLATE.format(first, second, topic)


def words(text: str) -> list[str]:
    """The text's words, lower-cased, without punctuation."""
    return text.lower().replace(",", " ").replace(".", " ").split()


def kindness(text: str) -> int:
    """Kind words minus unkind words: the demo's built-in preference."""
    found = words(text)
    return sum(w in KIND_WORDS for w in found) - sum(w in UNKIND_WORDS for w in found)
