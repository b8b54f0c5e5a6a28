"""The operators' review queue: feedback that a person should look at, and its resolution.

Items (`review_item`), made once each by `sync_review_queue` (every listing runs it, so
feedback from any process, import or replay lands in the queue):

* `flag` — every flag;
* `thumbs_down` — every thumbs-down that carries a comment;
* `rewrite` — every rewrite;
* `disagreement` — an item that users voted opposite ways: the same answer (by text, for a
  first turn, as the annotator consensus in `feedback.queries.annotators` groups them; else
  the same message) thumbed up by some and down by others, or the same two answers to the
  same first prompt picked differently. An open disagreement follows its votes as more
  arrive.

Resolutions (who and when on the item, and an audit event, `review_<action>`):

* `accept` — a flag is `resolved` (it keeps counting as a bad label); a rewrite is approved
  (with `FLYWHEEL_REVIEW_REWRITES=1` only approved rewrites train); otherwise noted;
* `dismiss` — a flag is `dismissed` and a rewrite rejected: neither trains any more; a
  thumbs-down or a disagreement is noted, its votes unchanged;
* `exclude` — `scope` `message` (every vote on the item's message), `vote` (the flag,
  rating or rewrite; a disagreement's every vote) or `user` (every vote of the item's
  author, or of `user_id`, one of a disagreement's voters) is left out of training,
  exports and replays (`feedback.queries.exclusions`);
* `redact` — the rewrite's text, else the message's, becomes `REDACTED` in the store, and
  is left out of training.

A disagreement's message is every copy of it that its votes judged (the answer thumbed, or
the prompt of the picks), for `exclude` `message` and `redact` alike.

A flag excluded by `vote` or `user` is `dismissed`; by `message` or redaction, `resolved`.
An item is resolved once: resolving it again is refused (`AlreadyResolved`).
"""

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import and_, func
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from feedback.errors import InvalidFeedback, NotFound
from feedback.models import (
    AuditEvent,
    Choice,
    Comparison,
    ExclusionScope,
    Flag,
    FlagStatus,
    Message,
    Rating,
    ReviewItem,
    ReviewKind,
    ReviewStatus,
    Rewrite,
    utcnow,
)
from feedback.queries.exclusions import exclude

REDACTED = "[redacted]"
BATCH = 500  # messages per lookup
ACTIONS = ("accept", "dismiss", "exclude", "redact")
SCOPES = ("message", "vote", "user")
_STATUS = {"accept": ReviewStatus.accepted, "dismiss": ReviewStatus.dismissed,
           "exclude": ReviewStatus.excluded, "redact": ReviewStatus.redacted}
_VOTE_SCOPE = {ReviewKind.flag: ExclusionScope.flag, ReviewKind.thumbs_down: ExclusionScope.rating,
               ReviewKind.rewrite: ExclusionScope.rewrite}


class AlreadyResolved(InvalidFeedback):
    """The item was resolved before; a resolution stands."""


# -- filling the queue ---------------------------------------------------------------


def sync_review_queue(session: Session) -> int:
    """Add the items the store's feedback calls for and that the queue lacks; refresh the
    votes of open disagreements. Returns how many items were added."""
    rows: list[dict[str, Any]] = []
    for flag_id, message_id, user_id in session.exec(
            select(Flag.id, Flag.message_id, Flag.user_id).where(
                ~select(ReviewItem.id).where(ReviewItem.flag_id == Flag.id).exists())):
        rows.append(dict(kind=ReviewKind.flag, key=f"flag:{flag_id}", flag_id=flag_id,
                         message_id=message_id, user_id=user_id))
    for rating_id, message_id, user_id in session.exec(
            select(Rating.id, Rating.message_id, Rating.user_id).where(
                Rating.thumb == -1, Rating.comment != "",
                ~select(ReviewItem.id).where(ReviewItem.rating_id == Rating.id).exists())):
        rows.append(dict(kind=ReviewKind.thumbs_down, key=f"rating:{rating_id}",
                         rating_id=rating_id, message_id=message_id, user_id=user_id))
    for rewrite_id, message_id, user_id in session.exec(
            select(Rewrite.id, Rewrite.message_id, Rewrite.user_id).where(
                ~select(ReviewItem.id).where(ReviewItem.rewrite_id == Rewrite.id).exists())):
        rows.append(dict(kind=ReviewKind.rewrite, key=f"rewrite:{rewrite_id}",
                         rewrite_id=rewrite_id, message_id=message_id, user_id=user_id))
    known = {key: (item_id, status, detail)
             for item_id, key, status, detail in session.exec(
                 select(ReviewItem.id, ReviewItem.key, ReviewItem.status, ReviewItem.detail)
                 .where(ReviewItem.kind == ReviewKind.disagreement))}
    for key, (message_id, detail) in _disagreements(session).items():
        if key not in known:
            rows.append(dict(kind=ReviewKind.disagreement, key=key, message_id=message_id,
                             detail=detail))
        elif known[key][1] == ReviewStatus.open and known[key][2] != detail:  # more votes
            item = session.get(ReviewItem, known[key][0])
            item.detail = detail
            session.add(item)
    session.flush()
    return _add_new(session, rows)


def _add_new(session: Session, rows: list[dict[str, Any]]) -> int:
    """Insert the items; those another process added meanwhile (the same key) are
    skipped."""
    try:
        with session.begin_nested():
            session.add_all(ReviewItem(**row) for row in rows)
        return len(rows)
    except IntegrityError:
        added = 0
        for row in rows:
            try:
                with session.begin_nested():
                    session.add(ReviewItem(**row))
                added += 1
            except IntegrityError:
                continue
        return added


def _disagreements(session: Session) -> dict[str, tuple[int, dict[str, list[int]]]]:
    """key -> (the message shown for it, {"ratings": ids} or {"comparisons": ids})."""
    thumbs: dict[tuple, dict[int, tuple[int, int, int]]] = defaultdict(dict)
    for rating_id, user_id, thumb, message_id, text, question, parent in _split_thumbs(session):
        item = ("thumb", question, text) if parent is None else ("thumb", message_id)
        thumbs[item][user_id] = (rating_id, thumb, message_id)
    found: dict[str, tuple[int, dict[str, list[int]]]] = {}
    for item, by_user in thumbs.items():
        if len({thumb for _, thumb, _ in by_user.values()}) > 1:
            ids = sorted(rating_id for rating_id, _, _ in by_user.values())
            message_id = min(by_user.values())[2]
            found[_key(item)] = (message_id, {"ratings": ids})
    for item, votes in _picks(session).items():
        if len({winner for _, winner, _ in votes.values()}) > 1:
            ids = sorted(comparison_id for comparison_id, _, _ in votes.values())
            found[_key(item)] = (min(votes.values())[2], {"comparisons": ids})
    return found


def _split_thumbs(session: Session) -> list[tuple]:
    """The ratings of the items thumbed both up and down (found by the database, so a
    listing does not read every rating): (rating id, user, thumb, message, answer text,
    prompt text, the prompt's parent), in rating order."""
    answer, prompt = aliased(Message), aliased(Message)
    first_turn = col(prompt.parent_id).is_(None)
    split = func.min(Rating.thumb) < func.max(Rating.thumb)

    def judged(*columns: Any) -> Any:
        return (select(*columns).select_from(Rating)
                .join(answer, col(answer.id) == Rating.message_id)
                .join(prompt, col(prompt.id) == answer.parent_id))

    texts = (judged(prompt.content.label("question"), answer.content.label("text"))
             .where(first_turn).group_by(prompt.content, answer.content).having(split)
             .subquery())
    messages = judged(Rating.message_id).where(~first_turn).group_by(
        Rating.message_id).having(split)
    rows = judged(Rating.id, Rating.user_id, Rating.thumb, Rating.message_id, answer.content,
                  prompt.content, prompt.parent_id)
    same_text = rows.join(texts, and_(texts.c.question == prompt.content,
                                      texts.c.text == answer.content)).where(first_turn)
    same_message = rows.where(~first_turn, col(Rating.message_id).in_(messages))
    return sorted([*session.exec(same_text), *session.exec(same_message)])


def _picks(session: Session) -> dict[tuple, dict[int, tuple[int, object, int]]]:
    """Side-by-side items -> user -> (comparison id, the winner, the prompt message)."""
    rows = session.exec(select(Comparison).where(
        col(Comparison.choice).in_((Choice.a, Choice.b))).order_by(col(Comparison.id))).all()
    ids = {m for c in rows for m in (*c.candidate_ids, c.prompt_message_id)}
    texts = {m.id: m for m in _messages(session, ids)}
    picks: dict[tuple, dict[int, tuple[int, object, int]]] = defaultdict(dict)
    for c in rows:
        if len(c.candidate_ids) != 2 or not all(m in texts for m in c.candidate_ids):
            continue
        first, second = (texts[m].content for m in c.candidate_ids)
        prompt = texts.get(c.prompt_message_id)
        if prompt is not None and prompt.parent_id is None and first != second:
            item: tuple = ("pick", prompt.content, *sorted((first, second)))
            winner: object = first if c.choice == Choice.a else second
        else:
            item = ("pick", *sorted(c.candidate_ids))
            winner = c.candidate_ids[0 if c.choice == Choice.a else 1]
        picks[item][c.user_id] = (c.id, winner, c.prompt_message_id)
    return picks


def _messages(session: Session, ids: Iterable[int]) -> list[Message]:
    ordered = sorted(ids)
    return [m for start in range(0, len(ordered), BATCH) for m in session.exec(
        select(Message).where(col(Message.id).in_(ordered[start:start + BATCH])))]


def _key(item: tuple) -> str:
    return "disagreement:" + hashlib.sha256(repr(item).encode()).hexdigest()[:64]


# -- resolving -----------------------------------------------------------------------


def get_review_item(session: Session, *, item_id: int) -> ReviewItem:
    item = session.get(ReviewItem, item_id)
    if item is None:
        raise NotFound(f"review item {item_id} not found")
    return item


def resolve_review_item(session: Session, *, item_id: int, action: str, actor: str,
                        actor_id: int | None = None, scope: str | None = None,
                        user_id: int | None = None, note: str = "") -> ReviewItem:
    """Resolve one item (module doc) as `actor` (a handle, or e.g. "cli:login"; `actor_id`:
    the operator's user id, if any), and audit it."""
    if action not in ACTIONS:
        raise InvalidFeedback(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
    if (action == "exclude") != (scope is not None):
        raise InvalidFeedback("give a scope (message, vote or user) with exclude, and only "
                              "with exclude")
    if scope is not None and scope not in SCOPES:
        raise InvalidFeedback(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
    if user_id is not None and scope != "user":
        raise InvalidFeedback("user_id goes with exclude and the scope user")
    item = get_review_item(session, item_id=item_id)
    if item.status != ReviewStatus.open:
        raise AlreadyResolved(f"review item {item_id} was already resolved ({item.status}) "
                              f"by {item.decided_by} at {item.decided_at:%Y-%m-%d %H:%M} UTC")
    kind = ReviewKind(item.kind)
    excluded_user = None
    if action == "exclude":
        excluded_user = _exclude(session, item, kind, scope, user_id,
                                 dict(actor=actor, actor_id=actor_id, review_item_id=item.id))
    elif action == "redact":
        _redact(session, item, kind, dict(actor=actor, actor_id=actor_id, review_item_id=item.id))
    elif action == "dismiss" and kind in (ReviewKind.flag, ReviewKind.rewrite):
        exclude(session, scope=_VOTE_SCOPE[kind], target_id=_vote_id(item, kind), actor=actor,
                actor_id=actor_id, review_item_id=item.id)
    if kind == ReviewKind.flag:
        dismissed = action == "dismiss" or scope in ("vote", "user")
        flag = session.get(Flag, item.flag_id)
        if flag is not None:
            flag.status = FlagStatus.dismissed if dismissed else FlagStatus.resolved
            session.add(flag)
    item.status, item.exclude_scope, item.note = _STATUS[action], scope, note
    item.decided_by_id, item.decided_by, item.decided_at = actor_id, actor, utcnow()
    session.add(item)
    detail: dict[str, Any] = {"review_item": item.id, "kind": item.kind, "note": note}
    if scope is not None:
        detail["scope"] = scope
    if excluded_user is not None:
        detail["user_id"] = excluded_user
    session.add(AuditEvent(actor_id=actor_id, actor=actor, action=f"review_{action}",
                           detail=detail))
    session.flush()
    return item


def _vote_id(item: ReviewItem, kind: ReviewKind) -> int:
    return {ReviewKind.flag: item.flag_id, ReviewKind.thumbs_down: item.rating_id,
            ReviewKind.rewrite: item.rewrite_id}[kind]


def _exclude(session: Session, item: ReviewItem, kind: ReviewKind, scope: str | None,
             user_id: int | None, made: dict[str, Any]) -> int | None:
    """The exclusions of one resolution (`made`: who made them, for which item); returns
    the user excluded, if any."""
    if scope == "message":
        for message_id in _messages_of(session, item):
            exclude(session, scope=ExclusionScope.message, target_id=message_id, **made)
        return None
    if scope == "vote":
        if kind != ReviewKind.disagreement:
            exclude(session, scope=_VOTE_SCOPE[kind], target_id=_vote_id(item, kind), **made)
        for rating_id in item.detail.get("ratings", []):
            exclude(session, scope=ExclusionScope.rating, target_id=rating_id, **made)
        for comparison_id in item.detail.get("comparisons", []):
            exclude(session, scope=ExclusionScope.comparison, target_id=comparison_id, **made)
        return None
    if kind == ReviewKind.disagreement:
        voters = set(disagreement_voters(session, item))
        if user_id is None or user_id not in voters:
            raise InvalidFeedback(f"give user_id, one of this disagreement's voters: "
                                  f"{', '.join(map(str, sorted(voters)))}")
    elif user_id is not None and user_id != item.user_id:
        raise InvalidFeedback(f"review item {item.id} is user {item.user_id}'s; exclude "
                              "another user from one of their own items")
    target = user_id if user_id is not None else item.user_id
    exclude(session, scope=ExclusionScope.user, target_id=target, **made)
    return target


def _redact(session: Session, item: ReviewItem, kind: ReviewKind, made: dict[str, Any]
            ) -> None:
    if kind == ReviewKind.rewrite:
        rewrite = session.get(Rewrite, item.rewrite_id)
        if rewrite is not None:
            rewrite.content = REDACTED
            session.add(rewrite)
            exclude(session, scope=ExclusionScope.rewrite, target_id=rewrite.id, **made)
        return
    for message in _messages(session, _messages_of(session, item)):
        message.content = REDACTED
        session.add(message)
        exclude(session, scope=ExclusionScope.message, target_id=message.id, **made)


def _messages_of(session: Session, item: ReviewItem) -> list[int]:
    """The message an item is about; for a disagreement grouped by text, every copy of it
    (the answers its thumbs judged, or the prompts of its picks)."""
    ids = {item.message_id} if item.message_id is not None else set()
    if ratings := item.detail.get("ratings"):
        ids.update(session.exec(select(Rating.message_id).where(col(Rating.id).in_(ratings))))
    if comparisons := item.detail.get("comparisons"):
        ids.update(session.exec(select(Comparison.prompt_message_id).where(
            col(Comparison.id).in_(comparisons))))
    if not ids:
        raise InvalidFeedback(f"review item {item.id} has no message left")
    return sorted(ids)


def disagreement_voters(session: Session, item: ReviewItem) -> dict[int, str]:
    """user id -> their vote ("up", "down", or the picked answer's text) in a
    disagreement."""
    votes: dict[int, str] = {}
    ratings = item.detail.get("ratings", [])
    if ratings:
        for rating in session.exec(select(Rating).where(col(Rating.id).in_(ratings))):
            votes[rating.user_id] = "up" if rating.thumb > 0 else "down"
    comparisons = item.detail.get("comparisons", [])
    if comparisons:
        rows = session.exec(select(Comparison).where(col(Comparison.id).in_(comparisons))).all()
        answers = {m.id: m.content for m in _messages(
            session, {m for c in rows for m in c.candidate_ids})}
        for c in rows:
            if c.choice in (Choice.a, Choice.b):
                winner = c.candidate_ids[0 if c.choice == Choice.a else 1]
                votes[c.user_id] = answers.get(winner, "")
    return votes
