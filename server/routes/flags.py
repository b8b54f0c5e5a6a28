"""Flags on harmful or otherwise bad answers, by category."""

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlmodel import Session

from feedback.models import Flag, FlagCategory
from feedback.queries import conversations as convs
from feedback.queries import votes
from server.auth import CallerId
from server.deps import MetricsDep
from server.store import Records, RowId

router = APIRouter(prefix="/api/messages", tags=["flags"])


class FlagIn(BaseModel):
    category: FlagCategory
    comment: str = Field("", max_length=4000)


class FlagOut(FlagIn):
    id: int
    message_id: int


@router.post("/{message_id}/flags", status_code=201)
async def flag(message_id: RowId, body: FlagIn, user_id: CallerId, records: Records,
               metrics: MetricsDep) -> FlagOut:
    def store(session: Session) -> Flag:
        convs.get_message(session, message_id=message_id, user_id=user_id)
        return votes.add_flag(session, message_id=message_id, user_id=user_id,
                              category=body.category, comment=body.comment)
    stored = await records.run(store)
    metrics.votes.labels("flag").inc()
    return FlagOut.model_validate(stored, from_attributes=True)
