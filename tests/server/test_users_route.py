"""Users and keys over HTTP: admin-only management, keys created, rotated, revoked (401 at
once on every replica), expired, their last use noted at most once a minute; erasure by
an admin and by users themselves, leaving nothing they typed in the data directory."""

import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from itsdangerous import TimestampSigner
from starlette.testclient import TestClient

from feedback.models import User, utcnow
from feedback.queries import adapters as registry
from feedback.queries import conversations as convs
from feedback.queries import users
from server.app import create_app
from server.auth import COOKIE, COOKIE_SALT
from tests.server.support import (
    SECRET,
    add_user,
    app_on_database,
    assert_error,
    bearer,
    db_session,
    make_settings,
)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def app(request, demo, data_dir) -> Iterator[FastAPI]:
    """The app on each database (overrides the module-wide one of conftest)."""
    with app_on_database(request, demo, data_dir) as app:
        yield app


@pytest.fixture(scope="module")
def replica(app, client, demo) -> Iterator[TestClient]:
    """A second server on the same database and data directory."""
    settings = app.state.settings
    second = create_app(make_settings(settings.data_dir, db=settings.db), model=demo)
    with TestClient(second) as replica:
        yield replica


@pytest.fixture(scope="module")
def keys(client, app) -> dict[str, str]:
    return {role: add_user(app.state.db, role=role)[1] for role in ("user", "operator", "admin")}


def _as(client: TestClient, key: str, method: str, path: str, json: dict | None = None):
    return client.request(method, path, json=json, headers=bearer(key))


def _new_user(client, keys, handle=None, **fields) -> dict:
    response = _as(client, keys["admin"], "POST", "/api/users",
                   {"handle": handle or f"u-{uuid.uuid4().hex[:8]}", **fields})
    assert response.status_code == 201, response.text
    return response.json()


ADMIN_ROUTES = [("GET", "/api/users", None), ("POST", "/api/users", {"handle": "x"}),
                ("POST", "/api/users/1/revoke", None), ("POST", "/api/users/1/rotate-key", None),
                ("DELETE", "/api/users/999999", None)]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
def test_user_and_key_management_is_for_admins_only(client, keys, method, path, body):
    anonymous = client.request(method, path, json=body)
    assert anonymous.status_code == 401
    assert_error(anonymous.json(), "authentication_error", "missing_api_key")
    for role in ("user", "operator"):
        refused = _as(client, keys[role], method, path, body)
        assert refused.status_code == 403, (role, refused.text)
        assert_error(refused.json(), "permission_error", "forbidden")


def test_an_admin_may_also_do_operators_work(client, keys):
    assert _as(client, keys["admin"], "GET", "/api/adapters").status_code == 200
    assert _as(client, keys["operator"], "GET", "/api/adapters").status_code == 200


def test_a_new_key_is_shown_once_and_works(client, keys):
    made = _new_user(client, keys, role="operator")
    assert made["api_key"].startswith("fw-") and made["user"]["has_api_key"]

    me = _as(client, made["api_key"], "GET", "/api/me").json()
    listed = _as(client, keys["admin"], "GET", "/api/users?limit=1000").json()

    assert me == {"id": made["user"]["id"], "handle": made["user"]["handle"],
                  "role": "operator"}
    assert made["api_key"] not in json.dumps(listed)
    assert made["user"]["id"] in [u["id"] for u in listed]


def test_bad_user_requests_are_refused_clearly(client, keys):
    taken = _new_user(client, keys)["user"]["handle"]
    cases = [({"handle": taken}, "already exists"), ({"handle": "no spaces"}, "handle"),
             ({"handle": "x", "role": "king"}, "role"),
             ({"handle": "x", "expires_at": "2020-01-01T00:00:00Z"}, "future"),
             ({"handle": "x", "expires_at": "2099-01-01T00:00:00"}, "timezone")]
    for body, says in cases:
        response = _as(client, keys["admin"], "POST", "/api/users", body)
        assert response.status_code == 422, body
        assert says in response.json()["error"]["message"], response.json()
    missing = _as(client, keys["admin"], "POST", "/api/users/999999/revoke")
    assert missing.status_code == 404
    assert_error(missing.json(), "not_found_error", "not_found")


def test_a_rotated_key_replaces_the_old_one_at_once(client, keys):
    made = _new_user(client, keys)
    rotated = _as(client, keys["admin"], "POST", f"/api/users/{made['user']['id']}/rotate-key")

    assert rotated.status_code == 200
    new_key = rotated.json()["api_key"]
    old = _as(client, made["api_key"], "GET", "/api/conversations")
    assert old.status_code == 401
    assert_error(old.json(), "authentication_error", "invalid_api_key")
    assert _as(client, new_key, "GET", "/api/conversations").status_code == 200


def test_a_revoked_key_gets_401_at_once_on_every_replica(client, replica, keys):
    made = _new_user(client, keys)
    key, user_id = made["api_key"], made["user"]["id"]
    assert _as(replica, key, "GET", "/api/conversations").status_code == 200

    revoked = _as(client, keys["admin"], "POST", f"/api/users/{user_id}/revoke")

    assert revoked.status_code == 200
    assert not revoked.json()["has_api_key"] and revoked.json()["api_key_revoked_at"]
    for server in (client, replica):
        response = _as(server, key, "GET", "/api/conversations")
        assert response.status_code == 401
        assert_error(response.json(), "authentication_error", "invalid_api_key")
    again = _as(client, keys["admin"], "POST", f"/api/users/{user_id}/revoke")
    assert again.status_code == 422 and "no API key" in again.json()["error"]["message"]


def test_an_expired_key_is_refused(client, app, keys):
    made = _new_user(client, keys, expires_at=(utcnow() + timedelta(days=1)).isoformat())
    assert made["user"]["api_key_expires_at"]
    assert _as(client, made["api_key"], "GET", "/api/conversations").status_code == 200
    with db_session(app) as session:
        session.get(User, made["user"]["id"]).api_key_expires_at = utcnow()

    response = _as(client, made["api_key"], "GET", "/api/conversations")

    assert response.status_code == 401
    assert_error(response.json(), "authentication_error", "expired_api_key")


def test_the_last_use_is_written_at_most_once_a_minute_and_not_logged(client, app, keys):
    made = _new_user(client, keys)
    log = app.state.settings.event_log_path
    lines = len(log.read_bytes().splitlines())

    for _ in range(3):
        _as(client, made["api_key"], "GET", "/api/conversations")
    with db_session(app) as session:
        first = session.get(User, made["user"]["id"]).api_key_last_used_at
        assert first is not None
        user = session.get(User, made["user"]["id"])
        assert not users.note_key_use(session, user=user, now=first + timedelta(seconds=59))
        assert users.note_key_use(session, user=user, now=first + timedelta(seconds=61))
    with db_session(app) as session:
        assert session.get(User, made["user"]["id"]).api_key_last_used_at \
            == first + timedelta(seconds=61)
    assert len(log.read_bytes().splitlines()) == lines  # no user record for it


def _files_holding(data_dir: Path, secret: str) -> list[str]:
    needle = secret.encode()
    return [str(p) for p in data_dir.rglob("*") if p.is_file() and needle in p.read_bytes()]


def _typed(app, user_id: int, secret: str) -> None:
    with db_session(app) as session:
        conversation = convs.create_conversation(session, user_id=user_id, title=secret)
        convs.add_message(session, conversation_id=conversation.id, role="user",
                          content=f"my secret is {secret}")


def test_an_admin_erases_a_user_and_nothing_they_typed_is_left(client, replica, app, keys):
    made = _new_user(client, keys)
    secret = f"okapi-{uuid.uuid4().hex}"
    _typed(app, made["user"]["id"], secret)
    version = f"policy-{uuid.uuid4().hex[:8]}"  # trained after they typed: on their data
    with db_session(app) as session:
        registry.register_adapter(session, version=version, base_model="demo", path="/a",
                                  sha256="0" * 64)
    data_dir = app.state.settings.data_dir
    assert _files_holding(data_dir, secret)

    erased = _as(client, keys["admin"], "DELETE", f"/api/users/{made['user']['id']}")

    assert erased.status_code == 200, erased.text
    assert erased.json()["rows"]["message"] == 1 and erased.json()["log_records_removed"] >= 3
    assert version in erased.json()["adapters"]
    shown = _as(client, keys["operator"], "GET", f"/api/adapters/{version}").json()
    assert shown["trained_on_erased_data"] is True
    assert _files_holding(data_dir, secret) == []
    for server in (client, replica):
        assert _as(server, made["api_key"], "GET", "/api/me").status_code == 401
    gone = _as(client, keys["admin"], "DELETE", f"/api/users/{made['user']['id']}")
    assert gone.status_code == 404
    assert_error(gone.json(), "not_found_error", "not_found")


def test_users_erase_themselves_and_their_session_ends(app):
    secret = f"quokka-{uuid.uuid4().hex}"
    with TestClient(app) as browser:
        me = browser.get("/api/me").json()
        _typed(app, me["id"], secret)
        assert len(browser.get("/api/conversations").json()) == 1

        erased = browser.delete("/api/me")

        assert erased.status_code == 204
        assert "Max-Age=0" in erased.headers["set-cookie"]
        assert browser.get("/api/conversations").json() == []
        assert browser.get("/api/me").json()["handle"] != me["handle"]  # a new session
    assert _files_holding(app.state.settings.data_dir, secret) == []
    with db_session(app) as session:
        assert users.get_user_by_handle(session, handle=me["handle"]) is None
    with TestClient(app) as no_session:
        assert no_session.delete("/api/me").status_code == 204  # nothing to erase


def test_a_stale_cookie_does_not_name_whoever_gets_the_erased_id(app):
    with TestClient(app) as browser:
        old = browser.get("/api/me").json()
        assert browser.delete("/api/me").status_code == 204
    with TestClient(app) as newcomer:  # on SQLite, likely the erased user's very id
        new = newcomer.get("/api/me").json()
    # What the erased user's browser holds if the id is reused: that id, signed earlier.
    signer = TimestampSigner(SECRET, salt=COOKIE_SALT, digest_method=hashlib.sha256)
    signer.get_timestamp = lambda: int(time.time()) - 5
    stale_cookie = signer.sign(str(new["id"])).decode()

    with TestClient(app, cookies={COOKIE: stale_cookie}) as stale:
        again = stale.get("/api/me").json()

    assert again["id"] != new["id"] and again["handle"] not in (old["handle"], new["handle"])
