"""A user's own conversations: list, read (the whole message tree), delete."""

from datetime import datetime

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel

from feedback.db import session_scope
from feedback.queries import conversations as convs
from server.auth import CallerId
from server.store import MAX_ROW_ID, RowId, Store

router = APIRouter(prefix="/api/conversations", tags=["conversations"])


class ConversationOut(BaseModel):
    id: int
    title: str
    created_at: datetime
    updated_at: datetime


class MessageOut(BaseModel):
    id: int
    parent_id: int | None
    role: str
    content: str
    created_at: datetime
    adapter_version: str | None = None
    finish_reason: str | None = None
    completion_tokens: int | None = None


class ConversationDetail(ConversationOut):
    messages: list[MessageOut]


@router.get("")
def list_conversations(user_id: CallerId, db: Store,
                       limit: int = Query(50, ge=1, le=200),
                       offset: int = Query(0, ge=0, le=MAX_ROW_ID)) -> list[ConversationOut]:
    with session_scope(db) as session:
        return [ConversationOut.model_validate(c, from_attributes=True) for c in
                convs.list_conversations(session, user_id=user_id, limit=limit,
                                         offset=offset)]


@router.get("/{conversation_id}")
def read_conversation(conversation_id: RowId, user_id: CallerId,
                      db: Store) -> ConversationDetail:
    with session_scope(db) as session:
        conversation = convs.get_conversation(session, conversation_id=conversation_id,
                                              user_id=user_id)
        messages = convs.conversation_messages(session, conversation_id=conversation_id)
    return ConversationDetail(
        **ConversationOut.model_validate(conversation, from_attributes=True).model_dump(),
        messages=[MessageOut.model_validate(m, from_attributes=True) for m in messages])


@router.delete("/{conversation_id}", status_code=204)
def delete_conversation(conversation_id: RowId, user_id: CallerId, db: Store) -> Response:
    with session_scope(db) as session:
        convs.delete_conversation(session, conversation_id=conversation_id, user_id=user_id)
    return Response(status_code=204)
