"""Conversations and the message trees inside them."""

from collections.abc import Collection, Iterator
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, delete, select

from feedback.errors import InvalidFeedback, NotFound
from feedback.models import Conversation, Message, MessageRole, utcnow


def create_conversation(session: Session, *, user_id: int, title: str = "",
                        source: str = "chat", external_id: str | None = None) -> Conversation:
    conversation = Conversation(user_id=user_id, title=title[:200], source=source,
                                external_id=external_id)
    session.add(conversation)
    session.flush()
    return conversation


def get_conversation(session: Session, *, conversation_id: int,
                     user_id: int | None = None) -> Conversation:
    """The conversation; with `user_id`, only if it is that user's (else `NotFound`)."""
    conversation = session.get(Conversation, conversation_id)
    if conversation is None or (user_id is not None and conversation.user_id != user_id):
        raise NotFound(f"conversation {conversation_id} not found")
    return conversation


def conversation_exists(session: Session, *, external_id: str) -> bool:
    query = select(Conversation.id).where(Conversation.external_id == external_id)
    return session.exec(query).first() is not None


def list_conversations(session: Session, *, user_id: int, limit: int = 50,
                       offset: int = 0) -> list[Conversation]:
    """The user's conversations, most recently active first."""
    query = (select(Conversation).where(Conversation.user_id == user_id)
             .order_by(col(Conversation.updated_at).desc(), col(Conversation.id).desc())
             .offset(offset).limit(limit))
    return list(session.exec(query))


def iter_conversations(session: Session) -> Iterator[Conversation]:
    yield from session.exec(select(Conversation).order_by(col(Conversation.id)))


def delete_conversation(session: Session, *, conversation_id: int, user_id: int) -> None:
    """Delete one of the user's conversations with its messages and the votes on them."""
    conversation = get_conversation(session, conversation_id=conversation_id, user_id=user_id)
    # Children first: SQLite enforces ON DELETE CASCADE only with foreign_keys=ON, and
    # the parent_id self-reference makes the ORM's own cascade order ambiguous.
    session.exec(delete(Message).where(col(Message.conversation_id) == conversation.id))
    session.delete(conversation)
    session.flush()


def add_message(session: Session, *, conversation_id: int, role: str, content: str,
                parent_id: int | None = None, **produced_by: Any) -> Message:
    """Append a turn. `produced_by` holds an assistant message's generation record:
    adapter_version, sampling, seed, prompt_tokens, completion_tokens, finish_reason,
    latency_ms."""
    try:
        role = MessageRole(role)
    except ValueError:
        raise InvalidFeedback(
            f"message role must be one of {', '.join(MessageRole)}, not {role!r}") from None
    conversation = get_conversation(session, conversation_id=conversation_id)
    if parent_id is not None:
        parent = session.get(Message, parent_id)
        if parent is None or parent.conversation_id != conversation_id:
            raise InvalidFeedback(f"parent message {parent_id} is not in this conversation")
    message = Message(conversation_id=conversation_id, role=role, content=content,
                      parent_id=parent_id, **produced_by)
    session.add(message)
    conversation.updated_at = utcnow()
    session.flush()
    return message


def get_message(session: Session, *, message_id: int, user_id: int | None = None) -> Message:
    """The message; with `user_id`, only if it is in that user's conversation (one query:
    every vote asks this)."""
    if user_id is None:
        message = session.get(Message, message_id)
    else:
        message = session.exec(
            select(Message).join(Conversation, col(Conversation.id) == Message.conversation_id)
            .where(Message.id == message_id, Conversation.user_id == user_id)).first()
    if message is None:
        raise NotFound(f"message {message_id} not found")
    return message


def conversation_messages(session: Session, *, conversation_id: int) -> list[Message]:
    """Every message of the conversation (the whole tree), oldest first."""
    query = (select(Message).where(Message.conversation_id == conversation_id)
             .order_by(col(Message.id)))
    return list(session.exec(query))


def message_path(session: Session, *, message_id: int) -> list[Message]:
    """The thread from the conversation's first message down to `message_id`."""
    message = get_message(session, message_id=message_id)
    by_id = {m.id: m for m in conversation_messages(session,
                                                    conversation_id=message.conversation_id)}
    path = [message]
    while path[-1].parent_id is not None:
        path.append(by_id[path[-1].parent_id])
    return path[::-1]


# -- many at once: imports, restores and exports ------------------------------------------


def existing_external_ids(session: Session, *, external_ids: Collection[str]) -> set[str]:
    """Which of `external_ids` the store already holds (one query)."""
    if not external_ids:
        return set()
    query = select(Conversation.external_id).where(
        col(Conversation.external_id).in_(list(external_ids)))
    return {external_id for external_id in session.exec(query) if external_id is not None}


def conversation_start_times(session: Session, *, user_id: int) -> list[datetime]:
    """When each of the user's conversations was created (to recognise restored ones)."""
    query = select(Conversation.created_at).where(Conversation.user_id == user_id)
    return list(session.exec(query))


def iter_messages(session: Session) -> Iterator[Message]:
    yield from session.exec(select(Message).order_by(col(Message.id)))


def message_paths(session: Session, *, message_ids: Collection[int]) -> dict[int, list[Message]]:
    """`message_path` for many messages at once, loading each conversation involved
    once. Unknown ids are left out."""
    if not message_ids:
        return {}
    conversation_ids = select(Message.conversation_id).where(
        col(Message.id).in_(list(message_ids)))
    query = select(Message).where(col(Message.conversation_id).in_(conversation_ids))
    by_id = {message.id: message for message in session.exec(query)}
    paths = {}
    for message_id in set(message_ids) & by_id.keys():
        path = [by_id[message_id]]
        while path[-1].parent_id is not None:
            path.append(by_id[path[-1].parent_id])
        paths[message_id] = path[::-1]
    return paths


def user_message_ids(session: Session) -> list[int]:
    """The id of every user turn in the store, oldest first."""
    query = select(Message.id).where(Message.role == MessageRole.user).order_by(col(Message.id))
    return list(session.exec(query))
