"""Operator route: the live watch — every adapter's figures per hour or day, and the
reward-hacking alarm and rollback verdict on the live adapter (`feedback.watch`)."""

from datetime import datetime
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel

from feedback.db import session_scope
from feedback.queries.watch import watch_report
from server.auth import Operator
from server.deps import SettingsDep
from server.store import Store

router = APIRouter(prefix="/api", tags=["operators"])


class FiguresOut(BaseModel):
    answers: int
    rated: int  # thumbs given on them
    thumbs_up_rate: float | None
    flag_rate: float | None  # answers flagged at least once
    mean_length: float | None  # completion tokens (words where not recorded)
    degenerate_rate: float | None  # empty or degenerate answers
    scored: int  # answers the worker scored with the current reward model
    reward_mean: float | None


class BucketOut(FiguresOut):
    start: datetime


class AdapterWatch(BaseModel):
    version: str  # an adapter version, or "base"
    totals: FiguresOut  # over the whole window
    buckets: list[BucketOut]  # every bucket of the window, in order


class VerdictOut(BaseModel):
    raised: bool
    reason: str
    p_value: float | None


class RollbackOut(VerdictOut):
    automatic: bool  # whether FLYWHEEL_AUTO_ROLLBACK acts on it


class WatchOut(BaseModel):
    bucket: str
    since: datetime
    until: datetime  # exclusive
    reward_model: str | None  # whose scores reward_mean holds
    live: str | None
    predecessor: str | None  # what a rollback would bring back, else "base"
    alarm: VerdictOut  # reward hacking
    rollback: RollbackOut
    adapters: list[AdapterWatch]


@router.get("/watch")
def get_watch(_: Operator, db: Store, settings: SettingsDep,
              bucket: Literal["hour", "day"] = "hour", since: datetime | None = None,
              until: datetime | None = None) -> WatchOut:
    """Per adapter, per hour (the last 48 by default) or day (the last 14): thumbs-up
    rate, flag rate, answer length, empty or degenerate answers and the reward model's mean
    score; the verdicts are judged on the same window."""
    with session_scope(db) as session:
        report = watch_report(session, data_dir=settings.data_dir, bucket=bucket, since=since,
                              until=until, rollback_min_votes=settings.auto_rollback_min_votes,
                              rollback_alpha=settings.auto_rollback_alpha)
    return WatchOut(
        bucket=report.bucket, since=report.since, until=report.until,
        reward_model=report.reward_model, live=report.live, predecessor=report.predecessor,
        alarm=VerdictOut(**vars(report.alarm)),
        rollback=RollbackOut(**vars(report.rollback), automatic=settings.auto_rollback),
        adapters=[AdapterWatch(version=version, totals=report.totals[version].summary(),
                               buckets=[BucketOut(start=start, **figures.summary())
                                        for start, figures in buckets])
                  for version, buckets in sorted(report.series.items())])
