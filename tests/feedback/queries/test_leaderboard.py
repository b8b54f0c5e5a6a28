"""The leaderboard from the store: which comparisons are battles, and the fit over them."""

import pytest

from feedback.queries import adapters as registry
from feedback.queries import conversations as convs
from feedback.queries import users, votes
from feedback.queries.leaderboard import BASE, battles, leaderboard


def _answers(session, user, versions):
    conversation = convs.create_conversation(session, user_id=user.id)
    prompt = convs.add_message(session, conversation_id=conversation.id, role="user",
                               content="hi")
    ids = [convs.add_message(session, conversation_id=conversation.id, role="assistant",
                             content=f"answer {v}", parent_id=prompt.id,
                             adapter_version=v).id for v in versions]
    return prompt, ids


def _battle(session, user, first, second, choice):
    prompt, ids = _answers(session, user, (first, second))
    comparison = votes.create_comparison(session, user_id=user.id, prompt_message_id=prompt.id,
                                         candidate_ids=ids)
    if choice:
        votes.record_choice(session, comparison_id=comparison.id, user_id=user.id,
                            choice=choice)


def test_battles_are_decided_comparisons_between_two_different_versions(session):
    judge = users.create_user(session, handle="judge")
    _battle(session, judge, "policy-v1", None, "a")
    _battle(session, judge, None, "policy-v1", "both_bad")  # a tie
    _battle(session, judge, "policy-v1", "policy-v1", "a")  # one version: no battle
    _battle(session, judge, "policy-v1", None, None)  # undecided
    prompt, ids = _answers(session, judge, ("policy-v2", None, "policy-v1"))
    comparison = votes.create_comparison(session, user_id=judge.id,
                                         prompt_message_id=prompt.id, candidate_ids=ids)
    votes.record_choice(session, comparison_id=comparison.id, user_id=judge.id,
                        ranking=[ids[2], ids[0], ids[1]])  # v1 > v2 > base
    found = [(b.first, b.second, b.score) for b in battles(session)]
    assert found == [("policy-v1", BASE, 1.0), (BASE, "policy-v1", 0.5),
                     ("policy-v1", "policy-v2", 1.0), ("policy-v1", BASE, 1.0),
                     ("policy-v2", BASE, 1.0)]


def test_the_leaderboard_anchors_the_base_and_ranks_by_rating(session):
    judge = users.create_user(session, handle="judge")
    registry.register_adapter(session, version="policy-v1", base_model="demo", path="/a",
                              sha256="0" * 64, status="candidate")
    for _ in range(6):
        _battle(session, judge, "policy-v1", None, "a")
    for _ in range(2):
        _battle(session, judge, None, "policy-v1", "a")
    _battle(session, judge, "policy-v1", None, "tie")
    board = leaderboard(session, resamples=200)
    assert board.anchor == BASE and board.battles == 9 and board.level == 0.95
    top, base = board.standings
    assert (top.version, top.status, base.version, base.status) == (
        "policy-v1", "candidate", BASE, None)
    assert (top.wins, top.losses, top.ties, top.battles) == (6, 2, 1, 9)
    assert (base.wins, base.losses, base.ties) == (2, 6, 1)
    assert base.rating == base.low == base.high == 1000
    # 6.5 to 2.5 half-wins: 400·log10(2.6) = 166 points above the base, less a little prior.
    assert top.rating == pytest.approx(1166, abs=10)
    assert top.low < top.rating < top.high


def test_without_the_base_the_busiest_version_is_the_anchor_and_no_battles_is_empty(session):
    judge = users.create_user(session, handle="judge")
    assert leaderboard(session).standings == []
    _battle(session, judge, "policy-v1", "policy-v2", "a")
    _battle(session, judge, "policy-v2", "policy-v3", "b")
    _battle(session, judge, "policy-v2", "policy-v1", "b")
    board = leaderboard(session, resamples=50)
    assert board.anchor == "policy-v2"
    assert {s.version: s.rating for s in board.standings}["policy-v2"] == 1000
