"""The worker's watch job: score the answers servers served with the current reward model
(never in the request path), judge the live adapter (`feedback.watch`), and, with
`FLYWHEEL_AUTO_ROLLBACK=1`, roll it back when people like it significantly less than its
predecessor.

Scores go to `<data-dir>/watch/scores-<reward model>.jsonl` (message ids and numbers
only): a new reward model starts a file of its own, filled from the watch window's answers
on, since scores of two models do not compare. An alarm is logged, and its first sighting
on an adapter is a "reward_hacking_alarm" audit event. The rollback is the registry's, as
the CLI's and the API's, under the actor "scheduler", after the same check that the
adapter it brings back loads; an "auto_rollback" audit event records the test's figures.
"""

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine
from sqlmodel import col, select

from feedback.db import open_store, session_scope
from feedback.models import Message, MessageRole
from feedback.queries import adapters as registry
from feedback.queries.conversations import message_paths
from feedback.queries.watch import DEFAULT_BUCKETS, WatchReport, watch_report
from feedback.watch import append_scores, read_scores, scores_path
from flywheel.adapter_store import AdapterStore
from flywheel.errors import FlywheelError
from flywheel.settings import Settings
from trainer.reward import RewardModel, current_reward_model

log = logging.getLogger(__name__)

ACTOR = "scheduler"
WINDOW = timedelta(days=DEFAULT_BUCKETS["day"])  # what the job scores and judges
MAX_SCORED_PER_RUN = 2000  # answers scored in one run, oldest first; the rest next time


@dataclass(frozen=True)
class WatchOutcome:
    scored: int  # answers scored in this run
    report: WatchReport
    rolled_back_to: str | None


def score_served_answers(settings: Settings, engine: Engine, *,
                         limit: int = MAX_SCORED_PER_RUN) -> int:
    """Score the window's answers the current reward model has not scored yet (oldest
    first, at most `limit`) and append the scores. Returns how many; 0 with no reward
    model."""
    rm_dir = current_reward_model(engine, settings.data_dir)
    if rm_dir is None:
        return 0
    path = scores_path(settings.data_dir, rm_dir.name)
    done = read_scores(path)
    since = datetime.now(UTC) - WINDOW
    with session_scope(engine) as session:
        ids = [i for i in session.exec(
            select(Message.id).where(Message.role == MessageRole.assistant,
                                     col(Message.created_at) >= since)
            .order_by(col(Message.id))) if i not in done][:limit]
        paths = message_paths(session, message_ids=ids)
        threads = [[{"role": m.role, "content": m.content} for m in paths[i]]
                   for i in ids if i in paths]
        ids = [i for i in ids if i in paths]
    if not ids:
        return 0
    model = RewardModel.load(rm_dir, models_dir=settings.models_dir)
    scores = model.score([thread[:-1] for thread in threads],
                         [thread[-1]["content"] for thread in threads]).tolist()
    append_scores(path, zip(ids, scores, strict=True))
    return len(ids)


def judge_live_adapter(settings: Settings, engine: Engine) -> tuple[WatchReport, str | None]:
    """The watch report over the window (per day), and, when auto-rollback is on and its
    test says so, the rollback: returns the version brought back, else None."""
    with session_scope(engine) as session:
        report = _report(settings, session)
        if report.alarm.raised:
            log.warning("reward-hacking alarm on %s: %s", report.live, report.alarm.reason,
                        extra={"adapter": report.live})
            _audit_alarm(session, report)
    if not (settings.auto_rollback and report.rollback.raised):
        return report, None
    with session_scope(engine) as session:
        report = _report(settings, session)  # again, in the transaction that acts on it
        if not report.rollback.raised:
            return report, None
        restored = registry.rollback(session, actor=ACTOR)
        try:  # before the commit: an adapter that does not load undoes it all
            AdapterStore(settings.adapters_dir).verify(restored.version,
                                                       sha256=restored.sha256)
        except FlywheelError as e:
            log.error("auto-rollback from %s to %s refused: %s", report.live,
                      restored.version, e)
            raise
        registry.record_audit_event(
            session, actor=ACTOR, action="auto_rollback", adapter_version=report.live,
            detail={"back_to": restored.version, "reason": report.rollback.reason,
                    "p_value": report.rollback.p_value,
                    "min_votes": settings.auto_rollback_min_votes,
                    "alpha": settings.auto_rollback_alpha})
    log.warning("rolled back %s to %s: %s", report.live, restored.version,
                report.rollback.reason, extra={"adapter": restored.version})
    return report, restored.version


def _audit_alarm(session, report: WatchReport) -> None:
    """The first alarm on a live adapter becomes a "reward_hacking_alarm" audit event (in
    its trail: `flywheel adapters show`); later runs that still see it add none."""
    if any(e.action == "reward_hacking_alarm" for e in registry.list_audit_events(
            session, adapter_version=report.live)):
        return
    registry.record_audit_event(
        session, actor=ACTOR, action="reward_hacking_alarm", adapter_version=report.live,
        detail={"reason": report.alarm.reason, "p_value": report.alarm.p_value,
                "predecessor": report.predecessor, "reward_model": report.reward_model})


def _report(settings: Settings, session) -> WatchReport:
    return watch_report(session, data_dir=settings.data_dir, bucket="day",
                        rollback_min_votes=settings.auto_rollback_min_votes,
                        rollback_alpha=settings.auto_rollback_alpha)


def watch_once(settings: Settings, engine: Engine) -> WatchOutcome:
    scored = score_served_answers(settings, engine)
    report, restored = judge_live_adapter(settings, engine)
    return WatchOutcome(scored, report, restored)


def watch_job(settings: Settings) -> None:
    """The scheduler's job: `watch_once` on a store of its own; failures are logged."""
    engine = open_store(settings.db_url, event_log=settings.event_log_path)
    try:
        outcome = watch_once(settings, engine)
        log.info("watch: scored %d answers; alarm %s; rollback %s", outcome.scored,
                 outcome.report.alarm.reason, outcome.rolled_back_to or "none",
                 extra={"adapter": outcome.report.live})
    except Exception:
        log.exception("the watch job failed")
    finally:
        engine.dispose()
