"""Annotator quality from raw votes: careless patterns, consensus on shared items, the
stored reward-model agreement, "random" detection and the weights (SQLite and PostgreSQL)."""

import pytest

from feedback.queries import conversations, users, votes
from feedback.queries.annotators import (
    CARELESS_WEIGHT,
    annotator_quality,
    annotator_weights,
    save_reward_model_agreement,
)


def _turn(session, user, prompt, *answers):
    """A first turn of a new conversation of `user`, answered by `answers`."""
    chat = conversations.create_conversation(session, user_id=user.id)
    question = conversations.add_message(session, conversation_id=chat.id, role="user",
                                         content=prompt)
    return [conversations.add_message(session, conversation_id=chat.id, role="assistant",
                                      content=text, parent_id=question.id)
            for text in answers], question


def _pick(session, user, prompt, a, b, choice):
    (ma, mb), question = _turn(session, user, prompt, a, b)
    c = votes.create_comparison(session, user_id=user.id, prompt_message_id=question.id,
                                candidate_ids=[ma.id, mb.id])
    votes.record_choice(session, comparison_id=c.id, user_id=user.id, choice=choice)


def _thumb(session, user, prompt, answer, thumb):
    (message,), _ = _turn(session, user, prompt, answer)
    votes.upsert_rating(session, message_id=message.id, user_id=user.id, thumb=thumb)


def _by_handle(session):
    return {a.handle: a for a in annotator_quality(session).annotators}


@pytest.fixture
def crowd(session):
    """Three honest users who prefer "good" answers, one always-A clicker and one
    always-up clicker, all judging the same twelve items (A/B order alternating)."""
    people = {h: users.create_user(session, handle=h)
              for h in ("ann", "ben", "cat", "clicker", "upper")}
    for i in range(12):
        prompt, good, bad = f"q{i}", f"good {i}", f"bad {i}"
        a, b, better = (good, bad, "a") if i % 2 else (bad, good, "b")
        for h in ("ann", "ben", "cat"):
            # cat disagrees with the others on two items
            choice = better if not (h == "cat" and i < 2) else ("b" if better == "a" else "a")
            _pick(session, people[h], prompt, a, b, choice)
            _thumb(session, people[h], prompt, good, 1)
            _thumb(session, people[h], prompt, bad, -1)
        _pick(session, people["clicker"], prompt, a, b, "a")
        _thumb(session, people["upper"], prompt, bad, 1)
    session.flush()
    return people


def test_careless_patterns_are_detected(session, crowd):
    found = _by_handle(session)
    assert found["clicker"].pattern == "always_a"
    assert found["upper"].pattern == "always_up"
    assert {found[h].pattern for h in ("ann", "ben", "cat")} == {None}
    assert found["clicker"].weight == found["upper"].weight == CARELESS_WEIGHT


def test_votes_and_consensus_agreement(session, crowd):
    found = _by_handle(session)
    assert found["ann"].votes == 36 and found["clicker"].votes == 12
    assert found["ann"].consensus_items == 36  # 12 picks and 24 thumbs shared with others
    # on item 0 the clicker sides with cat against ann and ben: ann is outvoted once
    assert found["ann"].consensus_agreement == pytest.approx(35 / 36, abs=1e-4)
    assert found["ben"].consensus_agreement == pytest.approx(35 / 36, abs=1e-4)
    assert found["cat"].consensus_agreement == pytest.approx(34 / 36, abs=1e-4)
    assert found["clicker"].consensus_agreement == 0.5  # right on every other item
    assert found["upper"].consensus_agreement == 0.0  # up on every bad answer
    assert annotator_quality(session).reward_model is None
    assert found["ann"].reward_model_agreement is None


def test_always_up_is_not_a_pattern_when_everyone_votes_up(session):
    people = [users.create_user(session, handle=f"fan{i}") for i in range(3)]
    for i in range(12):
        for person in people:
            _thumb(session, person, f"q{i}", f"fine {i}", 1)
    assert {a.pattern for a in annotator_quality(session).annotators} == {None}


def test_too_few_votes_make_no_pattern(session):
    person = users.create_user(session, handle="new")
    for i in range(5):
        _pick(session, person, f"q{i}", f"x{i}", f"y{i}", "a")
    (found,) = annotator_quality(session).annotators
    assert found.pattern is None and found.weight == 1.0 and found.consensus_items == 0


def test_reward_model_agreement_finds_random_clickers_and_lowers_adversaries(session):
    people = {h: users.create_user(session, handle=h)
              for h in ("h1", "h2", "h3", "h4", "coin", "liar")}
    for person in people.values():
        _thumb(session, person, "q", f"answer by {person.handle}", 1)
    agreement = {people["h1"].id: (0.9, 40), people["h2"].id: (0.85, 40),
                 people["h3"].id: (0.8, 40), people["h4"].id: (0.75, 40),
                 people["coin"].id: (0.5, 40), people["liar"].id: (0.1, 40)}
    save_reward_model_agreement(session, reward_model="rm-3", agreement=agreement)
    report = annotator_quality(session)
    assert report.reward_model == "rm-3"
    found = {a.handle: a for a in report.annotators}
    assert found["coin"].pattern == "random" and found["coin"].weight == CARELESS_WEIGHT
    assert found["liar"].pattern is None and found["liar"].weight == CARELESS_WEIGHT
    assert found["h1"].weight == 1.0 and found["h2"].weight == 1.0
    assert 0.5 < found["h4"].weight < 1.0  # a little below the median: a little lighter
    assert found["h3"].reward_model_agreement == 0.8
    weights = annotator_weights(session)
    assert weights[people["h1"].id] == 1.0 and weights[people["liar"].id] == CARELESS_WEIGHT

    save_reward_model_agreement(session, reward_model="rm-4",
                                agreement={people["h1"].id: (0.7, 12)})  # replaces
    found = {a.handle: a for a in annotator_quality(session).annotators}
    assert found["coin"].reward_model_agreement is None and found["coin"].pattern is None
    assert annotator_quality(session).reward_model == "rm-4"
