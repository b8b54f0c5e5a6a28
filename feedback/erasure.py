"""Erasing a user: everything they wrote or voted goes, from the store and the event log.

`erase_user` does, in order:

1. **the store**, in one transaction: the user's conversations with every message in them
   (and the votes anyone cast on those messages), their ratings, comparisons, rewrites and
   flags, their annotator quality, whatever else the database cascades from those (review
   items, exclusions), and the user with their key. Audit events they made keep their
   handle but lose their id. In the same transaction: an `erasure` row (who erased, how
   many rows went; nothing about the user), the mark `trained_on_erased_data` (with an
   audit event) on every reward model and adapter whose training data window reached the
   user's first contribution, or that descends from one marked, and the user's prompts
   blanked out of adapters' evaluation reports (their sample answers to read);
2. **the event log** (`feedback.eventlog`), rewritten atomically without the user's records
   — every state of every row the erasure removed, or that the database removed with
   them, and the deletions of those rows — and with their prompts blanked out of the
   evaluation reports in adapter records: the `erasure` record is all that is left;
3. **the database files**: on SQLite the WAL is checkpointed, the file vacuumed (deleted
   rows linger in free pages otherwise) and the WAL truncated; on PostgreSQL the tables
   are vacuumed (PostgreSQL's own WAL, outside the data directory, is its operators' to
   expire).

Exports written later come from the store, so they hold nothing of the user; copies made
before are the operator's to delete. A transaction of the user's that committed just before
the erasure but appends its lines only after the rewrite is caught: the lines appended
since are read once the store is compacted, and if any is the user's, the log is rewritten
again.
"""

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, delete, func, or_
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, SQLModel, col, select

from feedback.db import session_scope
from feedback.erasure_log import EventLogEraser, blank_eval_report
from feedback.eventlog import EventLog, records_from
from feedback.formats import FormatError
from feedback.logformat import parse_time, utc
from feedback.models import (
    Adapter,
    AnnotatorQuality,
    Comparison,
    Conversation,
    Erasure,
    Flag,
    Message,
    MessageRole,
    Rating,
    RewardModelVersion,
    Rewrite,
    TrainingRun,
    User,
)
from feedback.queries import adapters as adapter_registry
from feedback.queries import reward_models as reward_model_registry
from feedback.queries.users import get_user

log = logging.getLogger(__name__)

_one_at_a_time = threading.Lock()
VACUUM_TRIES = 5


@dataclass
class ErasureReport:
    erasure_id: int
    rows: dict[str, int]  # rows removed from the store, by table
    adapters: list[str] = field(default_factory=list)  # marked trained on erased data
    reward_models: list[str] = field(default_factory=list)
    log_records_removed: int | None = None  # None: no event log

    def summary(self) -> str:
        rows = ", ".join(f"{n} {table}" for table, n in self.rows.items() if n) or "no rows"
        marked = [*self.reward_models, *self.adapters]
        lines = [f"erasure {self.erasure_id}: removed {rows}"]
        if self.log_records_removed is not None:
            lines.append(f"removed {self.log_records_removed} records from the event log")
        if marked:
            lines.append(f"trained on erased data (retrain them): {', '.join(marked)}")
        return "\n".join(lines)


def erase_user(engine: Engine, *, user_id: int, actor: str,
               event_log: Path | None) -> ErasureReport:
    """Erase the user (`NotFound` if there is none) from the store, the event log at
    `event_log` and the database files. `actor`: who erased ("self", an admin's handle).
    A process erases one user at a time (each rewrites the log and compacts the store)."""
    with _one_at_a_time:
        return _erase(engine, user_id, actor, event_log)


def _erase(engine: Engine, user_id: int, actor: str, event_log: Path | None) -> ErasureReport:
    with session_scope(engine) as session:
        user = get_user(session, user_id=user_id)
        prompts = _prompts(session, user.id)
        first = _first_contribution(session, user.id)
        rows = _delete(session, user)
        erasure = Erasure(actor=actor, rows=rows)
        session.add(erasure)
        session.flush()
        report = ErasureReport(erasure.id, rows)
        _blank_eval_reports(session, prompts)
        if first is not None:
            report.reward_models, report.adapters = _mark_registry(
                session, first, erasure_id=erasure.id, actor=actor)
    if event_log is None:
        compact(engine)
        return report
    found = EventLogEraser(user_id, prompts)
    rewritten = EventLog(event_log).rewrite(found.edit)
    if rewritten.unreadable:
        log.warning("dropped %d unreadable lines of %s while erasing", rewritten.unreadable,
                    event_log)
    if found.prompts - prompts:  # prompts of conversations deleted before: gone from the
        with session_scope(engine) as session:  # store, not from the reports
            _blank_eval_reports(session, found.prompts)
    compact(engine)
    # A transaction of the user's that committed just before the erasure may append its
    # lines only after the rewrite: then the log is rewritten once more.
    if any(found.touches(record) for record in records_from(event_log, rewritten.size)):
        EventLog(event_log).rewrite(found.edit)
    report.log_records_removed = found.removed
    return report


# -- the store ---------------------------------------------------------------------------


def _conversation_ids(user_id: int):
    return select(Conversation.id).where(Conversation.user_id == user_id)


def _message_ids(user_id: int):
    return select(Message.id).where(col(Message.conversation_id).in_(_conversation_ids(user_id)))


def _prompts(session: Session, user_id: int) -> set[str]:
    """What the user asked: the texts an evaluation report may quote."""
    return set(session.scalars(select(Message.content).where(
        col(Message.conversation_id).in_(_conversation_ids(user_id)),
        Message.role == MessageRole.user)))


def _first_contribution(session: Session, user_id: int) -> datetime | None:
    """When the user's first conversation or vote began: training data windows that reach
    it saw their data."""
    firsts = [session.scalar(select(func.min(Conversation.created_at)).where(
        Conversation.user_id == user_id))]
    for model in (Rating, Comparison, Rewrite, Flag):
        firsts.append(session.scalar(select(func.min(model.created_at)).where(
            model.user_id == user_id)))
    return min((utc(moment) for moment in firsts if moment is not None), default=None)


def _delete(session: Session, user: User) -> dict[str, int]:
    """Delete the user's rows, dependents first; how many of each table went."""
    messages = _message_ids(user.id)
    statements: list[tuple[type[SQLModel], Any]] = [
        (Rating, or_(Rating.user_id == user.id, col(Rating.message_id).in_(messages))),
        (Comparison, or_(Comparison.user_id == user.id,
                         col(Comparison.prompt_message_id).in_(messages))),
        (Rewrite, or_(Rewrite.user_id == user.id, col(Rewrite.message_id).in_(messages))),
        (Flag, or_(Flag.user_id == user.id, col(Flag.message_id).in_(messages))),
        (Message, col(Message.conversation_id).in_(_conversation_ids(user.id))),
        (Conversation, Conversation.user_id == user.id),
        (AnnotatorQuality, AnnotatorQuality.user_id == user.id),
    ]
    rows = {}
    for model, where in statements:  # counted first: a cascade inside a statement
        rows[model.__tablename__] = session.scalar(  # hides rows from its rowcount
            select(func.count()).select_from(model).where(where))
        session.execute(delete(model).where(where))
    session.delete(user)
    session.flush()
    rows["user"] = 1
    return rows


def _window_end(window: dict[str, Any], fallback: datetime) -> datetime:
    until = window.get("until")
    try:
        return parse_time(until, "until") if until else fallback
    except FormatError:  # a window of another shape: when the row was made
        return fallback


def _mark_registry(session: Session, first: datetime, *, erasure_id: int,
                   actor: str) -> tuple[list[str], list[str]]:
    """Mark the reward models and adapters whose data window reached `first`, or whose
    parent (or, for an adapter, reward model) is marked. Returns the versions newly
    marked."""
    detail = {"erasure": erasure_id}
    marked_rms: set[str] = set()
    for rm in session.exec(select(RewardModelVersion).order_by(col(RewardModelVersion.id))):
        if (_window_end(rm.data_window, rm.created_at) >= first
                or rm.parent_version in marked_rms):
            marked_rms.add(rm.version)
    runs = {run.adapter_version: run.data_window for run in session.exec(
        select(TrainingRun).where(col(TrainingRun.adapter_version).is_not(None)))}
    marked_adapters: set[str] = set()
    for adapter in session.exec(select(Adapter).order_by(col(Adapter.id))):
        if (_window_end(runs.get(adapter.version, {}), adapter.created_at) >= first
                or adapter.parent_version in marked_adapters
                or adapter.reward_model_version in marked_rms):
            marked_adapters.add(adapter.version)
    new_rms = reward_model_registry.mark_trained_on_erased_data(
        session, versions=sorted(marked_rms), actor=actor, detail=detail)
    new_adapters = adapter_registry.mark_trained_on_erased_data(
        session, versions=sorted(marked_adapters), actor=actor, detail=detail)
    return new_rms, new_adapters


def _blank_eval_reports(session: Session, prompts: set[str]) -> None:
    if not prompts:
        return
    for adapter in session.exec(select(Adapter).where(col(Adapter.eval_report).is_not(None))):
        blanked = blank_eval_report(adapter.eval_report, prompts)
        if blanked is not adapter.eval_report:
            adapter.eval_report = blanked
            session.add(adapter)
    session.flush()


# -- the database files ------------------------------------------------------------------


def compact(engine: Engine) -> None:
    """Leave no deleted row's bytes in the database's files: SQLite is checkpointed,
    vacuumed and its WAL truncated; PostgreSQL's tables are vacuumed."""
    if engine.dialect.name == "sqlite":
        statements = ["PRAGMA wal_checkpoint(TRUNCATE)", "VACUUM",
                      "PRAGMA wal_checkpoint(TRUNCATE)"]
    elif engine.dialect.name == "postgresql":
        quote = engine.dialect.identifier_preparer.quote
        tables = ", ".join(quote(name) for name in SQLModel.metadata.tables)
        statements = [f"VACUUM {tables}"]
    else:
        return
    for attempt in range(VACUUM_TRIES):
        try:
            with engine.connect() as conn:
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                for statement in statements:
                    result = conn.exec_driver_sql(statement)
                    if statement.startswith("PRAGMA") and result.first()[0]:
                        raise OperationalError(statement, None, Exception("readers busy"))
            return
        except OperationalError:
            if attempt == VACUUM_TRIES - 1:
                raise
            log.warning("the database is busy; compacting it again", exc_info=True)
