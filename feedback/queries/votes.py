"""Votes on assistant messages: ratings, side-by-side comparisons, rewrites and flags."""

from collections.abc import Iterable, Iterator

from sqlmodel import Session, col, select

from feedback.errors import InvalidFeedback, NotFound
from feedback.models import (
    Choice,
    Comparison,
    Flag,
    FlagCategory,
    Message,
    MessageRole,
    Rating,
    Rewrite,
    utcnow,
)


def _assistant_message(session: Session, message_id: int) -> Message:
    message = session.get(Message, message_id)
    if message is None:
        raise NotFound(f"message {message_id} not found")
    if message.role != MessageRole.assistant:
        raise InvalidFeedback(f"message {message_id} is not an assistant answer")
    return message


# -- ratings --------------------------------------------------------------------------


def upsert_rating(session: Session, *, message_id: int, user_id: int, thumb: int,
                  reasons: Iterable[str] = (), comment: str = "") -> Rating:
    """Thumb up (+1) or down (-1). One rating per user and message: voting again updates."""
    if thumb not in (-1, 1):
        raise InvalidFeedback(f"thumb must be 1 or -1, not {thumb!r}")
    _assistant_message(session, message_id)
    rating = session.exec(select(Rating).where(Rating.message_id == message_id,
                                               Rating.user_id == user_id)).first()
    if rating is None:
        rating = Rating(message_id=message_id, user_id=user_id, thumb=thumb)
        session.add(rating)
    rating.thumb, rating.reasons, rating.comment = thumb, list(reasons), comment
    rating.updated_at = utcnow()
    session.flush()
    return rating


def iter_ratings(session: Session) -> Iterator[Rating]:
    yield from session.exec(select(Rating).order_by(col(Rating.id)))


# -- comparisons ----------------------------------------------------------------------


def create_comparison(session: Session, *, user_id: int, prompt_message_id: int,
                      candidate_ids: list[int]) -> Comparison:
    """A battle between answers to one prompt, in the order shown (A first)."""
    if len(candidate_ids) < 2 or len(set(candidate_ids)) != len(candidate_ids):
        raise InvalidFeedback("a comparison needs two or more distinct answers")
    for message_id in candidate_ids:
        if _assistant_message(session, message_id).parent_id != prompt_message_id:
            raise InvalidFeedback(
                f"message {message_id} does not answer message {prompt_message_id}")
    comparison = Comparison(user_id=user_id, prompt_message_id=prompt_message_id,
                            candidate_ids=list(candidate_ids))
    session.add(comparison)
    session.flush()
    return comparison


def get_comparison(session: Session, *, comparison_id: int,
                   user_id: int | None = None) -> Comparison:
    comparison = session.get(Comparison, comparison_id)
    if comparison is None or (user_id is not None and comparison.user_id != user_id):
        raise NotFound(f"comparison {comparison_id} not found")
    return comparison


def record_choice(session: Session, *, comparison_id: int, user_id: int,
                  choice: str | None = None, ranking: list[int] | None = None) -> Comparison:
    """The user's verdict: `choice` (a, b, tie, both_bad) between two answers, or a full
    `ranking` of the answers (message ids, best first). Voting again replaces it."""
    comparison = get_comparison(session, comparison_id=comparison_id, user_id=user_id)
    if (choice is None) == (ranking is None):
        raise InvalidFeedback("give either a choice or a ranking")
    if choice is not None:
        try:
            choice = Choice(choice)
        except ValueError:
            raise InvalidFeedback(
                f"choice must be one of a, b, tie, both_bad, not {choice!r}") from None
        if len(comparison.candidate_ids) != 2:
            raise InvalidFeedback("a choice is for two answers; rank three or more")
    if ranking is not None and sorted(ranking) != sorted(comparison.candidate_ids):
        raise InvalidFeedback("a ranking must order every answer of the comparison once")
    comparison.choice = choice
    comparison.ranking = list(ranking) if ranking is not None else None
    comparison.updated_at = utcnow()
    session.add(comparison)
    session.flush()
    return comparison


def iter_comparisons(session: Session, *, decided_only: bool = True) -> Iterator[Comparison]:
    query = select(Comparison).order_by(col(Comparison.id))
    if decided_only:
        query = query.where(col(Comparison.choice).is_not(None)
                            | col(Comparison.ranking).is_not(None))
    yield from session.exec(query)


# -- rewrites and flags ---------------------------------------------------------------


def add_rewrite(session: Session, *, message_id: int, user_id: int, content: str) -> Rewrite:
    if not content.strip():
        raise InvalidFeedback("a rewrite cannot be empty")
    _assistant_message(session, message_id)
    rewrite = Rewrite(message_id=message_id, user_id=user_id, content=content)
    session.add(rewrite)
    session.flush()
    return rewrite


def iter_rewrites(session: Session) -> Iterator[Rewrite]:
    yield from session.exec(select(Rewrite).order_by(col(Rewrite.id)))


def add_flag(session: Session, *, message_id: int, user_id: int, category: str,
             comment: str = "") -> Flag:
    """Flag an answer; flagging it again in the same category updates the comment."""
    try:
        category = FlagCategory(category)
    except ValueError:
        allowed = ", ".join(FlagCategory)
        raise InvalidFeedback(
            f"flag category must be one of {allowed}, not {category!r}") from None
    _assistant_message(session, message_id)
    flag = session.exec(select(Flag).where(Flag.message_id == message_id,
                                           Flag.user_id == user_id,
                                           Flag.category == category)).first()
    if flag is None:
        flag = Flag(message_id=message_id, user_id=user_id, category=category)
        session.add(flag)
    flag.comment = comment
    session.flush()
    return flag


def iter_flags(session: Session) -> Iterator[Flag]:
    yield from session.exec(select(Flag).order_by(col(Flag.id)))



def latest_comparison_for(session: Session, *, prompt_message_id: int) -> Comparison | None:
    """The newest side-by-side battle over answers to this prompt, if any."""
    query = (select(Comparison).where(Comparison.prompt_message_id == prompt_message_id)
             .order_by(col(Comparison.id).desc()))
    return session.exec(query).first()
