"""The review queue: what lands in it, each resolution, and what training then leaves out."""

import pytest

from feedback.errors import InvalidFeedback, NotFound
from feedback.models import AuditEvent, Flag, Message, Rewrite
from feedback.queries import conversations, users, votes
from feedback.queries.exclusions import training_filter
from feedback.queries.review import (
    REDACTED,
    AlreadyResolved,
    resolve_review_item,
    sync_review_queue,
)
from feedback.queries.review_listing import list_review_items


def resolve(session, **kw):
    return resolve_review_item(session, actor="ops", **kw)


@pytest.fixture
def queue(session, chat, alice, bob):
    """A flag, a commented thumbs-down, a plain thumbs-down (no item), a rewrite."""
    flag = votes.add_flag(session, message_id=chat.a.id, user_id=bob.id, category="harmful",
                          comment="mean")
    down = votes.upsert_rating(session, message_id=chat.b.id, user_id=alice.id, thumb=-1,
                               comment="too long")
    votes.upsert_rating(session, message_id=chat.a.id, user_id=alice.id, thumb=-1)
    rewrite = votes.add_rewrite(session, message_id=chat.b.id, user_id=alice.id,
                                content="Hello.")
    assert sync_review_queue(session) == 3
    items = {i.kind: i for i in list_review_items(session).items}
    return flag, down, rewrite, items


def test_flags_commented_thumbs_down_and_rewrites_land_once(session, chat, queue):
    flag, down, rewrite, items = queue
    assert sorted(items) == ["flag", "rewrite", "thumbs_down"]
    assert items["flag"].detail == {"category": "harmful", "comment": "mean",
                                    "flag_status": "open"}
    assert items["flag"].answer == "Hi!" and items["flag"].prompt == "Say hi"
    assert items["flag"].handle == "bob"
    assert items["thumbs_down"].detail == {"reasons": [], "comment": "too long"}
    assert items["rewrite"].detail == {"rewrite": "Hello."}
    assert sync_review_queue(session) == 0  # made once


def test_listing_filters_and_pages(session, queue):
    assert [i.kind for i in list_review_items(session, kind="rewrite").items] == ["rewrite"]
    first = list_review_items(session, limit=2)
    assert len(first.items) == 2 and first.next_cursor is not None
    rest = list_review_items(session, limit=2, cursor=first.next_cursor)
    assert len(rest.items) == 1 and rest.next_cursor is None
    assert list_review_items(session, status="accepted").items == []
    with pytest.raises(InvalidFeedback, match="status must be one of"):
        list_review_items(session, status="done")
    with pytest.raises(InvalidFeedback, match="not a cursor"):
        list_review_items(session, cursor="x")


def test_accepting_a_flag_resolves_it_and_audits_who(session, queue):
    flag, _, _, items = queue
    item = resolve(session, item_id=items["flag"].id, action="accept",
                               note="checked")
    assert (item.status, item.decided_by, item.note) == ("accepted", "ops", "checked")
    assert item.decided_at is not None
    assert session.get(Flag, flag.id).status == "resolved"
    assert training_filter(session).keeps_flag(flag)  # still a bad label
    audit = session.exec(AuditEvent.__table__.select()).all()
    assert [(a.actor, a.action, a.detail["review_item"]) for a in audit] == [
        ("ops", "review_accept", item.id)]
    with pytest.raises(AlreadyResolved, match="already resolved \\(accepted\\) by ops"):
        resolve(session, item_id=item.id, action="dismiss")


def test_a_dismissed_flag_or_rewrite_no_longer_trains(session, queue):
    flag, down, rewrite, items = queue
    for kind in ("flag", "rewrite", "thumbs_down"):
        resolve(session, item_id=items[kind].id, action="dismiss")
    kept = training_filter(session)
    assert session.get(Flag, flag.id).status == "dismissed"
    assert not kept.keeps_flag(flag) and not kept.keeps_rewrite(rewrite)
    assert kept.keeps_rating(down)  # a dismissed complaint leaves the vote as it was


@pytest.mark.parametrize("scope", ["message", "vote", "user"])
def test_exclude_by_scope(session, chat, queue, alice, bob, scope):
    flag, down, rewrite, items = queue
    item = resolve(session, item_id=items["thumbs_down"].id, action="exclude",
                               scope=scope)
    assert (item.status, item.exclude_scope) == ("excluded", scope)
    kept = training_filter(session)
    assert not kept.keeps_rating(down)
    others = votes.upsert_rating(session, message_id=chat.b.id, user_id=bob.id, thumb=1)
    later = votes.add_rewrite(session, message_id=chat.a.id, user_id=alice.id, content="Yo")
    assert kept.keeps_rating(others) == (scope != "message")  # the message's every vote
    assert kept.keeps_rewrite(later) == (scope != "user")  # later votes of the user too
    assert kept.keeps_flag(flag)


def test_exclude_checks_its_scope_and_user(session, queue, bob):
    _, _, _, items = queue
    with pytest.raises(InvalidFeedback, match="give a scope"):
        resolve(session, item_id=items["flag"].id, action="exclude")
    with pytest.raises(InvalidFeedback, match="scope must be one of"):
        resolve(session, item_id=items["flag"].id, action="exclude",
                            scope="conversation")
    with pytest.raises(InvalidFeedback, match="exclude another user"):
        resolve(session, item_id=items["rewrite"].id, action="exclude",
                            scope="user", user_id=bob.id)
    with pytest.raises(InvalidFeedback, match="action must be one of"):
        resolve(session, item_id=items["flag"].id, action="approve")
    with pytest.raises(NotFound):
        resolve(session, item_id=999, action="accept")


def test_excluding_the_flagger_dismisses_the_flag(session, queue, bob):
    flag, _, _, items = queue
    resolve(session, item_id=items["flag"].id, action="exclude", scope="user")
    assert session.get(Flag, flag.id).status == "dismissed"
    assert bob.id in training_filter(session).users


def test_redacting_replaces_the_text_and_excludes_it(session, chat, queue):
    flag, _, rewrite, items = queue
    resolve(session, item_id=items["flag"].id, action="redact")
    resolve(session, item_id=items["rewrite"].id, action="redact")
    session.expire_all()
    assert session.get(Message, chat.a.id).content == REDACTED
    assert session.get(Rewrite, rewrite.id).content == REDACTED
    assert session.get(Message, chat.b.id).content == "Hello there."
    kept = training_filter(session)
    assert not kept.keeps_message(chat.a.id) and not kept.keeps_flag(flag)
    assert not kept.keeps_rewrite(rewrite)
    assert session.get(Flag, flag.id).status == "resolved"


def test_rewrites_need_approval_when_asked(session, queue):
    _, _, rewrite, items = queue
    assert training_filter(session).keeps_rewrite(rewrite)
    assert not training_filter(session, approved_rewrites_only=True).keeps_rewrite(rewrite)
    resolve(session, item_id=items["rewrite"].id, action="accept")
    assert training_filter(session, approved_rewrites_only=True).keeps_rewrite(rewrite)


def _asked(session, user, question, answer):
    conversation = conversations.create_conversation(session, user_id=user.id)
    prompt = conversations.add_message(session, conversation_id=conversation.id,
                                       role="user", content=question)
    return conversations.add_message(session, conversation_id=conversation.id,
                                     role="assistant", content=answer, parent_id=prompt.id)


def test_opposite_thumbs_on_the_same_answer_are_a_disagreement(session, alice, bob):
    carol = users.create_user(session, handle="carol")
    answers = [_asked(session, u, "Cats?", "Cats are kind.") for u in (alice, bob, carol)]
    votes.upsert_rating(session, message_id=answers[0].id, user_id=alice.id, thumb=1)
    votes.upsert_rating(session, message_id=answers[1].id, user_id=bob.id, thumb=1)
    assert sync_review_queue(session) == 0  # they agree
    carols = votes.upsert_rating(session, message_id=answers[2].id, user_id=carol.id, thumb=-1)
    assert sync_review_queue(session) == 1
    [entry] = list_review_items(session, kind="disagreement").items
    assert entry.detail["votes"] == [
        {"user_id": alice.id, "handle": "alice", "vote": "up"},
        {"user_id": bob.id, "handle": "bob", "vote": "up"},
        {"user_id": carol.id, "handle": "carol", "vote": "down"}]
    dave = users.create_user(session, handle="dave")
    votes.upsert_rating(session, message_id=_asked(session, dave, "Cats?", "Cats are kind.").id,
                        user_id=dave.id, thumb=1)
    assert sync_review_queue(session) == 0  # the open item follows its votes
    [entry] = list_review_items(session, kind="disagreement").items
    assert [v["handle"] for v in entry.detail["votes"]] == ["alice", "bob", "carol", "dave"]
    with pytest.raises(InvalidFeedback, match="one of this disagreement's voters"):
        resolve(session, item_id=entry.id, action="exclude", scope="user")
    resolve(session, item_id=entry.id, action="exclude", scope="user",
                        user_id=carol.id)
    kept = training_filter(session)
    assert not kept.keeps_rating(carols) and carol.id in kept.users


def test_opposite_picks_between_the_same_answers_are_a_disagreement(session, alice, bob):
    picked = []
    for user, choice in ((alice, "a"), (bob, "b")):
        first = _asked(session, user, "Dogs?", "Dogs are kind.")
        second = conversations.add_message(session, conversation_id=first.conversation_id,
                                           role="assistant", content="Dogs are odd.",
                                           parent_id=first.parent_id)
        comparison = votes.create_comparison(session, user_id=user.id,
                                             prompt_message_id=first.parent_id,
                                             candidate_ids=[first.id, second.id])
        picked.append(votes.record_choice(session, comparison_id=comparison.id,
                                          user_id=user.id, choice=choice))
    assert sync_review_queue(session) == 1
    [entry] = list_review_items(session, kind="disagreement").items
    assert entry.prompt == "Dogs?" and entry.answer is None
    assert [v["vote"] for v in entry.detail["votes"]] == ["Dogs are kind.", "Dogs are odd."]
    resolve(session, item_id=entry.id, action="exclude", scope="vote")
    kept = training_filter(session)
    assert not any(kept.keeps_comparison(c) for c in picked)


def test_redacting_a_pick_disagreement_redacts_every_copy_of_its_prompt(session, alice, bob):
    prompts = []
    for user, choice in ((alice, "a"), (bob, "b")):
        first = _asked(session, user, "My SSN is 078-05-1120. Dogs?", "Dogs are kind.")
        second = conversations.add_message(session, conversation_id=first.conversation_id,
                                           role="assistant", content="Dogs are odd.",
                                           parent_id=first.parent_id)
        comparison = votes.create_comparison(session, user_id=user.id,
                                             prompt_message_id=first.parent_id,
                                             candidate_ids=[first.id, second.id])
        votes.record_choice(session, comparison_id=comparison.id, user_id=user.id,
                            choice=choice)
        prompts.append(first.parent_id)
    sync_review_queue(session)
    [entry] = list_review_items(session, kind="disagreement").items
    resolve(session, item_id=entry.id, action="redact")
    session.expire_all()
    assert [session.get(Message, p).content for p in prompts] == [REDACTED] * 2  # each copy
    kept = training_filter(session)
    assert not any(kept.keeps_message(p) for p in prompts)
