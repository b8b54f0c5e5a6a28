"""Group commit: units of store work from many callers, written by one thread, the units
that queued up meanwhile in one transaction.

With many answers ending at once, each in a transaction of its own, the writers take
turns at SQLite's lock (or each holds a PostgreSQL connection) and each pays a commit. In
a busy server a transaction's few statements also wait for the interpreter lock between
one statement and the next, so every turn grows long: a chat record that takes 2 ms alone
took 15-50 ms with 16 streams generating, and the writers queued behind it. Here one
thread writes whatever is queued, in one transaction with one commit.

A unit is `fn(session) -> result`, store work only with no effect outside the session,
because it may run twice: when a unit raises, the shared transaction is rolled back and
each unit runs again in a transaction of its own, so its failure reaches only its own
caller. When the database fails (locked past its wait, no pooled connection, gone), every
unit would meet the same: each caller gets that error at once, with no retries to wait
through. A caller gets its result after the commit: what it is told is stored is on disk.
A caller that stops waiting (a cancelled task) does not take its unit back: it is written
all the same.
"""

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlmodel import Session

from feedback.db import session_scope

log = logging.getLogger(__name__)

T = TypeVar("T")
DATABASE_FAILED = (OperationalError, PoolTimeout)  # the database's fault, not a unit's
_STOP = object()  # queued by close(): write what came before, then end


class GroupCommit:
    """One writer thread for `db`, writing up to `max_batch` units a transaction."""

    def __init__(self, db: Engine, *, max_batch: int = 64):
        self.db, self.max_batch = db, max_batch
        self.transactions = 0  # committed so far
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._write_queued, name="group-commit",
                                        daemon=True)
        self._thread.start()

    async def run(self, unit: Callable[[Session], T]) -> T:
        """`unit`'s result once it is committed (or the exception it raised)."""
        return await asyncio.wrap_future(self.submit(unit))

    def submit(self, unit: Callable[[Session], T]) -> "Future[T]":
        if self._closed:
            raise RuntimeError("the group commit is closed")
        future: Future[T] = Future()
        self._queue.put((unit, future))
        return future

    def close(self) -> None:
        """Write what is queued, then stop the thread."""
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
            self._thread.join()

    # -- the writer thread -----------------------------------------------------------------

    def _write_queued(self) -> None:
        while True:
            batch, stop = [], False
            item = self._queue.get()
            while True:
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
                if len(batch) == self.max_batch:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._write(batch)
            if stop:
                return

    def _write(self, batch: list[tuple[Callable[[Session], Any], Future]]) -> None:
        # False for a caller that stopped waiting: its unit is written, its result dropped.
        waiting = [future.set_running_or_notify_cancel() for _, future in batch]
        try:
            with session_scope(self.db) as session:
                results = [unit(session) for unit, _ in batch]
        except Exception as e:
            if len(batch) == 1 or isinstance(e, DATABASE_FAILED):
                outcomes = [(None, e)] * len(batch)
            else:  # one at a time, so each failure reaches its own caller only
                log.debug("a group of %d units failed (%s); writing each alone", len(batch), e)
                outcomes = [self._write_alone(unit) for unit, _ in batch]
        else:
            self.transactions += 1
            outcomes = [(result, None) for result in results]
        for (_, future), wants, (result, error) in zip(batch, waiting, outcomes, strict=True):
            if not wants:
                continue
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)

    def _write_alone(self, unit: Callable[[Session], Any]) -> tuple[Any, Exception | None]:
        try:
            with session_scope(self.db) as session:
                result = unit(session)
        except Exception as e:
            return None, e
        self.transactions += 1
        return result, None
