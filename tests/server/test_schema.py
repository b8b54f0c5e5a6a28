"""Schemathesis over the OpenAPI schema, against a real server: whatever a client sends,
the server never answers with a server error (5xx). (The websocket route is not part of
the OpenAPI schema; its bad input is covered in test_chat_ws.py.)"""

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from server.app import create_app
from tests.server.support import add_user, app_on_database, bearer, make_settings

# Long answers are valid requests, but they would only make the run slow.
SETTINGS = {"max_new_tokens": 4}
EXAMPLES = 15


# The schema is read at collection time (building the app loads nothing); the cases are
# sent to the real server. (`schemathesis.pytest.from_fixture` fails under pytest 9.)
schema = schemathesis.openapi.from_dict(create_app(make_settings(Path("unused"))).openapi())


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def app(request, demo, data_dir):
    """The app on each database (PostgreSQL refuses some text SQLite takes)."""
    with app_on_database(request, demo, data_dir, **SETTINGS) as app:
        yield app


@pytest.fixture(scope="module")
def keys(app, live) -> dict[str, str]:
    return {role: add_user(app.state.db, role=role)[1] for role in ("user", "operator")}


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
def test_no_request_gets_a_server_error(case, keys, live) -> None:
    # Operator routes mostly get an operator; the others a key holder or a browser.
    operator_route = case.path.startswith(("/api/adapters", "/api/training-runs", "/api/feedback",
                                           "/api/annotators"))
    turn = len(repr(case.body)) + len(repr(case.path_parameters)) + len(repr(case.query))
    caller = ("operator" if turn % 3 else "user") if operator_route else (
        "user" if turn % 2 else None)
    headers = bearer(keys[caller]) if caller else None
    case.call_and_validate(base_url=live.url, headers=headers, checks=[not_a_server_error],
                           timeout=60)
