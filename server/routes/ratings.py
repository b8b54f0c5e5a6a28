"""Thumbs on answers: one per user and message; voting again updates it."""

from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlmodel import Session

from feedback.models import Rating
from feedback.queries import conversations as convs
from feedback.queries import votes
from server.auth import CallerId, VoteScope
from server.deps import MetricsDep
from server.store import Records, RowId

router = APIRouter(prefix="/api/messages", tags=["ratings"])


class RatingIn(BaseModel):
    thumb: int = Field(description="1 for up, -1 for down")
    reasons: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=list,
                                                                max_length=16)
    comment: str = Field("", max_length=4000)


class RatingOut(RatingIn):
    id: int
    message_id: int


@router.put("/{message_id}/rating")
async def rate(message_id: RowId, body: RatingIn, user_id: CallerId, scope: VoteScope,
               records: Records, metrics: MetricsDep) -> RatingOut:
    """Thumb an answer of one's own conversations (a judge: any answer)."""
    def store(session: Session) -> Rating:
        convs.get_message(session, message_id=message_id, user_id=scope)
        return votes.upsert_rating(session, message_id=message_id, user_id=user_id,
                                   thumb=body.thumb, reasons=body.reasons,
                                   comment=body.comment)
    rating = await records.run(store)
    metrics.votes.labels("rating").inc()
    return RatingOut.model_validate(rating, from_attributes=True)
