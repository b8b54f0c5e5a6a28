"""The feedback browser: every vote (ratings, decided comparisons, rewrites, flags), newest
first, with the prompt and the answers it judged, for operators reviewing what users said.

All four kinds share one order, (time, kind, id) descending, where a rating's and a
comparison's time is that of the latest verdict. A page ends with an opaque cursor that
names its last item; the next page starts strictly after it, so votes arriving meanwhile
never shift a page. Plain SQL only (no JSON operators), so it runs alike on SQLite and
PostgreSQL.
"""

import base64
import binascii
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, exists, or_
from sqlmodel import Session, col, select

from feedback.errors import InvalidFeedback, NotFound
from feedback.models import (
    Comparison,
    Flag,
    FlagCategory,
    Message,
    Rating,
    Rewrite,
    Role,
    User,
)


class FeedbackKind(StrEnum):
    rating = "rating"
    comparison = "comparison"
    rewrite = "rewrite"
    flag = "flag"


KINDS = tuple(FeedbackKind)
BASE = "base"  # the adapter filter's name for answers of the base model (no adapter)
MAX_ID = 2**31 - 1  # ids are INTEGER columns (32-bit on PostgreSQL)
_SINGLE = {  # kinds about one answer: (table, the column that dates the vote)
    FeedbackKind.rating: (Rating, Rating.updated_at),
    FeedbackKind.rewrite: (Rewrite, Rewrite.created_at),
    FeedbackKind.flag: (Flag, Flag.created_at),
}


@dataclass(frozen=True)
class Answer:
    message_id: int
    content: str
    adapter_version: str | None


@dataclass
class FeedbackItem:
    """One vote with what it was about. `answers` holds the judged answer, or for a
    comparison every answer in display order (A first)."""

    kind: str
    id: int
    time: datetime
    user_id: int
    handle: str
    conversation_id: int | None
    prompt_message_id: int | None
    answers: list[Answer]
    vote: dict[str, Any]
    prompt: str | None = None  # the prompt's text, filled in once per page
    ai_feedback: bool = False  # the voter is a judge (an AI annotator)

    @property
    def adapter_version(self) -> str | None:
        return self.answers[0].adapter_version if len(self.answers) == 1 else None

    @property
    def key(self) -> tuple[datetime, int, int]:
        return self.time, KINDS.index(FeedbackKind(self.kind)), self.id


@dataclass
class FeedbackPage:
    items: list[FeedbackItem] = field(default_factory=list)
    next_cursor: str | None = None


# -- cursors -------------------------------------------------------------------------------


def encode_cursor(key: tuple[datetime, int, int]) -> str:
    time, rank, item_id = key
    raw = f"{time.astimezone(UTC).isoformat()}|{rank}|{item_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int, int]:
    """The key a cursor names; a cursor this server could not have handed out (a far
    timezone, an id beyond the tables' INTEGER ids) is refused, never sent to the database."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, rank, item_id = raw.split("|")
        time, rank, item_id = datetime.fromisoformat(stamp), int(rank), int(item_id)
        if time.tzinfo is not None:
            time = time.astimezone(UTC)  # an offset past the calendar's ends overflows
    except (ValueError, OverflowError, UnicodeDecodeError, binascii.Error):
        raise InvalidFeedback("cursor is not one this server handed out") from None
    if time.tzinfo is None or not 0 <= rank < len(KINDS) or not 1 <= item_id <= MAX_ID:
        raise InvalidFeedback("cursor is not one this server handed out")
    return time, rank, item_id


def _after(stamp, id_column, rank: int, cursor: tuple[datetime, int, int] | None):
    """Rows of the kind ranked `rank` that sort strictly after the cursor."""
    if cursor is None:
        return None
    time, cursor_rank, cursor_id = cursor
    if rank < cursor_rank:
        return col(stamp) <= time
    if rank > cursor_rank:
        return col(stamp) < time
    return or_(col(stamp) < time, and_(col(stamp) == time, col(id_column) < cursor_id))


# -- filters -------------------------------------------------------------------------------


def _kinds(kind: str | None, thumb: int | None, category: str | None) -> list[FeedbackKind]:
    if kind is not None:
        try:
            kind = FeedbackKind(kind)
        except ValueError:
            raise InvalidFeedback(
                f"kind must be one of {', '.join(KINDS)}, not {kind!r}") from None
    if thumb is not None and thumb not in (-1, 1):
        raise InvalidFeedback(f"thumb must be 1 or -1, not {thumb!r}")
    if category is not None and category not in set(FlagCategory):
        raise InvalidFeedback(
            f"category must be one of {', '.join(FlagCategory)}, not {category!r}")
    if thumb is not None and category is not None:
        raise InvalidFeedback("thumb filters ratings and category filters flags: give one")
    implied = (FeedbackKind.rating if thumb is not None
               else FeedbackKind.flag if category is not None else None)
    if kind is not None and implied is not None and kind != implied:
        what = "thumb" if thumb is not None else "category"
        raise InvalidFeedback(f"{what} filters {implied}s; it cannot be combined with "
                              f"kind={kind}")
    chosen = kind or implied
    return [chosen] if chosen else list(KINDS)


def _adapter_matches(message_column, adapter: str):
    return (col(message_column).is_(None) if adapter == BASE
            else col(message_column) == adapter)


# -- the query -----------------------------------------------------------------------------


def browse_feedback(session: Session, *, kind: str | None = None, thumb: int | None = None,
                    category: str | None = None, adapter: str | None = None,
                    user: str | None = None, cursor: str | None = None,
                    limit: int = 50) -> FeedbackPage:
    """A page of votes, newest first. Filters: `kind`, `thumb` (ratings up or down),
    flag `category`, `adapter` (the version that wrote the judged answer; "base" for
    the base model; for a comparison, any of its answers), `user` (a handle)."""
    if not 1 <= limit <= 500:
        raise InvalidFeedback(f"limit must be 1 to 500, not {limit}")
    kinds = _kinds(kind, thumb, category)
    after = decode_cursor(cursor) if cursor else None
    user_id = None
    if user is not None:
        found = session.exec(select(User.id).where(User.handle == user)).first()
        if found is None:
            raise NotFound(f"no user with handle {user!r}")
        user_id = found
    need = limit + 1
    items: list[FeedbackItem] = []
    for k in kinds:
        rank = KINDS.index(k)
        if k == FeedbackKind.comparison:
            items += _comparisons(session, rank=rank, after=after, adapter=adapter,
                                  user_id=user_id, need=need)
        else:
            items += _single(session, k, rank=rank, after=after, thumb=thumb,
                             category=category, adapter=adapter, user_id=user_id, need=need)
    items.sort(key=lambda item: item.key, reverse=True)
    page = FeedbackPage(items=items[:limit])
    if len(items) > limit:
        page.next_cursor = encode_cursor(page.items[-1].key)
    _fill_prompts(session, page.items)
    return page


def _single(session: Session, kind: FeedbackKind, *, rank: int, after, thumb, category,
            adapter, user_id, need: int) -> list[FeedbackItem]:
    model, stamp = _SINGLE[kind]
    query = (select(model, Message, User)
             .join(Message, col(model.message_id) == col(Message.id))
             .join(User, col(model.user_id) == col(User.id)))
    conditions = [_after(stamp, model.id, rank, after)]
    if thumb is not None:
        conditions.append(col(Rating.thumb) == thumb)
    if category is not None:
        conditions.append(col(Flag.category) == category)
    if adapter is not None:
        conditions.append(_adapter_matches(Message.adapter_version, adapter))
    if user_id is not None:
        conditions.append(col(model.user_id) == user_id)
    query = query.where(*[c for c in conditions if c is not None])
    rows = session.exec(query.order_by(col(stamp).desc(), col(model.id).desc()).limit(need))
    return [FeedbackItem(kind=kind, id=vote.id, time=getattr(vote, stamp.key),
                         user_id=person.id, handle=person.handle,
                         ai_feedback=person.role == Role.judge,
                         conversation_id=answer.conversation_id,
                         prompt_message_id=answer.parent_id,
                         answers=[Answer(answer.id, answer.content, answer.adapter_version)],
                         vote=_vote(kind, vote))
            for vote, answer, person in rows]


def _vote(kind: FeedbackKind, vote) -> dict[str, Any]:
    if kind == FeedbackKind.rating:
        return {"thumb": vote.thumb, "reasons": list(vote.reasons), "comment": vote.comment}
    if kind == FeedbackKind.rewrite:
        return {"rewrite": vote.content}
    if kind == FeedbackKind.flag:
        return {"category": vote.category, "comment": vote.comment}
    return {"choice": vote.choice, "ranking": vote.ranking}


def _comparisons(session: Session, *, rank: int, after, adapter, user_id,
                 need: int) -> list[FeedbackItem]:
    stamp = Comparison.updated_at
    query = (select(Comparison, User).join(User, col(Comparison.user_id) == col(User.id))
             .where(col(Comparison.choice).is_not(None) | col(Comparison.ranking).is_not(None)))
    conditions = [_after(stamp, Comparison.id, rank, after)]
    if adapter is not None:  # a sibling answer by it; its being shown is checked below
        conditions.append(exists().where(
            col(Message.parent_id) == col(Comparison.prompt_message_id),
            _adapter_matches(Message.adapter_version, adapter)))
    if user_id is not None:
        conditions.append(col(Comparison.user_id) == user_id)
    query = (query.where(*[c for c in conditions if c is not None])
             .order_by(col(stamp).desc(), col(Comparison.id).desc()))
    items: list[FeedbackItem] = []
    offset = 0
    while len(items) < need:
        rows = session.exec(query.offset(offset).limit(need)).all()
        offset += len(rows)
        ids = {i for comparison, _ in rows for i in comparison.candidate_ids}
        messages = {m.id: m for m in session.exec(
            select(Message).where(col(Message.id).in_(ids)))} if ids else {}
        for comparison, person in rows:
            shown = [messages[i] for i in comparison.candidate_ids if i in messages]
            wanted = adapter is None or any(
                (m.adapter_version is None) if adapter == BASE
                else m.adapter_version == adapter for m in shown)
            if wanted:
                items.append(FeedbackItem(
                    kind=FeedbackKind.comparison, id=comparison.id,
                    time=comparison.updated_at, user_id=person.id, handle=person.handle,
                    ai_feedback=person.role == Role.judge,
                    conversation_id=shown[0].conversation_id if shown else None,
                    prompt_message_id=comparison.prompt_message_id,
                    answers=[Answer(m.id, m.content, m.adapter_version) for m in shown],
                    vote=_vote(FeedbackKind.comparison, comparison)))
        if len(rows) < need:
            break
    return items[:need]


def _fill_prompts(session: Session, items: list[FeedbackItem]) -> None:
    """Each item's prompt text, in one query for the page."""
    ids = {item.prompt_message_id for item in items if item.prompt_message_id is not None}
    texts = dict(session.exec(select(Message.id, Message.content)
                              .where(col(Message.id).in_(ids))).all()) if ids else {}
    for item in items:
        item.prompt = texts.get(item.prompt_message_id)
