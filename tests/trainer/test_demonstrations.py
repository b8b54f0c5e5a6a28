"""Rewrites in the store as SFT demonstrations: the thread above the rewritten answer as the
prompt, annotator weights, duplicates kept once, and the per-user cap."""

import pytest

import trainer.demonstrations
from feedback.db import session_scope
from feedback.queries import conversations, users, votes
from trainer.demonstrations import Demonstration, demonstrations


def say(session, chat, role, content, parent=None):
    return conversations.add_message(session, conversation_id=chat.id, role=role,
                                     content=content, parent_id=parent)


@pytest.fixture
def store(engine):
    """Alice's two chats with rewrites by alice and bob; one answer rewritten twice alike."""
    with session_scope(engine) as s:
        alice = users.create_user(s, handle="alice")
        bob = users.create_user(s, handle="bob")
        first, second = (conversations.create_conversation(s, user_id=alice.id) for _ in "ab")
        hello = say(s, first, "user", "Hello?")
        rude = say(s, first, "assistant", "Go away.", hello.id)
        thanks = say(s, first, "user", "Thanks anyway", rude.id)
        curt = say(s, first, "assistant", "Whatever.", thanks.id)
        system = say(s, second, "system", "Be brief.")
        ask = say(s, second, "user", "2+2?", system.id)
        wrong = say(s, second, "assistant", "5", ask.id)
        votes.add_rewrite(s, message_id=rude.id, user_id=alice.id,
                          content="Hello! How can I help?")
        votes.add_rewrite(s, message_id=curt.id, user_id=bob.id, content="You're welcome!")
        votes.add_rewrite(s, message_id=wrong.id, user_id=bob.id, content="4")
        votes.add_rewrite(s, message_id=wrong.id, user_id=alice.id, content="4")
    return engine, {"alice": alice.id, "bob": bob.id}, (first.id, second.id)


def test_each_rewrite_is_the_thread_above_it_and_the_improved_text(store):
    engine, ids, (first, second) = store
    got = demonstrations(engine, max_user_share=None)
    assert got == [
        Demonstration([{"role": "user", "content": "Hello?"}], "Hello! How can I help?", 1.0,
                      ids["alice"], first),
        Demonstration([{"role": "user", "content": "Hello?"},
                       {"role": "assistant", "content": "Go away."},
                       {"role": "user", "content": "Thanks anyway"}],
                      "You're welcome!", 1.0, ids["bob"], first),
        # bob's and alice's identical rewrite of "5": once, in bob's (the first) place
        Demonstration([{"role": "system", "content": "Be brief."},
                       {"role": "user", "content": "2+2?"}], "4", 1.0, ids["bob"], second),
    ]


def test_annotator_weights_scale_the_examples_and_duplicates_keep_the_heaviest(store,
                                                                               monkeypatch):
    engine, ids, _ = store
    monkeypatch.setattr(trainer.demonstrations, "annotator_weights",
                        lambda session: {ids["bob"]: 0.25, ids["alice"]: 2.0})
    got = {d.completion: d for d in demonstrations(engine, max_user_share=None)}
    assert got["You're welcome!"].weight == 0.25
    assert got["Hello! How can I help?"].weight == 1.0  # a weight never goes above 1
    assert (got["4"].weight, got["4"].user_id) == (1.0, ids["alice"])
    unweighted = demonstrations(engine, max_user_share=None, annotator_weighting=False)
    assert all(d.weight == 1.0 for d in unweighted)


def test_no_user_has_more_than_the_capped_share(store):
    engine, ids, _ = store
    got = demonstrations(engine, max_user_share=0.5)
    assert [d.user_id for d in got].count(ids["bob"]) == 1
    assert len(got) == 2


def test_an_empty_store_has_no_demonstrations(engine):
    assert demonstrations(engine) == []
