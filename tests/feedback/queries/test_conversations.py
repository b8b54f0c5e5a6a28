import pytest
from sqlmodel import func, select

from feedback.errors import InvalidFeedback, NotFound
from feedback.models import Comparison, Flag, Message, Rating, Rewrite
from feedback.queries import conversations as cq
from feedback.queries import votes


def test_create_and_get_only_by_its_owner(session, alice, bob):
    conversation = cq.create_conversation(session, user_id=alice.id, title="t" * 300,
                                          source="api", external_id="hh-1")

    assert len(conversation.title) == 200 and conversation.source == "api"
    assert cq.get_conversation(session, conversation_id=conversation.id) is conversation
    assert cq.get_conversation(session, conversation_id=conversation.id,
                               user_id=alice.id) is conversation
    with pytest.raises(NotFound, match=f"conversation {conversation.id} not found"):
        cq.get_conversation(session, conversation_id=conversation.id, user_id=bob.id)
    with pytest.raises(NotFound):
        cq.get_conversation(session, conversation_id=999)
    assert cq.conversation_exists(session, external_id="hh-1")
    assert not cq.conversation_exists(session, external_id="hh-2")


def test_list_most_recently_active_first_and_only_the_users_own(session, alice, bob):
    first = cq.create_conversation(session, user_id=alice.id)
    second = cq.create_conversation(session, user_id=alice.id)
    bobs = cq.create_conversation(session, user_id=bob.id)

    assert cq.list_conversations(session, user_id=alice.id) == [second, first]
    cq.add_message(session, conversation_id=first.id, role="user", content="back again")
    assert cq.list_conversations(session, user_id=alice.id) == [first, second]
    assert cq.list_conversations(session, user_id=alice.id, limit=1, offset=1) == [second]
    assert cq.list_conversations(session, user_id=bob.id) == [bobs]
    assert list(cq.iter_conversations(session)) == [first, second, bobs]


def test_add_message_records_how_an_answer_was_made(session, chat):
    answer = cq.add_message(
        session, conversation_id=chat.conversation.id, role="assistant", content="Hey",
        parent_id=chat.prompt.id, adapter_version="policy-v1", sampling={"temperature": 0.7},
        seed=3, prompt_tokens=5, completion_tokens=2, finish_reason="stop", latency_ms=12.5)
    session.commit()
    session.expire_all()

    stored = cq.get_message(session, message_id=answer.id)
    assert (stored.adapter_version, stored.sampling, stored.seed) == ("policy-v1",
                                                                      {"temperature": 0.7}, 3)
    assert (stored.prompt_tokens, stored.completion_tokens) == (5, 2)
    assert (stored.finish_reason, stored.latency_ms) == ("stop", 12.5)


def test_add_message_rejects_bad_input(session, alice, chat):
    other = cq.create_conversation(session, user_id=alice.id)
    with pytest.raises(InvalidFeedback, match="message role must be one of"):
        cq.add_message(session, conversation_id=other.id, role="robot", content="x")
    with pytest.raises(InvalidFeedback, match=f"parent message {chat.prompt.id} is not in"):
        cq.add_message(session, conversation_id=other.id, role="assistant", content="x",
                       parent_id=chat.prompt.id)
    with pytest.raises(NotFound, match="conversation 999 not found"):
        cq.add_message(session, conversation_id=999, role="user", content="x")
    assert cq.conversation_messages(session, conversation_id=other.id) == []


def test_get_message_only_by_its_owner(session, chat, alice, bob):
    assert cq.get_message(session, message_id=chat.a.id, user_id=alice.id) is chat.a
    with pytest.raises(NotFound):
        cq.get_message(session, message_id=chat.a.id, user_id=bob.id)
    with pytest.raises(NotFound, match="message 999 not found"):
        cq.get_message(session, message_id=999)


def test_message_path_follows_the_branch(session, chat):
    cid = chat.conversation.id
    follow_up = cq.add_message(session, conversation_id=cid, role="user", content="More",
                               parent_id=chat.b.id)
    answer = cq.add_message(session, conversation_id=cid, role="assistant", content="Sure",
                            parent_id=follow_up.id)

    assert cq.message_path(session, message_id=answer.id) == [chat.prompt, chat.b,
                                                              follow_up, answer]
    assert cq.message_path(session, message_id=chat.prompt.id) == [chat.prompt]
    assert cq.conversation_messages(session, conversation_id=cid) == [
        chat.prompt, chat.a, chat.b, follow_up, answer]
    with pytest.raises(NotFound):
        cq.message_path(session, message_id=999)


def _count(session, model) -> int:
    return session.exec(select(func.count()).select_from(model)).one()


def test_delete_removes_messages_and_their_votes(session, chat, alice, bob):
    kept = cq.create_conversation(session, user_id=alice.id)
    cq.add_message(session, conversation_id=kept.id, role="user", content="keep me")
    votes.upsert_rating(session, message_id=chat.a.id, user_id=alice.id, thumb=1)
    votes.add_flag(session, message_id=chat.b.id, user_id=alice.id, category="other")
    votes.add_rewrite(session, message_id=chat.b.id, user_id=alice.id, content="Hi :)")
    votes.create_comparison(session, user_id=alice.id, prompt_message_id=chat.prompt.id,
                            candidate_ids=[chat.a.id, chat.b.id])
    session.commit()

    with pytest.raises(NotFound):
        cq.delete_conversation(session, conversation_id=chat.conversation.id, user_id=bob.id)
    cq.delete_conversation(session, conversation_id=chat.conversation.id, user_id=alice.id)
    session.commit()

    assert cq.list_conversations(session, user_id=alice.id) == [kept]
    assert _count(session, Message) == 1
    assert [_count(session, m) for m in (Rating, Flag, Rewrite, Comparison)] == [0, 0, 0, 0]
