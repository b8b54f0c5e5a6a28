"""Thumbs on answers: one per user and message; voting again updates it."""

from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, Field

from feedback.db import session_scope
from feedback.queries import conversations as convs
from feedback.queries import votes
from server.auth import CallerId, VoteScope
from server.deps import MetricsDep
from server.store import RowId, Store

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
def rate(message_id: RowId, body: RatingIn, user_id: CallerId, scope: VoteScope, db: Store,
         metrics: MetricsDep) -> RatingOut:
    """Thumb an answer of one's own conversations (a judge: any answer)."""
    with session_scope(db) as session:
        convs.get_message(session, message_id=message_id, user_id=scope)
        rating = votes.upsert_rating(session, message_id=message_id, user_id=user_id,
                                     thumb=body.thumb, reasons=body.reasons,
                                     comment=body.comment)
    metrics.votes.labels("rating").inc()
    return RatingOut.model_validate(rating, from_attributes=True)
