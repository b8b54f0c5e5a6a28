"""The review queue's routes, on SQLite and on PostgreSQL: who may call them, the listing with
its filters and pages, each resolution through the API, and the errors."""

from collections.abc import Iterator

import pytest
from fastapi import FastAPI

from feedback.models import AuditEvent, Flag, Message
from feedback.queries import conversations, users, votes
from tests.server.support import add_user, app_on_database, assert_error, bearer, db_session


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def app(request, demo, data_dir) -> Iterator[FastAPI]:
    with app_on_database(request, demo, data_dir) as app:
        yield app


@pytest.fixture(scope="module")
def keys(client, app) -> dict[str, str]:
    return {"operator": add_user(app.state.db, role="operator", handle="ops-olga")[1],
            "user": add_user(app.state.db)[1]}


@pytest.fixture(scope="module")
def seeded(client, app) -> dict[str, int]:
    """Alice's chat with two answers: bob flags one, alice thumbs the other down with a
    comment and rewrites it."""
    with db_session(app) as s:
        alice = users.create_user(s, handle="alice")
        bob = users.create_user(s, handle="bob")
        chat = conversations.create_conversation(s, user_id=alice.id)
        prompt = conversations.add_message(s, conversation_id=chat.id, role="user",
                                           content="Hello?")
        good, bad = (conversations.add_message(s, conversation_id=chat.id, role="assistant",
                                               content=text, parent_id=prompt.id)
                     for text in ("Hi there.", "Get lost."))
        flag = votes.add_flag(s, message_id=bad.id, user_id=bob.id, category="harmful",
                              comment="rude")
        votes.upsert_rating(s, message_id=good.id, user_id=alice.id, thumb=-1,
                            comment="bland")
        votes.add_rewrite(s, message_id=good.id, user_id=alice.id, content="Hi! How are you?")
        return {"flag": flag.id, "bad": bad.id, "bob": bob.id}


def _get(client, keys, **params):
    return client.get("/api/review", params=params, headers=bearer(keys["operator"]))


def _post(client, keys, item_id, **body):
    return client.post(f"/api/review/{item_id}", json=body, headers=bearer(keys["operator"]))


def test_only_operators_may_call(client, keys, seeded):
    for headers in ({}, bearer(keys["user"])):
        got = client.get("/api/review", headers=headers)
        assert got.status_code in (401, 403)
        assert_error(got.json(), "authentication_error" if got.status_code == 401
                     else "permission_error")
        assert client.post("/api/review/1", json={"action": "accept"},
                           headers=headers).status_code in (401, 403)


def test_the_queue_lists_each_item_with_its_prompt_and_answer(client, keys, seeded):
    body = _get(client, keys).json()
    assert [i["kind"] for i in body["items"]] == ["flag", "thumbs_down", "rewrite"]
    flag = body["items"][0]
    assert (flag["prompt"], flag["answer"], flag["handle"], flag["status"]) == (
        "Hello?", "Get lost.", "bob", "open")
    assert flag["detail"] == {"category": "harmful", "comment": "rude", "flag_status": "open"}
    page = _get(client, keys, limit=2).json()
    rest = _get(client, keys, limit=2, cursor=page["next_cursor"]).json()
    assert [i["id"] for i in page["items"] + rest["items"]] == [i["id"] for i in body["items"]]
    assert rest["next_cursor"] is None
    assert [i["kind"] for i in _get(client, keys, kind="rewrite").json()["items"]] == ["rewrite"]


def test_resolving_records_who_and_when_and_audits(client, app, keys, seeded):
    items = {i["kind"]: i["id"] for i in _get(client, keys).json()["items"]}
    got = _post(client, keys, items["flag"], action="exclude", scope="message", note="abuse")
    assert got.status_code == 200, got.text
    item = got.json()
    assert (item["status"], item["exclude_scope"], item["decided_by"], item["note"]) == (
        "excluded", "message", "ops-olga", "abuse")
    assert item["decided_at"] and item["detail"]["flag_status"] == "resolved"
    assert _post(client, keys, items["rewrite"], action="redact").json()["status"] == "redacted"
    assert _post(client, keys, items["thumbs_down"], action="dismiss").status_code == 200
    open_items = _get(client, keys, status="open").json()["items"]
    assert open_items == []
    with db_session(app) as s:
        assert s.get(Flag, seeded["flag"]).status == "resolved"
        assert s.get(Message, seeded["bad"]).content == "Get lost."  # excluded, not redacted
        actions = [e.action for e in s.exec(AuditEvent.__table__.select()).all()]
    assert actions[-3:] == ["review_exclude", "review_redact", "review_dismiss"]
    again = _post(client, keys, items["flag"], action="accept")
    assert again.status_code == 409
    assert_error(again.json(), "conflict_error", "already_resolved")


@pytest.mark.parametrize(("body", "message"), [
    ({"action": "approve"}, "action"),
    ({"action": "exclude"}, "give a scope"),
    ({"action": "accept", "scope": "user"}, "give a scope"),
    ({"action": "exclude", "scope": "conversation"}, "scope"),
    ({"action": "accept", "user_id": 3}, "user_id goes with"),
    ({"action": "accept", "note": "x" * 2001}, "note"),
])
def test_bad_resolutions_are_refused(client, keys, seeded, body, message):
    got = _post(client, keys, 1, **body)
    assert got.status_code == 422
    assert_error(got.json(), "invalid_request_error")
    assert message in got.json()["error"]["message"]


def test_bad_queries_and_unknown_items(client, keys, seeded):
    for params in ({"status": "done"}, {"kind": "vote"}, {"cursor": "x"}, {"limit": 0}):
        got = _get(client, keys, **params)
        assert got.status_code == 422, params
        assert_error(got.json(), "invalid_request_error")
    missing = _post(client, keys, 99999, action="accept")
    assert missing.status_code == 404
    assert_error(missing.json(), "not_found_error")
    assert _post(client, keys, 2**31, action="accept").status_code == 422
