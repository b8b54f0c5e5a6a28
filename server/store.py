"""The feedback store as a FastAPI dependency: one unit of work per request, committed
before the response is sent (an acknowledged vote is on disk)."""

from collections.abc import Iterator
from typing import Annotated

from annotated_types import Interval
from fastapi import Depends, Request
from sqlmodel import Session

from feedback.db import session_scope


def get_session(request: Request) -> Iterator[Session]:
    with session_scope(request.app.state.db) as session:
        yield session


# scope="function": the commit runs when the route returns, before the response goes out.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]

# A row id as the database stores it (INTEGER: 32-bit on PostgreSQL): a larger number in a
# path or a body is refused as invalid (422) instead of overflowing the database (500).
MAX_ROW_ID = 2**31 - 1
RowId = Annotated[int, Interval(ge=1, le=MAX_ROW_ID)]
