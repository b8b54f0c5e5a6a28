"""The feedback store as FastAPI dependencies.

A route takes the engine (`Store`) and does its whole unit of work in one block of its
sync body, which FastAPI runs in one worker thread:

    with session_scope(db) as session:
        ...  # queries; committed when the block ends, before the response goes out

Opening the session, the work and the commit happen in that one thread call, so an
acknowledged vote is on disk, and no request holds a connection or SQLite's write lock
while it waits for a second thread (a yield dependency commits in its teardown, another
thread call: with every worker thread waiting on the lock or the pool, the holder could
never commit).

The votes, many small writes at once when a crowd votes, hand their unit of work to the
group commit instead (`Records`, feedback/group_commit.py) from an async body:

    stored = await records.run(unit)  # unit(session); answered once it is committed
"""

from typing import Annotated

from annotated_types import Interval
from fastapi import Depends, Request
from sqlalchemy import Engine

from feedback.group_commit import GroupCommit


async def get_store(request: Request) -> Engine:  # async: no thread for an attribute
    return request.app.state.db


async def get_records(request: Request) -> GroupCommit:
    return request.app.state.records


Store = Annotated[Engine, Depends(get_store)]
Records = Annotated[GroupCommit, Depends(get_records)]

# A row id as the database stores it (INTEGER: 32-bit on PostgreSQL): a larger number in a
# path or a body is refused as invalid (422) instead of overflowing the database (500).
MAX_ROW_ID = 2**31 - 1
RowId = Annotated[int, Interval(ge=1, le=MAX_ROW_ID)]
