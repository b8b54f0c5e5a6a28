"""The live watch: per adapter and per hour or day, how people received its answers and
how the current reward model scores them; and the verdicts of `feedback.watch` on the live
adapter against its predecessor.

Figures, over the answers an adapter (or the base model, "base") served in each bucket:
`answers`; `rated` (thumbs given on them, one per voter); `thumbs_up_rate` (the share
of those that are up); `flag_rate` (answers flagged
at least once over answers); `mean_length` (completion tokens, or words where they were not
recorded); `degenerate_rate` (empty or degenerate answers, `is_empty_or_degenerate`); and
`reward_mean` (the current reward model's mean score over the answers the worker scored,
`scored` of them). An answer counts in the bucket it was served in, with the votes it got
since. Totals are over the whole window.
"""

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from feedback.models import Flag, Message, MessageRole, Rating
from feedback.queries import adapters as registry
from feedback.queries import reward_models
from feedback.queries.activity import bucket_start, bucket_window
from feedback.queries.battles import battle_record
from feedback.watch import (
    Verdict,
    is_empty_or_degenerate,
    read_scores,
    reward_hacking,
    rollback_due,
    scores_path,
)

BASE = "base"
DEFAULT_BUCKETS = {"hour": 48, "day": 14}  # how far back the watch looks by default


@dataclass
class Figures:
    answers: int = 0
    rated: int = 0
    thumbs_up: int = 0
    flagged: int = 0
    length: int = 0  # summed
    degenerate: int = 0
    scored: int = 0
    reward: float = 0.0  # summed

    def add(self, other: "Figures") -> None:
        for name in vars(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def summary(self) -> dict[str, Any]:
        share = lambda n, d: n / d if d else None  # noqa: E731
        return {"answers": self.answers, "rated": self.rated,
                "thumbs_up_rate": share(self.thumbs_up, self.rated),
                "flag_rate": share(self.flagged, self.answers),
                "mean_length": share(self.length, self.answers),
                "degenerate_rate": share(self.degenerate, self.answers),
                "scored": self.scored, "reward_mean": share(self.reward, self.scored)}


@dataclass
class WatchReport:
    bucket: str
    since: datetime
    until: datetime  # exclusive
    reward_model: str | None  # whose scores `reward_mean` holds
    series: dict[str, list[tuple[datetime, Figures]]]  # adapter → every bucket, in order
    totals: dict[str, Figures]
    live: str | None  # the live adapter, None while the base model serves alone
    predecessor: str | None  # what a rollback would bring back, else "base"
    alarm: Verdict = field(default_factory=lambda: Verdict(False, "no live adapter"))
    rollback: Verdict = field(default_factory=lambda: Verdict(False, "no live adapter"))


def watch_report(session: Session, *, data_dir: Path, bucket: str = "hour",
                 since: datetime | None = None, until: datetime | None = None,
                 rollback_min_votes: int = 50, rollback_alpha: float = 0.01) -> WatchReport:
    """Every adapter's figures per bucket (module doc), with the reward-hacking alarm and
    the rollback verdict on the live adapter (`feedback.watch`)."""
    starts, end = bucket_window(bucket, since, until, default_buckets=DEFAULT_BUCKETS)
    current = reward_models.current_reward_model(session)
    scores = read_scores(scores_path(data_dir, current.version)) if current else {}
    in_window = (Message.role == MessageRole.assistant, col(Message.created_at) >= starts[0],
                 col(Message.created_at) < end)
    thumbs: dict[int, list[int]] = {}  # message id → its thumbs (+1 / -1), one per voter
    for message_id, thumb in session.exec(select(Rating.message_id, Rating.thumb)
                                          .join(Message, col(Message.id) == Rating.message_id)
                                          .where(*in_window)):
        thumbs.setdefault(message_id, []).append(thumb)
    flagged = set(session.exec(select(Flag.message_id).distinct()
                               .join(Message, col(Message.id) == Flag.message_id)
                               .where(*in_window)).all())
    series: dict[str, dict[datetime, Figures]] = {}
    served: dict[str, list[int]] = {}
    for message_id, adapter, created, content, tokens in session.exec(
            select(Message.id, Message.adapter_version, Message.created_at, Message.content,
                   Message.completion_tokens).where(*in_window)):
        version = adapter or BASE
        buckets = series.setdefault(version, {start: Figures() for start in starts})
        served.setdefault(version, []).append(message_id)
        figures = buckets[bucket_start(created, bucket)]
        figures.answers += 1
        figures.rated += len(thumbs.get(message_id, ()))
        figures.thumbs_up += sum(t > 0 for t in thumbs.get(message_id, ()))
        figures.flagged += message_id in flagged
        figures.length += tokens if tokens is not None else len(content.split())
        figures.degenerate += is_empty_or_degenerate(content)
        if message_id in scores:
            figures.scored += 1
            figures.reward += scores[message_id]
    totals = {}
    for version, buckets in series.items():
        totals[version] = Figures()
        for figures in buckets.values():
            totals[version].add(figures)
    live = registry.live_adapter(session)
    target = registry.rollback_target(session)
    report = WatchReport(bucket, starts[0], end, current.version if current else None,
                         {v: sorted(b.items()) for v, b in series.items()}, totals,
                         live.version if live else None,
                         target.version if target else BASE if live else None)
    if live is None:
        return report
    mine, theirs = totals.get(live.version, Figures()), totals.get(report.predecessor, Figures())
    record = battle_record(session, model=live.version, opponent=target.version if target
                           else None)
    report.alarm = reward_hacking(
        scores=[scores[m] for m in served.get(live.version, []) if m in scores],
        predecessor_scores=[scores[m] for m in served.get(report.predecessor, [])
                            if m in scores],
        thumbs=(mine.thumbs_up, mine.rated), predecessor_thumbs=(theirs.thumbs_up, theirs.rated),
        battle=(record.wins, record.losses, record.ties))
    if not _promoted(session, live.version):
        report.rollback = Verdict(False, f"{live.version} was brought back by a rollback: "
                                  "it is not rolled back automatically")
    elif target is None:
        report.rollback = Verdict(False, "nothing to roll back to: the base model came before")
    else:
        report.rollback = rollback_due(
            thumbs=(mine.thumbs_up, mine.rated),
            predecessor_thumbs=(theirs.thumbs_up, theirs.rated),
            min_votes=rollback_min_votes, alpha=rollback_alpha)
    return report


def _promoted(session: Session, version: str) -> bool:
    """Whether `version` last went live by a promotion (not by a rollback)."""
    for event in registry.list_audit_events(session, adapter_version=version):
        if event.detail.get("to") == "live":
            return event.action == "promote"
    return False
