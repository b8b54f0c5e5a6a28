"""Flags on harmful or otherwise bad answers, by category."""

from fastapi import APIRouter
from pydantic import BaseModel, Field

from feedback.db import session_scope
from feedback.models import FlagCategory
from feedback.queries import conversations as convs
from feedback.queries import votes
from server.auth import CallerId
from server.deps import MetricsDep
from server.store import RowId, Store

router = APIRouter(prefix="/api/messages", tags=["flags"])


class FlagIn(BaseModel):
    category: FlagCategory
    comment: str = Field("", max_length=4000)


class FlagOut(FlagIn):
    id: int
    message_id: int


@router.post("/{message_id}/flags", status_code=201)
def flag(message_id: RowId, body: FlagIn, user_id: CallerId, db: Store,
         metrics: MetricsDep) -> FlagOut:
    with session_scope(db) as session:
        convs.get_message(session, message_id=message_id, user_id=user_id)
        stored = votes.add_flag(session, message_id=message_id, user_id=user_id,
                                category=body.category, comment=body.comment)
    metrics.votes.labels("flag").inc()
    return FlagOut.model_validate(stored, from_attributes=True)
