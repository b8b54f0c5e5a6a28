"""SQLite writers of one process queue on a lock of ours.

SQLite lets one connection write at a time. A writer that finds the database locked
polls for it, sleeping up to 100 ms between tries: with many writers the lock sits idle
between polls, and unlucky writers starve for seconds, then fail ("database is locked").
Here a connection takes a process-wide lock (one per database file) before its
transaction's first write, and gives it back when the transaction ends (commit, rollback
or close), so writers hand the database to each other at once. SQLite's busy timeout
still arbitrates between processes.
"""

import os
import sqlite3
import threading

# The statements before which Python's sqlite3 opens a transaction (then in_transaction).
WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")

_locks: dict[str, threading.Lock] = {}
_locks_lock = threading.Lock()


def connection_class(database: str, wait_s: float) -> type[sqlite3.Connection]:
    """A `sqlite3.connect(factory=…)` class whose writers queue on `database`'s lock;
    one waits up to `wait_s`, then fails as SQLite would ("database is locked")."""
    with _locks_lock:
        lock = _locks.setdefault(os.path.realpath(database), threading.Lock())

    class Cursor(sqlite3.Cursor):
        def execute(self, sql, parameters=(), /):
            self.connection.before(sql)
            return super().execute(sql, parameters)

        def executemany(self, sql, seq_of_parameters, /):
            self.connection.before(sql)
            return super().executemany(sql, seq_of_parameters)

    class Connection(sqlite3.Connection):
        holds_lock = False

        def cursor(self, factory=Cursor):
            return super().cursor(factory)

        def execute(self, sql, parameters=(), /):
            return self.cursor().execute(sql, parameters)

        def executemany(self, sql, seq_of_parameters, /):
            return self.cursor().executemany(sql, seq_of_parameters)

        def before(self, sql: str) -> None:
            if self.holds_lock or not sql.lstrip()[:7].upper().startswith(WRITES):
                return
            if not lock.acquire(timeout=wait_s):
                raise sqlite3.OperationalError("database is locked (by this process's "
                                               "other writers)")
            self.holds_lock = True

        def release(self) -> None:
            if self.holds_lock:
                self.holds_lock = False
                lock.release()

        def commit(self) -> None:
            try:
                super().commit()
            finally:
                self.release()

        def rollback(self) -> None:
            try:
                super().rollback()
            finally:
                self.release()

        def close(self) -> None:
            try:
                super().close()
            finally:
                self.release()

    return Connection
