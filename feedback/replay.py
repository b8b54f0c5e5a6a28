"""Rebuild a store from a flywheel log (an event log or an export), keeping its ids.

`replay_log` applies the records in order into an empty store: the first state of a row
inserts it with the log's id, a later state updates it, a deletion deletes it (and what
the database cascades with it). Every record type is replayed — feedback, adapter and
reward-model registry, training runs, audit trail, annotator quality, erasures — so the
rebuilt store answers every query as the original did, ids included; users come back
without API keys (a log never holds them). With `until`, only the records whose state began at or
before that time count (`feedback.logformat.STATE_TIME`): the store as it was then, as far
as the log tells (an event log holds every state; an export only the last one of each row).

Exclusions from training (`training_exclusion`) apply whatever `until` says: an operator's
exclusion made after the window still leaves out the votes, messages and users of the
window that it names, so a replayed training run never sees them.

A store that already holds rows is refused: merging a log into one, with new ids, is what
`feedback import` does. The whole replay is one transaction; a bad line aborts it with
`FILE:LINE: reason`. On PostgreSQL the id sequences are moved past the replayed ids.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic_core import PydanticUndefined
from sqlalchemy import Engine, delete, func, insert, select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from feedback.db import session_scope
from feedback.errors import InvalidFeedback, StoreError
from feedback.formats import FormatError, Progress, iter_lines, parse_json
from feedback.logformat import KEYS, MODELS, REFERENCES, LogRecord, from_log, is_log_header

BATCH = 500  # rows per INSERT or UPDATE
ONE_AT_A_TIME = ("adapter", "reward_model")  # a unique index: one live, one current


class ReplayFailed(InvalidFeedback):
    """A replay that was rolled back; the message reads `FILE:LINE: reason` where a line
    is to blame."""


@dataclass
class ReplayReport:
    path: str
    lines: int = 0
    rows: dict[str, int] = field(default_factory=dict)  # rows in the rebuilt store, by type
    updates: int = 0  # later states applied
    deletions: int = 0
    after_until: int = 0  # records left out by `until`

    def summary(self) -> str:
        rows = ", ".join(f"{kind}: {n}" for kind, n in self.rows.items() if n) or "no rows"
        late = f"; left out {self.after_until} records after the window" if self.after_until else ""
        return (f"replayed {self.lines} lines of {self.path}: {rows} "
                f"({self.updates} later states, {self.deletions} deletions{late})")


def replay_log(engine: Engine, path: str | Path, *, until: datetime | None = None,
               skip: Iterable[tuple[str, int]] = (),
               on_progress: Progress | None = None) -> ReplayReport:
    """Rebuild the (empty) store behind `engine` from the log at `path`. `skip` names
    (type, key) rows to leave out; `on_progress(bytes read, file size)`."""
    path = Path(path)
    report = ReplayReport(path=str(path))
    try:
        with session_scope(engine) as session:
            _refuse_a_store_with_rows(session)
            writer = _Writer(session, report)
            left_out = set(skip)
            late_exclusions: list[LogRecord] = []
            for number, raw in iter_lines(path, on_progress=on_progress):
                report.lines += 1
                try:
                    obj = parse_json(raw, first=number == 1)
                    if report.lines == 1:
                        if not is_log_header(obj):
                            raise FormatError("not a flywheel log: the first line must be its "
                                              "header ({\"format\": \"flywheel-log\", ...})")
                        continue
                    record = from_log(obj)
                    if until is not None and record.time is not None and record.time > until:
                        if record.kind == "training_exclusion":
                            late_exclusions.append(record)
                        else:
                            report.after_until += 1
                    elif (record.kind, record.key) not in left_out:
                        writer.add(record)
                except FormatError as e:
                    raise e.at(path, number) from None
            writer.flush()
            for record in late_exclusions:
                writer.add_late_exclusion(record)
            writer.flush()
            report.rows = _counts(session)
            if engine.dialect.name == "postgresql":
                _move_sequences_past_ids(session)
    except FormatError as e:
        raise ReplayFailed(str(e)) from None
    except SQLAlchemyError as e:
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        raise ReplayFailed(f"{path}: the store refused the replay: {reason}") from None
    return report


def _refuse_a_store_with_rows(session: Session) -> None:
    for kind, model in MODELS.items():
        if session.scalar(select(func.count()).select_from(model)):
            raise StoreError(f"the store already holds {kind} rows: replay rebuilds an empty "
                             "store (use `flywheel feedback import` to merge a log into it)")


def _counts(session: Session) -> dict[str, int]:
    return {kind: session.scalar(select(func.count()).select_from(model))
            for kind, model in MODELS.items()}


def _move_sequences_past_ids(session: Session) -> None:
    quote = session.get_bind().dialect.identifier_preparer.quote
    for kind, model in MODELS.items():
        if KEYS[kind] != "id":
            continue
        table = quote(model.__table__.name)
        session.exec(text(
            f"SELECT setval(pg_get_serial_sequence(:table, 'id'), "
            f"COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"),
            params={"table": table})


class _Writer:
    """Applies records in order, in batches: new rows wait to be inserted together, later
    states of stored rows to be updated together. What waits is written before a record
    that could depend on it: a deletion, a record that refers to a waiting row, an
    adapter or a reward model (one live, one current at a time)."""

    def __init__(self, session: Session, report: ReplayReport) -> None:
        self.session, self.report = session, report
        self.stored: dict[str, set[int]] = {kind: set() for kind in MODELS}
        self.inserts: dict[str, dict[int, dict[str, Any]]] = {kind: {} for kind in MODELS}
        self.updates: dict[str, dict[int, dict[str, Any]]] = {kind: {} for kind in MODELS}
        self.waiting = 0

    def add(self, record: LogRecord) -> None:
        kind, key, row, _ = record
        if row is None or kind in ONE_AT_A_TIME:
            self.flush()
        if row is None:
            if key not in self.stored[kind]:
                raise FormatError(f"deletes {kind} {key}, which is not earlier in the log")
            model = MODELS[kind]
            self.session.exec(delete(model).where(getattr(model, KEYS[kind]) == key))
            self.stored[kind].discard(key)
            self.report.deletions += 1
            return
        row = {**row, KEYS[kind]: key}
        if key in self.stored[kind]:
            self.updates[kind][key] = row
            self.report.updates += 1
        elif key in self.inserts[kind]:
            self.inserts[kind][key] = row
            self.report.updates += 1
        else:
            if self._refers_to_waiting(kind, row):
                self.flush()
            self.inserts[kind][key] = row
        self.waiting += 1
        if self.waiting >= BATCH or kind in ONE_AT_A_TIME:
            self.flush()

    def add_late_exclusion(self, record: LogRecord) -> None:
        """An exclusion made after `until`, if what it excludes is in the store (the review
        item and the operator it names are forgotten where they are not)."""
        row = dict(record.row or {})
        for name, target in REFERENCES[record.kind].items():
            if row.get(name) is not None and row[name] not in self.stored[target]:
                if name not in ("review_item_id", "actor_id"):
                    self.report.after_until += 1
                    return
                row[name] = None
        self.add(record._replace(row=row))

    def _refers_to_waiting(self, kind: str, row: dict[str, Any]) -> bool:
        for name, target in REFERENCES[kind].items():
            value = row.get(name)
            for ref in value if isinstance(value, list) else [value]:
                if ref is not None and ref in self.inserts[target]:
                    return True
        return False

    def flush(self) -> None:
        for kind, model in MODELS.items():
            if rows := list(self.inserts[kind].values()):
                self.session.execute(insert(model), [_complete(model, row) for row in rows])
                self.stored[kind].update(self.inserts[kind])
                self.inserts[kind] = {}
        for kind, model in MODELS.items():
            if rows := list(self.updates[kind].values()):
                self.session.execute(update(model), rows)
                self.updates[kind] = {}
        self.waiting = 0


def _complete(model: Any, row: dict[str, Any]) -> dict[str, Any]:
    """The row with the model's defaults for what it lacks (an older log's fields, the API
    key hash), as the store would fill them in."""
    missing = model.model_fields.keys() - row.keys()
    if not missing:
        return row
    defaults = {name: model.model_fields[name].get_default(call_default_factory=True)
                for name in missing}
    return {**row, **{k: None if v is PydanticUndefined else v for k, v in defaults.items()}}
