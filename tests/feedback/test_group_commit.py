"""Group commit, on SQLite and PostgreSQL: units queued while one is written go into the
store together, a failing unit fails only its own caller, nothing queued is lost."""

import asyncio
import threading

import pytest
from sqlmodel import Session, select

from feedback.db import session_scope
from feedback.group_commit import GroupCommit
from feedback.models import User
from feedback.queries import users


@pytest.fixture
def records(engine):
    records = GroupCommit(engine)
    yield records
    records.close()


def _user(handle: str):
    def unit(session: Session) -> int:
        return users.create_user(session, handle=handle).id
    return unit


def _blocking_first(records: GroupCommit) -> tuple[threading.Event, object]:
    """A first unit the writer is held in until the event is set; and its future. The
    writer is in it when this returns, so what is submitted next queues behind it."""
    entered, release = threading.Event(), threading.Event()

    def held(session: Session) -> int:
        entered.set()
        release.wait(10)
        return _user("first")(session)

    future = records.submit(held)
    assert entered.wait(10)
    return release, future


def _handles(engine) -> set[str]:
    with session_scope(engine) as session:
        return set(session.exec(select(User.handle)))


def test_units_queued_while_one_is_written_commit_together(engine, records):
    release, first = _blocking_first(records)
    queued = [records.submit(_user(f"user-{i}")) for i in range(5)]
    release.set()

    ids = [future.result(10) for future in [first, *queued]]
    assert len(set(ids)) == 6
    assert records.transactions == 2  # the first alone, the five queued behind it together
    assert _handles(engine) == {"first", *(f"user-{i}" for i in range(5))}


def test_a_failing_unit_fails_only_its_caller(engine, records):
    def failing(session: Session) -> int:
        users.create_user(session, handle="half-made")
        raise ValueError("no such thing")

    release, first = _blocking_first(records)
    before, bad, after = (records.submit(_user("before")), records.submit(failing),
                          records.submit(_user("after")))
    release.set()

    assert first.result(10) and before.result(10) and after.result(10)
    with pytest.raises(ValueError, match="no such thing"):
        bad.result(10)
    assert _handles(engine) == {"first", "before", "after"}


def test_a_database_failure_reaches_every_caller_at_once(engine, records):
    from sqlalchemy.exc import OperationalError

    runs = []

    def counted(handle: str):
        def unit(session: Session) -> int:
            runs.append(handle)
            if handle == "locked":
                raise OperationalError("INSERT", {}, Exception("database is locked"))
            return _user(handle)(session)
        return unit

    release, first = _blocking_first(records)
    queued = [records.submit(counted(h)) for h in ("before", "locked", "after")]
    release.set()

    assert first.result(10)
    for future in queued:  # no retry one by one: each would wait for the lock again
        with pytest.raises(OperationalError, match="database is locked"):
            future.result(10)
    assert runs == ["before", "locked"]
    assert _handles(engine) == {"first"}


def test_closing_writes_what_is_queued_and_refuses_more(engine):
    records = GroupCommit(engine, max_batch=2)
    release, first = _blocking_first(records)
    queued = [records.submit(_user(f"user-{i}")) for i in range(5)]
    release.set()
    records.close()

    assert all(future.done() for future in [first, *queued])
    assert len(_handles(engine)) == 6
    assert records.transactions == 4  # at most two units a transaction
    with pytest.raises(RuntimeError, match="closed"):
        records.submit(_user("late"))


def test_a_caller_that_stops_waiting_still_has_its_unit_written(engine, records):
    async def scenario() -> None:
        release, first = _blocking_first(records)
        waiting = asyncio.create_task(records.run(_user("gone")))
        await asyncio.sleep(0.05)
        waiting.cancel()
        release.set()
        await asyncio.wrap_future(first)
        assert await records.run(_user("next"))  # after the one whose caller left

    asyncio.run(scenario())
    assert _handles(engine) == {"first", "gone", "next"}
