from datetime import timedelta

from feedback.models import utcnow
from feedback.queries import conversations as convs
from feedback.queries import users, votes
from feedback.queries.activity import feedback_counts
from feedback.queries.battles import battle_record


def _battle(session, user, first: str | None, second: str | None, choice: str | None):
    conversation = convs.create_conversation(session, user_id=user.id)
    prompt = convs.add_message(session, conversation_id=conversation.id, role="user",
                               content="hi")
    answers = [convs.add_message(session, conversation_id=conversation.id, role="assistant",
                                 content=f"answer {v}", parent_id=prompt.id,
                                 adapter_version=v).id for v in (first, second)]
    comparison = votes.create_comparison(session, user_id=user.id, prompt_message_id=prompt.id,
                                         candidate_ids=answers)
    if choice:
        votes.record_choice(session, comparison_id=comparison.id, user_id=user.id,
                            choice=choice)
    return answers


def test_battle_record_counts_from_the_models_point_of_view(session):
    user = users.create_user(session, handle="judge")
    _battle(session, user, "policy-v2", "policy-v1", "a")  # v2 shown first, picked
    _battle(session, user, "policy-v1", "policy-v2", "b")  # v2 shown second, picked
    _battle(session, user, "policy-v1", "policy-v2", "a")  # v1 picked
    _battle(session, user, "policy-v2", "policy-v1", "tie")
    _battle(session, user, "policy-v2", "policy-v1", "both_bad")
    _battle(session, user, "policy-v2", "policy-v1", None)  # undecided: not counted
    _battle(session, user, "policy-v2", None, "a")  # against the base: another matchup
    record = battle_record(session, model="policy-v2", opponent="policy-v1")
    assert (record.wins, record.losses, record.ties, record.both_bad) == (2, 1, 1, 1)
    assert record.decided == 4
    mirrored = battle_record(session, model="policy-v1", opponent="policy-v2")
    assert (mirrored.wins, mirrored.losses) == (1, 2)
    against_base = battle_record(session, model="policy-v2", opponent=None)
    assert (against_base.wins, against_base.losses) == (1, 0)


def test_feedback_counts_every_kind_and_only_what_came_after_since(session):
    user = users.create_user(session, handle="voter")
    answers = _battle(session, user, None, None, "a")
    _battle(session, user, None, None, None)  # undecided comparisons are not feedback yet
    votes.upsert_rating(session, message_id=answers[0], user_id=user.id, thumb=1)
    votes.add_rewrite(session, message_id=answers[1], user_id=user.id, content="better")
    votes.add_flag(session, message_id=answers[1], user_id=user.id, category="harmful")
    session.commit()
    assert feedback_counts(session) == {"ratings": 1, "comparisons": 1, "rewrites": 1,
                                        "flags": 1}
    later = utcnow() + timedelta(seconds=1)
    assert sum(feedback_counts(session, since=later).values()) == 0
