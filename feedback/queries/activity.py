"""How much feedback has arrived: what the scheduler checks before it trains, and the
volume over time that the operator console charts."""

from datetime import UTC, datetime, timedelta

from sqlalchemy import func
from sqlmodel import Session, col, select

from feedback.errors import InvalidFeedback
from feedback.models import Comparison, Flag, Rating, Rewrite


def feedback_counts(session: Session, *, since: datetime | None = None) -> dict[str, int]:
    """Votes of each kind recorded after `since` (all of them when None); a comparison
    counts once it is decided, at the time of its verdict."""
    counts = {}
    for kind, model, stamp in (("ratings", Rating, Rating.updated_at),
                               ("comparisons", Comparison, Comparison.updated_at),
                               ("rewrites", Rewrite, Rewrite.created_at),
                               ("flags", Flag, Flag.created_at)):
        query = select(func.count()).select_from(model)
        if since is not None:
            query = query.where(col(stamp) > since)
        if model is Comparison:
            query = query.where(col(Comparison.choice).is_not(None)
                                | col(Comparison.ranking).is_not(None))
        counts[kind] = session.exec(query).one()
    return counts


VOLUME_KINDS = {  # kind -> (table, the column that dates a vote), as in `feedback_counts`
    "rating": (Rating, Rating.updated_at),
    "comparison": (Comparison, Comparison.updated_at),
    "rewrite": (Rewrite, Rewrite.created_at),
    "flag": (Flag, Flag.created_at),
}
BUCKETS = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
MAX_BUCKETS = 2000


def bucket_start(moment: datetime, bucket: str) -> datetime:
    """The start (UTC) of the hour or day that holds `moment`; naive means UTC."""
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    moment = moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if bucket == "day" else moment


def bucket_window(bucket: str, since: datetime | None, until: datetime | None, *,
                  default_buckets: dict[str, int]) -> tuple[list[datetime], datetime]:
    """The starts of the hour or day buckets (UTC) from the one holding `since` (by
    default `default_buckets[bucket]` back) to the one holding `until` (now), and the end
    of the last; at most MAX_BUCKETS of them."""
    if bucket not in BUCKETS:
        raise InvalidFeedback(f"bucket must be hour or day, not {bucket!r}")
    try:
        last = bucket_start(until or datetime.now(UTC), bucket)
        first = (bucket_start(since, bucket) if since is not None
                 else last - (default_buckets[bucket] - 1) * BUCKETS[bucket])
        end = last + BUCKETS[bucket]
    except OverflowError:
        raise InvalidFeedback("since and until must lie between the years 1 and 9999") from None
    if last < first:
        raise InvalidFeedback("since must come before until")
    count = (last - first) // BUCKETS[bucket] + 1
    if count > MAX_BUCKETS:
        raise InvalidFeedback(f"{count} {bucket}s asked for; at most {MAX_BUCKETS} at a time")
    return [first + i * BUCKETS[bucket] for i in range(count)], end


DEFAULT_BUCKETS = {"hour": 48, "day": 30}  # how far back the volume goes by default


def feedback_volume(session: Session, *, bucket: str, since: datetime | None = None,
                    until: datetime | None = None) -> list[tuple[datetime, dict[str, int]]]:
    """Votes of each kind per hour or per day (UTC) from the bucket holding `since` up to
    the one holding `until` (now; by default 48 hours or 30 days back), empty buckets
    included. Bucketed here rather than in SQL, whose date functions differ between
    SQLite and PostgreSQL."""
    starts, end = bucket_window(bucket, since, until, default_buckets=DEFAULT_BUCKETS)
    first = starts[0]
    volume = {start: dict.fromkeys(VOLUME_KINDS, 0) for start in starts}
    for kind, (model, stamp) in VOLUME_KINDS.items():
        query = select(stamp).where(col(stamp) >= first, col(stamp) < end)
        if model is Comparison:
            query = query.where(col(Comparison.choice).is_not(None)
                                | col(Comparison.ranking).is_not(None))
        for moment in session.exec(query):
            volume[bucket_start(moment, bucket)][kind] += 1
    return list(volume.items())
