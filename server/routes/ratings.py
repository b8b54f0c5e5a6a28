"""Thumbs on answers: one per user and message; voting again updates it."""

from fastapi import APIRouter
from pydantic import BaseModel, Field

from feedback.queries import conversations as convs
from feedback.queries import votes
from server.auth import CurrentUser
from server.deps import MetricsDep
from server.store import RowId, SessionDep

router = APIRouter(prefix="/api/messages", tags=["ratings"])


class RatingIn(BaseModel):
    thumb: int = Field(description="1 for up, -1 for down")
    reasons: list[str] = Field(default_factory=list, max_length=16)
    comment: str = Field("", max_length=4000)


class RatingOut(RatingIn):
    id: int
    message_id: int


@router.put("/{message_id}/rating")
def rate(message_id: RowId, body: RatingIn, user: CurrentUser, session: SessionDep,
         metrics: MetricsDep) -> RatingOut:
    convs.get_message(session, message_id=message_id, user_id=user.id)
    rating = votes.upsert_rating(session, message_id=message_id, user_id=user.id,
                                 thumb=body.thumb, reasons=body.reasons, comment=body.comment)
    metrics.votes.labels("rating").inc()
    return RatingOut.model_validate(rating, from_attributes=True)
