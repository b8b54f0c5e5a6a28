"""The operator's feedback browser and feedback volume, on SQLite and on PostgreSQL: every
kind of vote newest first with its prompt and answers, each filter, cursor pages that
neither skip nor repeat (ties in time included), hourly and daily volume, and the errors."""

import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI

from feedback.queries import conversations, users, votes
from tests.server.support import (
    add_user,
    app_on_database,
    assert_error,
    bearer,
    db_session,
)

T0 = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)
HOSTILE = 'Tell me <script>alert("x")</script> <img src=x onerror="alert(1)">'


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def app(request, demo, data_dir) -> Iterator[FastAPI]:
    """The app on each database (overrides the module-wide one of conftest)."""
    with app_on_database(request, demo, data_dir) as app:
        yield app


@pytest.fixture(scope="module")
def keys(client, app) -> dict[str, str]:
    return {"operator": add_user(app.state.db, role="operator")[1],
            "user": add_user(app.state.db)[1]}


@pytest.fixture(scope="module")
def seeded(client, app) -> dict[str, int]:
    """Two users' votes on a policy-v1 answer and a base-model answer to one prompt, at
    known times (the flag and the rewrite at the very same moment)."""
    with db_session(app) as s:
        alice = users.create_user(s, handle="alice")
        bob = users.create_user(s, handle="bob")
        chat = conversations.create_conversation(s, user_id=alice.id, title="t")
        prompt = conversations.add_message(s, conversation_id=chat.id, role="user",
                                           content=HOSTILE)
        v1 = conversations.add_message(s, conversation_id=chat.id, role="assistant",
                                       parent_id=prompt.id, adapter_version="policy-v1",
                                       content="<b>v1</b> answer")
        base = conversations.add_message(s, conversation_id=chat.id, role="assistant",
                                         parent_id=prompt.id, content="base answer")
        down = votes.upsert_rating(s, message_id=v1.id, user_id=alice.id, thumb=-1,
                                   reasons=["wrong"], comment="<i>nope</i>")
        up = votes.upsert_rating(s, message_id=base.id, user_id=bob.id, thumb=1)
        flag = votes.add_flag(s, message_id=v1.id, user_id=alice.id, category="harmful",
                              comment="unsafe")
        rewrite = votes.add_rewrite(s, message_id=base.id, user_id=bob.id,
                                    content="A better answer.")
        battle = votes.create_comparison(s, user_id=alice.id, prompt_message_id=prompt.id,
                                         candidate_ids=[v1.id, base.id])
        votes.record_choice(s, comparison_id=battle.id, user_id=alice.id, choice="b")
        undecided = votes.create_comparison(s, user_id=bob.id, prompt_message_id=prompt.id,
                                            candidate_ids=[base.id, v1.id])
        times = [(down, T0), (up, T0 + timedelta(hours=1)), (flag, T0 + timedelta(days=1)),
                 (rewrite, T0 + timedelta(days=1)), (battle, T0 + timedelta(days=2))]
        for vote, moment in times:
            for stamp in ("created_at", "updated_at"):
                if hasattr(vote, stamp):
                    setattr(vote, stamp, moment)
            s.add(vote)
        undecided.created_at = undecided.updated_at = T0 + timedelta(days=3)
        s.add(undecided)
        s.flush()
        return {"prompt": prompt.id, "v1": v1.id, "base": base.id, "down": down.id,
                "up": up.id, "flag": flag.id, "rewrite": rewrite.id, "battle": battle.id}


@pytest.fixture(scope="module")
def get(client, keys, seeded):
    """get(path, **params) -> response, as the operator."""
    return lambda path, **params: client.get(path, params=params,
                                             headers=bearer(keys["operator"]))


def _ids(response) -> list[tuple[str, int]]:
    assert response.status_code == 200, response.text
    return [(item["kind"], item["id"]) for item in response.json()["items"]]


def test_every_vote_newest_first_with_prompt_and_answers(get, seeded) -> None:
    body = get("/api/feedback").json()
    assert [(i["kind"], i["id"]) for i in body["items"]] == [
        ("comparison", seeded["battle"]), ("flag", seeded["flag"]),  # a tie in time: by kind
        ("rewrite", seeded["rewrite"]), ("rating", seeded["up"]), ("rating", seeded["down"])]
    assert body["next_cursor"] is None  # the undecided comparison is no vote yet
    battle, flag, rewrite, up, down = body["items"]
    assert down["prompt"] == HOSTILE and down["handle"] == "alice"
    assert down["answers"] == [{"message_id": seeded["v1"], "content": "<b>v1</b> answer",
                                "adapter_version": "policy-v1"}]
    assert down["adapter_version"] == "policy-v1"
    assert down["vote"] == {"thumb": -1, "reasons": ["wrong"], "comment": "<i>nope</i>"}
    assert datetime.fromisoformat(down["time"]) == T0
    assert up["adapter_version"] is None and up["handle"] == "bob"
    assert flag["vote"] == {"category": "harmful", "comment": "unsafe"}
    assert rewrite["vote"] == {"rewrite": "A better answer."}
    assert battle["vote"] == {"choice": "b", "ranking": None}
    assert [a["message_id"] for a in battle["answers"]] == [seeded["v1"], seeded["base"]]
    assert battle["prompt"] == HOSTILE and battle["adapter_version"] is None


@pytest.mark.parametrize(("params", "expected"), [
    ({"thumb": -1}, [("rating", "down")]),
    ({"thumb": 1, "kind": "rating"}, [("rating", "up")]),
    ({"kind": "flag"}, [("flag", "flag")]),
    ({"category": "harmful"}, [("flag", "flag")]),
    ({"category": "privacy"}, []),
    ({"kind": "rewrite"}, [("rewrite", "rewrite")]),
    ({"kind": "comparison"}, [("comparison", "battle")]),
    ({"adapter": "policy-v1"}, [("comparison", "battle"), ("flag", "flag"), ("rating", "down")]),
    ({"adapter": "base"}, [("comparison", "battle"), ("rewrite", "rewrite"), ("rating", "up")]),
    ({"adapter": "policy-v9"}, []),
    ({"user": "bob"}, [("rewrite", "rewrite"), ("rating", "up")]),
    ({"user": "alice", "adapter": "policy-v1", "kind": "rating"}, [("rating", "down")]),
])
def test_filters(get, seeded, params, expected) -> None:
    assert _ids(get("/api/feedback", **params)) == [(k, seeded[n]) for k, n in expected]


def test_cursor_pages_neither_skip_nor_repeat(get) -> None:
    everything = _ids(get("/api/feedback"))
    for limit in (1, 2, 3):
        seen, cursor = [], None
        while True:
            params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
            response = get("/api/feedback", **params)
            seen += _ids(response)
            assert len(_ids(response)) <= limit
            cursor = response.json()["next_cursor"]
            if cursor is None:
                break
        assert seen == everything, limit


def _cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@pytest.mark.parametrize(("params", "status", "code"), [
    ({"kind": "vote"}, 422, "invalid_request"),
    ({"thumb": 0}, 422, "invalid_feedback"),
    ({"thumb": "down"}, 422, "invalid_request"),
    ({"category": "rude"}, 422, "invalid_request"),
    ({"thumb": -1, "category": "harmful"}, 422, "invalid_feedback"),
    ({"thumb": -1, "kind": "flag"}, 422, "invalid_feedback"),
    ({"category": "harmful", "kind": "rating"}, 422, "invalid_feedback"),
    ({"cursor": "not-a-cursor"}, 422, "invalid_feedback"),
    # Well formed, but no cursor this server hands out: ids beyond the INTEGER columns, and
    # times whose offset puts them past the calendar's ends in UTC.
    ({"cursor": _cursor("2025-03-01T09:30:00+00:00|0|99999999999999999999")}, 422,
     "invalid_feedback"),
    ({"cursor": _cursor(f"2025-03-01T09:30:00+00:00|0|{2**31}")}, 422, "invalid_feedback"),
    ({"cursor": _cursor("2025-03-01T09:30:00+00:00|0|0")}, 422, "invalid_feedback"),
    ({"cursor": _cursor("0001-01-01T00:00:00+05:00|0|1")}, 422, "invalid_feedback"),
    ({"cursor": _cursor("9999-12-31T23:59:59-05:00|0|1")}, 422, "invalid_feedback"),
    ({"limit": 0}, 422, "invalid_request"),
    ({"limit": 1000}, 422, "invalid_request"),
    ({"user": "nobody-here"}, 404, "not_found"),
])
def test_bad_filters_are_refused_in_the_one_error_shape(get, params, status, code) -> None:
    response = get("/api/feedback", **params)
    assert response.status_code == status, response.text
    kind = "not_found_error" if status == 404 else "invalid_request_error"
    assert_error(response.json(), kind, code)


@pytest.mark.parametrize("path", ["/api/feedback", "/api/feedback/volume"])
def test_operators_only(client, keys, path) -> None:
    assert client.get(path).status_code == 401
    response = client.get(path, headers=bearer(keys["user"]))
    assert response.status_code == 403
    assert_error(response.json(), "permission_error", "forbidden")


def test_volume_per_day_and_per_hour(get) -> None:
    body = get("/api/feedback/volume", bucket="day", since=T0.isoformat(),
               until=(T0 + timedelta(days=3)).isoformat()).json()
    assert body["bucket"] == "day"
    assert body["kinds"] == ["rating", "comparison", "rewrite", "flag"]
    day = T0.replace(hour=0, minute=0)
    assert [datetime.fromisoformat(b["start"]) for b in body["buckets"]] == [
        day + timedelta(days=i) for i in range(4)]
    assert [b["counts"] for b in body["buckets"]] == [
        {"rating": 2, "comparison": 0, "rewrite": 0, "flag": 0},
        {"rating": 0, "comparison": 0, "rewrite": 1, "flag": 1},
        {"rating": 0, "comparison": 1, "rewrite": 0, "flag": 0},
        {"rating": 0, "comparison": 0, "rewrite": 0, "flag": 0}]  # undecided: no vote

    hours = get("/api/feedback/volume", bucket="hour", since=T0.isoformat(),
                until=(T0 + timedelta(hours=2)).isoformat()).json()["buckets"]
    assert [b["counts"]["rating"] for b in hours] == [1, 1, 0]
    assert datetime.fromisoformat(hours[0]["start"]) == T0.replace(minute=0)


def test_volume_defaults_to_recent_buckets(get) -> None:
    assert len(get("/api/feedback/volume").json()["buckets"]) == 30
    assert len(get("/api/feedback/volume", bucket="hour").json()["buckets"]) == 48


@pytest.mark.parametrize(("params", "code"), [
    ({"bucket": "week"}, "invalid_request"),
    ({"since": "yesterday"}, "invalid_request"),
    ({"since": T0.isoformat(), "until": (T0 - timedelta(days=2)).isoformat()},
     "invalid_feedback"),
    ({"bucket": "hour", "since": T0.isoformat(),
      "until": (T0 + timedelta(days=365)).isoformat()}, "invalid_feedback"),
    ({"until": "0001-01-02T00:00:00Z"}, "invalid_feedback"),
    ({"since": "9999-12-31T12:00:00Z", "until": "9999-12-31T13:00:00Z"}, "invalid_feedback"),
])
def test_volume_refuses_bad_windows(get, params, code) -> None:
    response = get("/api/feedback/volume", **params)
    assert response.status_code == 422, response.text
    assert_error(response.json(), "invalid_request_error", code)
