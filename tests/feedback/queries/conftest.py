"""Records most query tests start from: two users and one of Alice's chats."""

from types import SimpleNamespace

import pytest

from feedback.queries import conversations, users


@pytest.fixture
def alice(session):
    return users.create_user(session, handle="alice")


@pytest.fixture
def bob(session):
    return users.create_user(session, handle="bob")


@pytest.fixture
def chat(session, alice):
    """Alice's conversation: a prompt and two sibling answers to it."""
    conversation = conversations.create_conversation(session, user_id=alice.id, title="hi")
    prompt = conversations.add_message(session, conversation_id=conversation.id, role="user",
                                       content="Say hi")
    a, b = (conversations.add_message(session, conversation_id=conversation.id,
                                      role="assistant", content=text, parent_id=prompt.id)
            for text in ("Hi!", "Hello there."))
    return SimpleNamespace(conversation=conversation, prompt=prompt, a=a, b=b)
