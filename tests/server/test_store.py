"""The feedback store under load, on SQLite and PostgreSQL, through a real server: many
voters at once all succeed, and a saturated database answers 503 + Retry-After, never 500."""

import asyncio
import contextlib
import sqlite3

import httpx
import pytest
from sqlalchemy.engine import make_url

from feedback.db import session_scope
from feedback.queries import conversations as convs
from tests.server.support import LiveServer, add_user, app_on_database, assert_error, bearer

VOTERS = 100  # more than a default server's threads (4 per core, at most 32)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(request, demo, data_dir):
    with app_on_database(request, demo, data_dir) as app, \
            LiveServer(app) as live:
        yield app, live


def _voters(db, count: int) -> list[tuple[dict[str, str], int]]:
    """`count` users, each with an API key and an answer of their own to vote on."""
    voters = []
    for _ in range(count):
        user_id, key = add_user(db)
        with session_scope(db) as session:
            conversation = convs.create_conversation(session, user_id=user_id)
            prompt = convs.add_message(session, conversation_id=conversation.id, role="user",
                                       content="hello")
            answer = convs.add_message(session, conversation_id=conversation.id,
                                       role="assistant", content="hi", parent_id=prompt.id)
        voters.append((bearer(key), answer.id))
    return voters


async def _vote(http: httpx.AsyncClient, headers: dict[str, str], answer: int) -> list[int]:
    path = f"/api/messages/{answer}"
    calls = [("PUT", f"{path}/rating", {"thumb": 1}),
             ("PUT", f"{path}/rating", {"thumb": -1, "reasons": ["rude"]}),
             ("POST", f"{path}/flags", {"category": "other"}),
             ("POST", f"{path}/rewrites", {"content": "hello there"}),
             ("GET", "/api/conversations", None)]
    statuses = []
    for method, url, body in calls:
        try:
            statuses.append((await http.request(method, url, json=body,
                                                headers=headers)).status_code)
        except httpx.TransportError:
            statuses.append(0)
    return statuses


@pytest.mark.slow
def test_a_hundred_voters_at_once_all_succeed(served) -> None:
    app, live = served
    voters = _voters(app.state.db, VOTERS)

    async def everyone():
        limits = httpx.Limits(max_connections=VOTERS)
        async with httpx.AsyncClient(base_url=live.url, timeout=60, limits=limits,
                                     trust_env=False) as http:
            return await asyncio.gather(*[_vote(http, h, a) for h, a in voters])

    statuses = [s for voter in asyncio.run(everyone()) for s in voter]

    failed = [s for s in statuses if s not in (200, 201)]
    assert failed == [], f"{len(failed)} of {len(statuses)} failed: {sorted(set(failed))}"


@contextlib.contextmanager
def _saturated(app):
    """Every connection the server may have, held (PostgreSQL); or SQLite's write lock."""
    db = app.state.db
    if db.dialect.name == "sqlite":
        held = sqlite3.connect(make_url(str(db.url)).database, isolation_level=None)
        held.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            held.execute("ROLLBACK")
            held.close()
        return
    pool = db.pool
    held = [db.connect() for _ in range(pool.size() + pool._max_overflow)]
    try:
        yield
    finally:
        for connection in held:
            connection.close()


@pytest.mark.slow
def test_a_saturated_database_is_503_with_retry_after(served) -> None:
    app, live = served
    (headers, answer), = _voters(app.state.db, 1)
    with httpx.Client(base_url=live.url, timeout=30, trust_env=False) as http:
        with _saturated(app):
            refused = http.put(f"/api/messages/{answer}/rating", headers=headers,
                               json={"thumb": 1})
        assert refused.status_code == 503, refused.text
        assert int(refused.headers["retry-after"]) >= 1
        assert_error(refused.json(), "overloaded_error", "database_busy")
        # The same connection is still good, and the vote goes through once the load is gone.
        again = http.put(f"/api/messages/{answer}/rating", headers=headers, json={"thumb": 1})
        assert again.status_code == 200
