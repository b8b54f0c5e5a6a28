"""Operator routes: the review queue (`feedback.queries.review`). Listing it first adds the
items that new feedback calls for; a resolution is recorded under the operator's handle
and audited."""

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from feedback.db import session_scope
from feedback.models import ReviewKind, ReviewStatus
from feedback.queries.review import AlreadyResolved, resolve_review_item, sync_review_queue
from feedback.queries.review_listing import list_review_items, review_entry
from server.auth import Operator
from server.errors import APIError
from server.store import RowId, Store

router = APIRouter(prefix="/api/review", tags=["operators"])


class ReviewItemOut(BaseModel):
    """One item. `detail`, by kind: flag {category, comment, flag_status}; thumbs_down
    {reasons, comment}; rewrite {rewrite}; disagreement {votes: [{user_id, handle, vote}]}
    (a vote is up, down or the picked answer's text)."""

    id: int
    kind: ReviewKind
    status: ReviewStatus
    created_at: datetime
    message_id: int | None
    conversation_id: int | None
    prompt: str | None
    answer: str | None
    adapter_version: str | None
    user_id: int | None  # who raised it (none for a disagreement)
    handle: str | None
    detail: dict[str, Any]
    exclude_scope: str | None
    note: str
    decided_by: str | None
    decided_at: datetime | None


class ReviewPageOut(BaseModel):
    items: list[ReviewItemOut]
    next_cursor: str | None  # pass as `cursor` for the next page


class ResolutionIn(BaseModel):
    """accept, dismiss, exclude (with `scope`: message, vote or user; `user_id` picks one
    of a disagreement's voters) or redact."""

    action: Literal["accept", "dismiss", "exclude", "redact"]
    scope: Literal["message", "vote", "user"] | None = None
    user_id: RowId | None = None
    note: str = Field("", max_length=2000)


@router.get("")
def list_review(
    _: Operator, db: Store,
    status: Annotated[ReviewStatus | None, Query(description="open, accepted, dismissed, "
                                                 "excluded or redacted")] = None,
    kind: Annotated[ReviewKind | None, Query(description="flag, thumbs_down, rewrite or "
                                             "disagreement")] = None,
    cursor: Annotated[str | None, Query(max_length=20)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> ReviewPageOut:
    """The queue, oldest first, with the prompt and answer of each item."""
    with session_scope(db) as session:
        sync_review_queue(session)
        page = list_review_items(session, status=status, kind=kind, cursor=cursor,
                                 limit=limit)
        return ReviewPageOut(
            items=[ReviewItemOut.model_validate(item, from_attributes=True)
                   for item in page.items],
            next_cursor=page.next_cursor)


@router.post("/{item_id}")
def resolve_review(item_id: RowId, body: ResolutionIn, operator: Operator,
                   db: Store) -> ReviewItemOut:
    """Resolve one item; an item is resolved once (409 after that)."""
    with session_scope(db) as session:
        try:
            item = resolve_review_item(session, item_id=item_id, action=body.action,
                                       scope=body.scope, user_id=body.user_id,
                                       note=body.note, actor=operator.handle,
                                       actor_id=operator.id)
        except AlreadyResolved as e:
            raise APIError(409, str(e), code="already_resolved") from None
        return ReviewItemOut.model_validate(review_entry(session, item), from_attributes=True)
