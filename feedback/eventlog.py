"""The live event log: every committed change to the store, appended as it happens.

`open_store(url, event_log=path)` turns it on for an engine; from then on every session on
that engine logs, so the server, the worker and the CLI all write it without knowing.
The hook lives in SQLAlchemy's session events:

* after each flush, the rows of the logged tables (`feedback.logformat.MODELS`) it
  inserted, updated or deleted become log records, in their state at that moment (the
  flush's rows by type in dependency order, then by id; deletions last);
* ORM bulk statements on the logged tables become records too: an `insert(Model)` that
  returns the ids (how imports insert), and a `delete(Model)` (its rows are looked up
  first, and each gets a deletion record);
* after the commit, the transaction's records are appended to the file, before
  `commit()` returns — so whoever learns a new row's id learns it after its record is in
  the log;
* a rollback drops them (a savepoint's rollback drops what was flushed inside it): a
  rolled-back transaction writes nothing.

The file is append-only JSON lines (`feedback.logformat`, with a header when the file is
new) and several processes may append to one file: each transaction's lines go out in one
`os.write` on an `O_APPEND` descriptor under an exclusive `flock`, so they never
interleave. It holds every conversation, so it is created 0600 (and its folder, if it
makes it, 0700). A process killed between its commit and the append loses that transaction's
records (the store keeps them; `feedback export --format log` writes the whole store). A
failed append is logged as an error and does not undo the commit. Core UPDATE statements
are not seen; the store's queries use them only for leases (and an API key's last use),
which are not logged.

An erasure (`feedback.erasure`) rewrites the file without a user's records: under the same
lock, into a temporary file renamed over it. An appender that was waiting for the lock
finds the file replaced and appends to the new one.
"""

import fcntl
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, select
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction

from feedback.logformat import KEYS, MODELS, deletion, header, to_log
from feedback.models import utcnow
from feedback.private import FILE_MODE, private_dirs

log = logging.getLogger(__name__)

OPTION = "flywheel_event_log"  # the engine execution option that holds the EventLog
PENDING = "flywheel_event_log_pending"  # session.info: (EventLog, [(transaction, record)])
TYPES = {model: kind for kind, model in MODELS.items()}
TABLES = {model.__table__.name: kind for kind, model in MODELS.items()}
RANK = {kind: rank for rank, kind in enumerate(MODELS)}


def records_from(path: Path, offset: int) -> Iterator[dict[str, Any]]:
    """The whole records of the file at `path` from byte `offset` on (no lock: appends
    are whole lines; a line still being written is left out)."""
    try:
        with open(path, "rb") as source:
            source.seek(offset)
            for raw in source:
                if raw.endswith(b"\n"):
                    try:
                        record = json.loads(raw)
                    except ValueError:
                        continue
                    if isinstance(record, dict):
                        yield record
    except FileNotFoundError:
        return


@dataclass
class RewriteReport:
    read: int = 0  # records read on the last pass
    written: int = 0
    unreadable: int = 0  # lines dropped on the last pass: not JSON objects
    size: int = 0  # bytes of the new file (what is beyond was appended after)


class EventLog:
    """An append-only JSON-lines file that many processes may append to at once, and that
    an erasure may rewrite (`rewrite`) while they do."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        body = b"".join(_line(record) for record in records)
        if not body:
            return
        private_dirs(self.path.parent)
        fd = _open_locked(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            if os.fstat(fd).st_size == 0:
                body = _line(header("events")) + body
            view = memoryview(body)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)  # and with it the lock

    def rewrite(self, edit: Callable[[Callable[[], Iterator[dict[str, Any]]]],
                                     Iterable[dict[str, Any]]]) -> RewriteReport:
        """Replace the file, atomically, with its header and the records `edit` yields.
        `edit` gets a function that reads the file's records afresh each time it is
        called (so it may read them twice: once to plan, once to edit). Appends wait
        meanwhile and then go to the new file; a crash leaves the old file whole. Lines
        that are not JSON objects (a write cut short by a crash) are dropped and counted.
        No file, nothing to do."""
        report = RewriteReport()
        try:
            fd = _open_locked(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return report
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.rewrite")
        try:
            with os.fdopen(os.dup(fd), "rb") as source:
                head = source.readline()
            out = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
            with os.fdopen(out, "wb") as target:
                target.write(head)
                for record in edit(lambda: _records(fd, report)):
                    target.write(_line(record))
                    report.written += 1
                target.flush()
                os.fsync(target.fileno())
                report.size = target.tell()
            os.replace(temp, self.path)
            _fsync_dir(self.path.parent)
        finally:
            temp.unlink(missing_ok=True)
            os.close(fd)  # appenders waiting on the old file find it replaced, and reopen
        return report


def _open_locked(path: Path, flags: int) -> int:
    """A descriptor on `path` holding its exclusive lock. A rewrite replaces the file while
    others wait for the lock: whoever then gets the old one's lock opens the new one."""
    while True:
        fd = os.open(path, flags, FILE_MODE)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _records(fd: int, report: RewriteReport) -> Iterator[dict[str, Any]]:
    """The records of the file behind `fd`, header left out, from the start."""
    report.read = report.unreadable = 0
    with os.fdopen(os.dup(fd), "rb") as source:
        source.seek(0)
        source.readline()
        for raw in source:
            try:
                record = json.loads(raw)
            except ValueError:
                record = None
            if not isinstance(record, dict):
                report.unreadable += raw.strip() != b""
                continue
            report.read += 1
            yield record


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _line(record: dict[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False).encode() + b"\n"


def attach_event_log(engine: Engine, path: str | Path) -> None:
    """Log every change committed through `engine` (and engines derived from it) to
    `path`."""
    engine.update_execution_options(**{OPTION: EventLog(path)})


def _event_log(session: Session) -> EventLog | None:
    return session.connection().get_execution_options().get(OPTION)


def _collect(session: Session, log_file: EventLog, records: list[dict[str, Any]]) -> None:
    transaction = session.get_nested_transaction() or session.get_transaction()
    _, pending = session.info.setdefault(PENDING, (log_file, []))
    pending.extend((transaction, record) for record in records)


@event.listens_for(Session, "after_flush")
def _after_flush(session: Session, _context: Any) -> None:
    changed = [row for row in (*session.new, *session.dirty) if type(row) in TYPES
               and (row in session.new or session.is_modified(row))]
    gone = [row for row in session.deleted if type(row) in TYPES]
    if not (changed or gone) or (log_file := _event_log(session)) is None:
        return
    records = sorted((to_log(TYPES[type(row)], row) for row in changed),
                     key=lambda r: (RANK[r["type"]], r[KEYS[r["type"]]]))
    now = utcnow()
    records += [deletion(kind, getattr(row, KEYS[kind]), now)
                for row in gone for kind in [TYPES[type(row)]]]
    _collect(session, log_file, records)


@event.listens_for(Session, "do_orm_execute")
def _bulk_statement(state: ORMExecuteState) -> Any:
    if not (state.is_insert or state.is_delete):
        return None
    kind = TABLES.get(getattr(state.statement.table, "name", None))
    if kind is None or (log_file := _event_log(state.session)) is None:
        return None
    model, key = MODELS[kind], KEYS[kind]
    if state.is_delete:
        where = state.statement.whereclause
        query = select(getattr(model, key)) if where is None else select(
            getattr(model, key)).where(where)
        now = utcnow()
        gone = [deletion(kind, value, now) for value in state.session.scalars(query)]
        _collect(state.session, log_file, gone)
        return None
    result = state.invoke_statement().freeze()
    if key not in result().keys():  # noqa: SIM118 (a Result, not a dict)
        log.error("an insert into %s returned no %s: its rows are missing from the event "
                  "log %s", kind, key, log_file.path)
        return result()
    rows = state.parameters if isinstance(state.parameters, list) else [state.parameters]
    added = [to_log(kind, model(**{**row, key: value}))
             for row, value in zip(rows, result().scalars(key), strict=True)]
    _collect(state.session, log_file, added)
    return result()


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    log_file, pending = session.info.pop(PENDING, (None, []))
    if not pending:
        return
    try:
        log_file.append(record for _, record in pending)
    except OSError:
        log.exception("could not append %d records to the event log %s", len(pending),
                      log_file.path)


@event.listens_for(Session, "after_transaction_end")
def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    """A session closed without committing takes its records with it."""
    if transaction.parent is None:
        session.info.pop(PENDING, None)


@event.listens_for(Session, "after_soft_rollback")
def _after_rollback(session: Session, previous: SessionTransaction) -> None:
    """Drop what the rolled-back transaction (or savepoint) and those inside it flushed."""
    log_file, pending = session.info.get(PENDING, (None, []))
    kept = [(t, r) for t, r in pending if not _inside(t, previous)]
    if kept:
        session.info[PENDING] = (log_file, kept)
    else:
        session.info.pop(PENDING, None)


def _inside(transaction: SessionTransaction | None, outer: SessionTransaction) -> bool:
    while transaction is not None:
        if transaction is outer:
            return True
        transaction = transaction.parent
    return False
