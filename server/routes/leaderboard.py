"""Operator route: the leaderboard of every version that fought side-by-side battles."""

from fastapi import APIRouter, Query
from pydantic import BaseModel

from feedback.db import session_scope
from feedback.queries.leaderboard import ANCHOR_RATING, leaderboard
from server.auth import Operator
from server.store import Store

router = APIRouter(prefix="/api", tags=["operators"])


class StandingOut(BaseModel):
    version: str  # an adapter version, or "base" for the base model
    status: str | None  # the adapter's registry status; null for the base model
    rating: float  # Elo points
    low: float  # the bootstrap interval's bounds
    high: float
    battles: int
    wins: int
    losses: int
    ties: int  # ties and "both bad" verdicts


class LeaderboardOut(BaseModel):
    """Bradley–Terry ratings on the Elo scale (400 points: 10-to-1 odds), best first. The
    anchor (the base model when it fought) is fixed at `anchor_rating`, so intervals are
    relative to it; they are percentile intervals over `resamples` resamples of the
    battles, at `level`."""

    anchor: str | None
    anchor_rating: float
    battles: int
    level: float
    resamples: int
    standings: list[StandingOut]


@router.get("/leaderboard")
def get_leaderboard(_: Operator, db: Store,
                    level: float = Query(0.95, gt=0.5, lt=1.0),
                    resamples: int = Query(1000, ge=100, le=10_000),
                    seed: int = Query(0, ge=0)) -> LeaderboardOut:
    """Every version with battles, rated from all users' side-by-side verdicts."""
    with session_scope(db) as session:
        board = leaderboard(session, level=level, resamples=resamples, seed=seed)
    return LeaderboardOut(
        anchor=board.anchor, anchor_rating=ANCHOR_RATING, battles=board.battles,
        level=board.level, resamples=board.resamples,
        standings=[StandingOut.model_validate(s, from_attributes=True)
                   for s in board.standings])
