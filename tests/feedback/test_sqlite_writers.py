"""SQLite writers of one process queue on one lock, held from a transaction's first write
to its end, whatever the end."""

import sqlite3
import threading
import time

import pytest
from sqlalchemy.exc import OperationalError
from sqlmodel import func, select

from feedback.db import make_engine, open_store, session_scope
from feedback.models import User
from feedback.queries import users


@pytest.fixture
def store(tmp_path):
    """A store whose writers give up after 1 s (the default is the busy timeout's 10 s)."""
    engine = open_store(f"sqlite:///{tmp_path / 'flywheel.db'}", pool_size=40, wait_s=1.0)
    yield engine
    engine.dispose()


@pytest.fixture
def patient_store(tmp_path):
    """A store with the default wait: 300 writes queue behind each other within it even on
    a loaded machine (at 1 s, 46 of them timed out once with the test suite, a closed-loop
    benchmark and a training job sharing two cores)."""
    engine = open_store(f"sqlite:///{tmp_path / 'flywheel.db'}", pool_size=40)
    yield engine
    engine.dispose()


def _count(engine) -> int:
    with session_scope(engine) as session:
        return session.exec(select(func.count()).select_from(User)).one()


def test_many_writers_at_once_all_commit(patient_store) -> None:
    store = patient_store
    failures = []

    def writer(i: int) -> None:
        for j in range(5):
            try:
                with session_scope(store) as session:
                    _count(store)  # a read first, then the write: the usual shape
                    users.create_user(session, handle=f"u{i}-{j}")
            except OperationalError as e:
                failures.append(e)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(60)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    assert _count(store) == 300


def test_a_second_writer_waits_for_the_first_then_fails_as_sqlite_would(store) -> None:
    with session_scope(store) as holder:
        users.create_user(holder, handle="first")  # holds the lock until the commit
        started = time.monotonic()
        with pytest.raises(OperationalError, match="database is locked"), \
                session_scope(store) as second:
            users.create_user(second, handle="second")
        assert time.monotonic() - started >= 1.0
        assert _count(store) == 0  # readers are not held up
    with session_scope(store) as second:
        users.create_user(second, handle="second")
    assert _count(store) == 2


INSERT = "INSERT INTO user (handle, role, created_at) VALUES (?, 'user', '2026-01-01')"


@pytest.mark.parametrize("end", ["commit", "rollback", "error", "close"])
def test_every_end_of_a_transaction_lets_the_next_writer_in(store, end) -> None:
    with session_scope(store) as session:
        users.create_user(session, handle="taken")
    connection = store.raw_connection()
    if end == "error":
        with pytest.raises(sqlite3.IntegrityError):
            connection.cursor().execute(INSERT, ("taken",))
    else:
        connection.cursor().execute(INSERT, ("mine",))
    if end == "commit":
        connection.commit()
    elif end in ("rollback", "error"):
        connection.rollback()
    connection.close()  # back to the pool, which rolls back what is left ("close")

    started = time.monotonic()
    with session_scope(store) as session:
        users.create_user(session, handle="next")
    assert time.monotonic() - started < 0.5
    assert _count(store) == (3 if end == "commit" else 2)


def test_an_in_memory_database_needs_no_queue() -> None:
    engine = make_engine("sqlite://")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT 1").scalar() == 1
    engine.dispose()
