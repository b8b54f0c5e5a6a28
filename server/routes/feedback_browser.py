"""Operator routes over the feedback itself: a browser of every vote with the prompt and
answers it judged (for reviewing flagged content), and the volume of votes over time."""

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel

from feedback.db import session_scope
from feedback.models import FlagCategory
from feedback.queries import activity, browse
from feedback.queries.browse import FeedbackKind
from server.auth import Operator
from server.store import Store

router = APIRouter(prefix="/api/feedback", tags=["operators"])

class AnswerOut(BaseModel):
    message_id: int
    content: str
    adapter_version: str | None


class FeedbackItemOut(BaseModel):
    """One vote. `vote` holds, by kind: rating {thumb, reasons, comment}; comparison
    {choice, ranking}; rewrite {rewrite}; flag {category, comment}."""

    kind: FeedbackKind
    id: int
    time: datetime
    user_id: int
    handle: str
    conversation_id: int | None
    prompt_message_id: int | None
    prompt: str | None
    answers: list[AnswerOut]
    adapter_version: str | None  # of the judged answer (None for comparisons: see answers)
    vote: dict[str, Any]
    ai_feedback: bool  # the voter is a judge (an AI annotator), not a person


class FeedbackPageOut(BaseModel):
    items: list[FeedbackItemOut]
    next_cursor: str | None  # pass as `cursor` for the next (older) page


class VolumeBucket(BaseModel):
    start: datetime
    counts: dict[str, int]


class VolumeOut(BaseModel):
    bucket: Literal["hour", "day"]
    kinds: list[str]
    buckets: list[VolumeBucket]


@router.get("")
def browse_feedback(
    _: Operator, db: Store,
    kind: FeedbackKind | None = None,
    thumb: Annotated[int | None, Query(description="1 or -1: ratings up or down")] = None,
    category: Annotated[FlagCategory | None, Query(description="flags of this category")]
    = None,
    adapter: Annotated[str | None, Query(max_length=64,
                                         description="answers by this version, or 'base'")]
    = None,
    user: Annotated[str | None, Query(max_length=64, description="a user's handle")] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> FeedbackPageOut:
    """Every vote, newest first, with the prompt and the answer(s) it judged."""
    with session_scope(db) as session:
        page = browse.browse_feedback(session, kind=kind, thumb=thumb, category=category,
                                      adapter=adapter, user=user, cursor=cursor, limit=limit)
    return FeedbackPageOut(
        items=[FeedbackItemOut.model_validate(item, from_attributes=True)
               for item in page.items],
        next_cursor=page.next_cursor)


@router.get("/volume")
def feedback_volume(
    _: Operator, db: Store,
    bucket: Literal["hour", "day"] = "day",
    since: datetime | None = None,
    until: datetime | None = None,
) -> VolumeOut:
    """Votes of each kind per hour or day (UTC), empty buckets included; by default the
    last 48 hours or 30 days."""
    with session_scope(db) as session:
        volume = activity.feedback_volume(session, bucket=bucket, since=since, until=until)
    return VolumeOut(bucket=bucket, kinds=list(activity.VOLUME_KINDS),
                     buckets=[VolumeBucket(start=start, counts=counts)
                              for start, counts in volume])
