"""How much feedback has arrived: what the scheduler checks before it trains."""

from datetime import datetime

from sqlalchemy import func
from sqlmodel import Session, col, select

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
