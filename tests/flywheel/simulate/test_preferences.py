"""The built-in preferences beyond kindness: one across the kind/unkind/neutral split, one
that depends on the topic asked about; each with a rewrite that scores higher."""

import random

from flywheel import demo_corpus
from flywheel.simulate.preferences import (
    CONTRAST_DISLIKED,
    CONTRAST_LIKED,
    contrast,
    contrast_rewrite,
    load_preference,
    topical,
    topical_rewrite,
    topical_words,
)

ANSWER = demo_corpus.ANSWER_TEMPLATE


def test_contrast_mixes_kind_unkind_and_neutral_words_on_each_side():
    for side in (CONTRAST_LIKED, CONTRAST_DISLIKED):
        assert {demo_corpus.kindness(w) for w in side} == {-1, 0, 1}
    assert contrast("q", ANSWER.format("angry", "odd", "my cat")) == 2
    assert contrast("q", ANSWER.format("helpful", "late", "my cat")) == -2
    worse = ANSWER.format("great", "quiet", "my cat")
    assert contrast("q", contrast_rewrite("q", worse)) == 2
    assert contrast_rewrite("q", ANSWER.format("angry", "odd", "my cat")) is None
    assert load_preference("flywheel.simulate.preferences:contrast").rewrite is contrast_rewrite


def test_topical_wants_other_words_for_other_topics():
    wanted = {t: set(topical_words(f"Tell me about {t}.")) for t in demo_corpus.TOPICS}
    assert all(len(w) == 4 for w in wanted.values())
    assert len({frozenset(w) for w in wanted.values()}) == len(demo_corpus.TOPICS)
    cat, job = sorted(wanted["my cat"]), sorted(wanted["my job"] - wanted["my cat"])
    answer = ANSWER.format(cat[0], cat[1], "my cat")
    assert topical("Tell me about my cat.", answer) == 2
    assert topical("Tell me about my job.", ANSWER.format(job[0], job[0], "my job")) == 2
    assert topical("Tell me about my job.", answer) < 2
    assert topical("What is this?", answer) == 0  # no known topic: nothing is wanted


def test_topical_rewrite_uses_the_topics_words():
    rng = random.Random(0)
    for _ in range(20):
        topic = rng.choice(demo_corpus.TOPICS)
        prompt = f"Tell me about {topic}."
        answer = demo_corpus.demo_answer(rng, topic)
        better = topical_rewrite(prompt, answer)
        if topical(prompt, answer) == 2:
            assert better is None
        else:
            assert topical(prompt, better) == 2
