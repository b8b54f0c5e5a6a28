"""Pages of the review queue (`feedback.queries.review`), each item with what an operator
needs to judge it: the prompt, the answer, who raised it and what they said."""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from feedback.errors import InvalidFeedback
from feedback.models import (
    Flag,
    Message,
    Rating,
    ReviewItem,
    ReviewKind,
    ReviewStatus,
    Rewrite,
    User,
)
from feedback.queries.review import disagreement_voters

MAX_ID = 2**31 - 1  # ids are INTEGER columns (32-bit on PostgreSQL)


@dataclass
class ReviewEntry:
    """One item. `detail` holds, by kind: flag {category, comment, flag_status};
    thumbs_down {reasons, comment}; rewrite {rewrite}; disagreement {votes: [{user_id,
    handle, vote}]} (a vote is up, down, or the picked answer's text)."""

    id: int
    kind: str
    status: str
    created_at: datetime
    message_id: int | None
    conversation_id: int | None
    prompt: str | None  # the user turn the message answers (the message itself if a prompt)
    answer: str | None  # the assistant message concerned
    adapter_version: str | None
    user_id: int | None  # who raised it (none for a disagreement)
    handle: str | None
    detail: dict[str, Any]
    exclude_scope: str | None
    note: str
    decided_by: str | None
    decided_at: datetime | None


@dataclass
class ReviewPage:
    items: list[ReviewEntry] = field(default_factory=list)
    next_cursor: str | None = None  # pass as `cursor` for the next page


def list_review_items(session: Session, *, status: str | None = None,
                      kind: str | None = None, cursor: str | None = None,
                      limit: int = 50) -> ReviewPage:
    """Items oldest first (a queue), optionally of one status and kind; a page ends with a
    cursor naming its last item, so items added meanwhile never shift a page."""
    if status is not None and status not in set(ReviewStatus):
        raise InvalidFeedback(f"status must be one of {', '.join(ReviewStatus)}, "
                              f"not {status!r}")
    if kind is not None and kind not in set(ReviewKind):
        raise InvalidFeedback(f"kind must be one of {', '.join(ReviewKind)}, not {kind!r}")
    if not 1 <= limit <= 200:
        raise InvalidFeedback(f"limit must be between 1 and 200, not {limit}")
    after = _after(cursor)
    query = select(ReviewItem).where(ReviewItem.id > after).order_by(col(ReviewItem.id))
    if status is not None:
        query = query.where(ReviewItem.status == status)
    if kind is not None:
        query = query.where(ReviewItem.kind == kind)
    rows = session.exec(query.limit(limit + 1)).all()
    page = ReviewPage(items=[review_entry(session, item) for item in rows[:limit]])
    if len(rows) > limit:
        page.next_cursor = str(rows[limit - 1].id)
    return page


def _after(cursor: str | None) -> int:
    if cursor is None:
        return 0
    if not cursor.isdigit() or int(cursor) > MAX_ID:
        raise InvalidFeedback(f"not a cursor of this list: {cursor!r}")
    return int(cursor)


def review_entry(session: Session, item: ReviewItem) -> ReviewEntry:
    message = session.get(Message, item.message_id) if item.message_id is not None else None
    parent = (session.get(Message, message.parent_id)
              if message is not None and message.parent_id is not None else None)
    is_prompt = message is not None and message.role != "assistant"
    raiser = session.get(User, item.user_id) if item.user_id is not None else None
    return ReviewEntry(
        id=item.id, kind=item.kind, status=item.status, created_at=item.created_at,
        message_id=item.message_id,
        conversation_id=message.conversation_id if message is not None else None,
        prompt=(message.content if is_prompt else parent.content if parent else None),
        answer=None if is_prompt or message is None else message.content,
        adapter_version=None if is_prompt or message is None else message.adapter_version,
        user_id=item.user_id, handle=raiser.handle if raiser is not None else None,
        detail=_detail(session, item), exclude_scope=item.exclude_scope, note=item.note,
        decided_by=item.decided_by, decided_at=item.decided_at)


def _detail(session: Session, item: ReviewItem) -> dict[str, Any]:
    if item.kind == ReviewKind.flag:
        flag = session.get(Flag, item.flag_id)
        return {} if flag is None else {"category": flag.category, "comment": flag.comment,
                                        "flag_status": flag.status}
    if item.kind == ReviewKind.thumbs_down:
        rating = session.get(Rating, item.rating_id)
        return {} if rating is None else {"reasons": rating.reasons, "comment": rating.comment}
    if item.kind == ReviewKind.rewrite:
        rewrite = session.get(Rewrite, item.rewrite_id)
        return {} if rewrite is None else {"rewrite": rewrite.content}
    votes = disagreement_voters(session, item)
    handles = dict(session.exec(select(User.id, User.handle)
                                .where(col(User.id).in_(list(votes)))).all()) if votes else {}
    return {"votes": [{"user_id": user_id, "handle": handles.get(user_id), "vote": vote}
                      for user_id, vote in sorted(votes.items())]}
