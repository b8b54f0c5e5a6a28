"""Schemathesis over the OpenAPI schema, against a real server: whatever a client sends,
and whoever sends it, the server never answers with a server error (5xx). (The websocket
route is not part of the OpenAPI schema; its bad input is covered in test_chat_ws.py.)"""

import zlib
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from feedback.db import session_scope
from feedback.queries import users
from server.app import create_app
from server.auth import COOKIE, sign
from tests.server.support import add_user, app_on_database, bearer, make_settings

# Long answers are valid requests, but they would only make the run slow.
SETTINGS = {"max_new_tokens": 4}
EXAMPLES = 6  # per operation, caller and database

# Every operation is sent by each caller: no credentials; a browser's valid session cookie;
# a junk session cookie; a user's API key (with a junk cookie besides, which the key
# overrides); an operator's key (with another user's valid cookie besides).
CALLERS = ["anonymous", "browser", "junk cookie", "user", "operator"]
JUNK_COOKIES = ["\xb2.x", "1.\xe9", "9" * 5000 + ".x", "1.AAAAAA.x", "", "...", "1",
                '"quoted"; other=\xff', "1." + "A" * 4000 + ".x"]


# The schema is read at collection time (building the app loads nothing); the cases are
# sent to the real server. (`schemathesis.pytest.from_fixture` fails under pytest 9.)
schema = schemathesis.openapi.from_dict(create_app(make_settings(Path("unused"))).openapi())


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def app(request, demo, data_dir):
    """The app on each database (PostgreSQL refuses some text SQLite takes)."""
    with app_on_database(request, demo, data_dir, **SETTINGS) as app:
        yield app


@pytest.fixture(scope="module")
def credentials(app, live) -> dict[str, dict[str, str]]:
    """Each caller's headers, but the junk cookie (a different one case by case)."""
    with session_scope(app.state.db) as session:
        browser_id = users.create_user(session, handle="anon-schemathesis").id
    browser = f"{COOKIE}={sign(browser_id, app.state.settings.session_keys)}"
    user_key, operator_key = (add_user(app.state.db, role=role)[1]
                              for role in ("user", "operator"))
    return {"anonymous": {}, "browser": {"Cookie": browser}, "junk cookie": {},
            "user": bearer(user_key), "operator": {**bearer(operator_key), "Cookie": browser}}


@pytest.fixture(params=CALLERS)
def caller(request) -> str:
    return request.param


def test_the_schema_is_the_served_one(live) -> None:
    import httpx

    served = httpx.get(f"{live.url}/openapi.json", trust_env=False).json()
    assert served == schema.raw_schema


def test_the_schema_covers_every_http_route() -> None:
    operations = {(op.method.upper(), op.path) for op in
                  (result.ok() for result in schema.get_all_operations())}
    assert {("GET", "/healthz"), ("GET", "/metrics"), ("GET", "/api/me"),
            ("GET", "/v1/models"), ("POST", "/v1/chat/completions"),
            ("GET", "/api/conversations"), ("GET", "/api/conversations/{conversation_id}"),
            ("DELETE", "/api/conversations/{conversation_id}"),
            ("PUT", "/api/messages/{message_id}/rating"),
            ("POST", "/api/messages/{message_id}/rewrites"),
            ("POST", "/api/messages/{message_id}/flags"), ("POST", "/api/comparisons"),
            ("POST", "/api/comparisons/{comparison_id}/verdict")} <= operations
    assert not any(path == "/api/chat" for _, path in operations)


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_server_error(case, caller, credentials, live) -> None:
    headers = dict(credentials[caller])
    if caller in ("junk cookie", "user"):  # the same case always gets the same junk
        content = f"{case.body!r}{case.path_parameters!r}{case.query!r}".encode()
        junk = JUNK_COOKIES[zlib.crc32(content) % len(JUNK_COOKIES)]
        headers["Cookie"] = f"{COOKIE}={junk}"
    case.call_and_validate(base_url=live.url, headers=headers, checks=[not_a_server_error],
                           timeout=60)
